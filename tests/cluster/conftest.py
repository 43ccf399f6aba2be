"""Fixtures of the cluster tests: real `nats-server` processes (one, or a
three-server JetStream cluster on loopback) and real `tern` processes joined
to them through `[cluster]` settings given as TERN_CLUSTER__* variables, each
on its own free ports with its own data directory in the test's tmp.

The interop helpers (tests/interop: ternproc, mqttutil, stomputil) are reused
as they are. A failed test gets every node's stderr and every NATS log attached.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "interop"))
sys.path.insert(0, str(HERE))

from clusterutil import node_env  # noqa: E402
from natsproc import NatsServer, start_cluster, start_single  # noqa: E402
from ternproc import SHUTDOWN_TIMEOUT, Broker, start_broker, stop_broker  # noqa: E402


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    for name, broker in getattr(item, "_tern_nodes", {}).items():
        report.sections.append((f"tern {name} stderr ({report.when})", broker.stderr_text()[-12000:]))
    for server in getattr(item, "_nats_servers", []):
        report.sections.append((f"{server.name} log ({report.when})", server.log_text()[-4000:]))


@pytest.fixture
def nats(request, tmp_path) -> NatsServer:
    """One nats-server with JetStream on a free loopback port."""
    server = start_single(tmp_path / "nats")
    request.node._nats_servers = [server]
    yield server
    server.stop()


@pytest.fixture
def nats_cluster(request, tmp_path) -> list:
    """Three nats-servers with JetStream, routed into one cluster on loopback."""
    servers = start_cluster(tmp_path / "nats")
    request.node._nats_servers = servers
    yield servers
    for server in servers:
        server.stop()


class Nodes:
    """Starts tern nodes joined to NATS; stops them all at teardown."""

    def __init__(self, request, tmp_path: Path):
        self.request = request
        self.tmp_path = tmp_path
        self.running: dict = {}
        request.node._tern_nodes = self.running

    def start(self, name: str, nats_urls, extra_env: dict | None = None, args: list | None = None) -> Broker:
        broker = start_broker(self.tmp_path / name, extra_env=node_env(name, nats_urls, extra_env), args=args)
        broker.node = name
        self.running[name] = broker
        return broker

    def stop(self, name: str) -> int | None:
        return stop_broker(self.running[name])

    def stop_all(self) -> dict:
        return {name: stop_broker(b) for name, b in self.running.items()}


@pytest.fixture
def nodes(request, tmp_path):
    """Factory: nodes.start("tern-a", [nats.url]) -> Broker (banner seen: joined)."""
    made = Nodes(request, tmp_path)
    yield made
    started = time.monotonic()
    codes = made.stop_all()
    bad = {name: code for name, code in codes.items() if code != 0}
    assert not bad, (
        f"nodes did not exit 0 within {SHUTDOWN_TIMEOUT}s of SIGTERM: {bad} "
        f"(after {time.monotonic() - started:.1f}s)"
    )


@pytest.fixture
def mqtt():
    """Factory: mqtt(node, "5.0", **kwargs) -> a connected MqttClient, closed at teardown."""
    from mqttutil import MqttClient, unique

    made = []

    def make(broker, version: str = "5.0", **kwargs) -> MqttClient:
        kwargs.setdefault("client_id", unique("c"))
        client = MqttClient(broker, version, **kwargs)
        made.append(client)
        return client.connect()

    yield make
    for client in made:
        client.close()
