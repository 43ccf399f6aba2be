"""A real `mosquitto` as the remote broker of a bridge, and a tern started with
`[[bridge]]` tables, for tests/interop/test_bridge.py.

Mosquitto listens on a free loopback port chosen here (never a default port) with
anonymous access and no queue limits (its default max_queued_messages of 1000
would drop messages of a subscriber that falls behind, which is not what these
tests measure).
"""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

from ternproc import Broker, start_broker

START_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@dataclass
class Mosquitto:
    """A mosquitto process; `host` / `mqtt_port` as MqttClient expects of a broker."""

    conf: Path
    mqtt_port: int
    log: Path
    proc: Optional[subprocess.Popen] = None
    host: str = "127.0.0.1"

    def start(self) -> "Mosquitto":
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                ["mosquitto", "-c", str(self.conf)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        wait_port(self.mqtt_port)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


def mosquitto(tmp_path: Path, extra: str = "", port: Optional[int] = None) -> Mosquitto:
    """A configured (not yet started) mosquitto on a free port."""
    port = port or free_port()
    directory = tmp_path / f"mosquitto-{port}"
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        "persistence false\n"
        "max_queued_messages 0\n"
        "max_inflight_messages 0\n"
        f"{extra}"
    )
    return Mosquitto(conf=conf, mqtt_port=port, log=directory / "mosquitto.log")


def bridge_table(
    name: str,
    port: int,
    topics: list,
    protocol: str = "mqttv5",
    extra: str = "",
) -> str:
    quoted = ", ".join(toml_string(t) for t in topics)
    return (
        "[[bridge]]\n"
        f'name = "{name}"\n'
        f'addresses = ["127.0.0.1:{port}"]\n'
        f'protocol = "{protocol}"\n'
        f"topics = [{quoted}]\n"
        "reconnect_min_secs = 1\n"
        "reconnect_max_secs = 2\n"
        f"{extra}\n"
    )


def toml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def start_tern_with(tmp_path: Path, config: str, extra_env: Optional[dict] = None) -> Broker:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "tern.toml"
    path.write_text(config)
    return start_broker(tmp_path, extra_env=extra_env, args=["--config", str(path)])


def wait_log(broker: Broker, text: str, count: int = 1, timeout: float = 15.0) -> None:
    """Waits until `text` appears `count` times in the broker's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if broker.stderr_text().count(text) >= count:
            return
        time.sleep(0.05)
    pytest.fail(f"{text!r} not logged {count} time(s) within {timeout}s")
