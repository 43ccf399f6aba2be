"""Shared fixtures for the interop tests: a real `tern` process per test.

Each test gets its own broker on ephemeral ports (TERN_MQTT__BIND / TERN_STOMP__BIND
= 127.0.0.1:0) and its own data directory, so tests never see each other's
sessions or retained messages. The broker's stderr (debug log) is attached to
the report of a failed test.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ternproc import SHUTDOWN_TIMEOUT, Broker, start_broker, stop_broker, tern_bin


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    broker = getattr(item, "_tern_broker", None)
    if broker is not None and report.failed:
        report.sections.append(
            (f"tern stderr ({report.when})", broker.stderr_text()[-20000:])
        )


@pytest.fixture
def broker(request, tmp_path) -> Broker:
    """A fresh tern broker (MQTT, and STOMP once it is wired) on 127.0.0.1 port 0."""
    b = start_broker(tmp_path)
    request.node._tern_broker = b
    yield b
    started = time.monotonic()
    code = stop_broker(b)
    elapsed = time.monotonic() - started
    hint = ""
    if code is not None and code < 0:
        hint = (
            f"; killed by signal {-code}'s default action, i.e. no handler was installed yet "
            "(see test_tern_cli.py::test_signal_right_after_banner_exits_cleanly)"
        )
    assert code == 0, (
        f"tern did not exit 0 within {SHUTDOWN_TIMEOUT}s of SIGTERM "
        f"(exit code {code}, after {elapsed:.1f}s){hint}"
    )


@pytest.fixture
def tern_binary() -> Path:
    binary = tern_bin()
    if not binary.exists():
        pytest.fail(f"tern binary not found at {binary} (build it or set TERN_BIN)")
    return binary


@pytest.fixture
def mqtt_client(broker):
    """Factory: mqtt_client("3.1.1" | "5.0", client_id=..., ...) -> MqttClient, closed at teardown."""
    from mqttutil import MqttClient

    made = []

    def make(version: str, **kwargs) -> MqttClient:
        client = MqttClient(broker, version, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()
