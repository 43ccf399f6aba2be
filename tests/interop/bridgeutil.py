"""A real `mosquitto` as the remote broker of a bridge, and a tern started with
`[[bridge]]` tables, for tests/interop/test_bridge.py.

Mosquitto listens on a free loopback port chosen here (never a default port) with
anonymous access and no queue limits (its default max_queued_messages of 1000
would drop messages of a subscriber that falls behind, which is not what these
tests measure).
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import pytest

from mqttutil import MqttClient, unique
from ports import free_port
from ternproc import Broker, start_broker

START_TIMEOUT = 10.0


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


def mosquitto(
    tmp_path: Path, extra: str = "", port: Optional[int] = None, persistent: bool = False
) -> Mosquitto:
    """A configured (not yet started) mosquitto on a free port; `persistent` keeps
    its sessions (and retained messages) across a stop and a start."""
    port = port or free_port()
    directory = tmp_path / f"mosquitto-{port}"
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "mosquitto.conf"
    persistence = "persistence false\n"
    if persistent:
        persistence = f"persistence true\npersistence_location {directory}/\n"
        if os.geteuid() == 0:
            # Started as root, mosquitto drops to its own user, which cannot
            # write its database into the test's directory.
            persistence += "user root\n"
    conf.write_text(
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        f"{persistence}"
        "max_queued_messages 0\n"
        "max_inflight_messages 0\n"
        f"{extra}"
    )
    return Mosquitto(conf=conf, mqtt_port=port, log=directory / "mosquitto.log")


def waiting_subscriber(remote: Mosquitto, topic: str, qos: int) -> Callable[[], MqttClient]:
    """Gives a new persistent session on the (persistent, stopped) `remote` a
    subscription to `topic`, and returns how to connect it again once the remote is
    back. Whatever the bridge forwards from the moment the remote is up is queued
    for that session, however the bridge's reconnect and the receiver race: a
    subscriber that connected only after the remote came back could miss the first
    messages, which is not what the tests measure."""
    client_id = unique("waiting")
    remote.start()
    # MQTT 3.1.1 with clean session off: a session mosquitto 2.0 keeps on disk.
    first = MqttClient(remote, "3.1.1", client_id=client_id, clean=False).connect()
    first.subscribe(topic, qos=qos)
    first.drop()
    remote.stop()

    def again() -> MqttClient:
        receiver = MqttClient(remote, "3.1.1", client_id=client_id, clean=False).connect()
        assert receiver.session_present, "the remote kept the subscriber's session"
        return receiver

    return again


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


class BridgeFlagRefuser:
    """A loopback TCP proxy in front of a broker that answers a 3.x CONNECT
    carrying the bridge flag (protocol level with its high bit, 0x84) with
    CONNACK 0x01 (unacceptable protocol version), as a broker without
    Mosquitto's convention does, and passes every other connection through."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.refused = 0
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.host, self.mqtt_port = self.listener.getsockname()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        first = conn.recv(65536)
        # Fixed header, remaining length (varint), protocol name (2 + n bytes), level.
        at = 1
        while at < len(first) and first[at] & 0x80:
            at += 1
        name_len = int.from_bytes(first[at + 1 : at + 3], "big") if len(first) > at + 3 else 0
        level_at = at + 3 + name_len
        if level_at < len(first) and first[level_at] & 0x80:
            self.refused += 1
            conn.sendall(b"\x20\x02\x00\x01")
            conn.close()
            return
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        upstream.sendall(first)
        threading.Thread(target=_pump, args=(upstream, conn), daemon=True).start()
        _pump(conn, upstream)

    def close(self) -> None:
        self.listener.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
