"""Helpers for the TLS, password and ACL interop tests (test_security_*.py).

- Certificates are made at test time with `tern certs dev --out DIR` (ca.pem/.key,
  server.pem/.key for localhost, 127.0.0.1 and ::1, client.pem/.key with CN
  `device-1`); nothing secret lives in the repository.
- Each broker gets a small TOML config (`tern --config FILE`), since [[acl]] rules
  only come from files; ternproc still binds the plain listeners to port 0.
- `Security` (the `sec` fixture) starts brokers and makes clients for the plain and
  TLS listeners, and closes them all (clients first) at teardown.
- `mqtt311_connack` speaks raw MQTT 3.1.1 so a test sees the CONNACK return code on
  the wire (paho 2.x hands 3.1.1 callbacks an MQTT 5 reason code instead).
"""

from __future__ import annotations

import json
import re
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import pytest

from mqttutil import TIMEOUT, MqttClient
from stomputil import StompClient
from ternproc import Broker, clean_env, start_broker, stop_broker, tern_bin

ANSI = re.compile(r"\x1b\[[0-9;]*m")
LOCALHOST = "127.0.0.1"


# -- tern subcommands -------------------------------------------------------------------


def tern(*args: str, input: Optional[str] = None, cwd: Optional[Path] = None, timeout: float = 30):
    """Runs `tern ARGS` to completion (no TERN_* variables leak in)."""
    return subprocess.run(
        [str(tern_bin()), *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(),
        cwd=cwd,
        stdin=None if input is not None else subprocess.DEVNULL,
    )


@dataclass(frozen=True)
class Pki:
    """The files `tern certs dev --out DIR` writes."""

    dir: Path

    def __getattr__(self, name: str) -> Path:
        # ca, ca_key, server, server_key, client, client_key
        stem, _, kind = name.partition("_")
        if stem not in ("ca", "server", "client") or kind not in ("", "key"):
            raise AttributeError(name)
        return self.dir / f"{stem}.{'key' if kind else 'pem'}"


DEV_FILES = ("ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key")


def make_pki(out: Path, client_cn: Optional[str] = None) -> Pki:
    args = ["certs", "dev", "--out", str(out)]
    if client_cn:
        args += ["--client-cn", client_cn]
    result = tern(*args)
    assert result.returncode == 0, f"tern certs dev failed:\n{result.stderr}"
    for name in DEV_FILES:
        assert (out / name).is_file(), f"tern certs dev did not write {name}"
    return Pki(out)


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    """A development CA with its server and client (CN device-1) certificates."""
    return make_pki(tmp_path_factory.mktemp("pki1"))


@pytest.fixture(scope="session")
def pki2(tmp_path_factory) -> Pki:
    """A second, unrelated development CA (a certificate nobody trusts yet)."""
    return make_pki(tmp_path_factory.mktemp("pki2"))


def add_user(password_file: Path, user: str, password: str) -> None:
    """`tern passwd FILE USER` with the password on stdin (not a TTY: one line)."""
    result = tern("passwd", str(password_file), user, input=password + "\n")
    assert result.returncode == 0, f"tern passwd {user} failed:\n{result.stderr}"


# -- config files -----------------------------------------------------------------------


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(str(value))  # a TOML basic string for anything printable


def section(name: str, **values) -> str:
    lines = [f"[{name}]"] + [f"{key} = {toml_value(v)}" for key, v in values.items()]
    return "\n".join(lines) + "\n"


def tls_section(name: str, pki: Pki, **values) -> str:
    """An enabled TLS listener on a free port with `pki`'s server certificate."""
    settings = {
        "enabled": True,
        "bind": f"{LOCALHOST}:0",
        "cert_file": pki.server,
        "key_file": pki.server_key,
    }
    if values.get("client_auth", "none") != "none":
        settings["client_ca_file"] = pki.ca
    settings.update(values)
    return section(name, **settings)


def acl(**rule) -> str:
    """One [[acl]] table: acl(user="alice", allow="both", topic="a/#")."""
    lines = ["[[acl]]"] + [f"{key} = {toml_value(v)}" for key, v in rule.items()]
    return "\n".join(lines) + "\n"


def log_text(broker: Broker) -> str:
    return ANSI.sub("", broker.stderr_text())


def wait_log(broker: Broker, pattern: str, after: int = 0, timeout: float = TIMEOUT) -> re.Match:
    """Waits until the log (from character `after` on) matches `pattern`; the broker's
    own report is the only sign that it has applied a reload."""
    deadline = time.monotonic() + timeout
    rx = re.compile(pattern)
    while True:
        text = log_text(broker)
        m = rx.search(text, after)
        if m:
            return m
        assert time.monotonic() < deadline, f"no /{pattern}/ in the log after offset {after}:\n{text[after:][-4000:]}"
        time.sleep(0.02)


# -- raw MQTT 3.1.1 ---------------------------------------------------------------------


def _mqtt_str(value) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return struct.pack(">H", len(data)) + data


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt311_connect_packet(client_id: str, username=None, password=None) -> bytes:
    flags = 0x02 | (0x80 if username is not None else 0) | (0x40 if password is not None else 0)
    body = _mqtt_str("MQTT") + bytes([4, flags]) + struct.pack(">H", 60) + _mqtt_str(client_id)
    if username is not None:
        body += _mqtt_str(username)
    if password is not None:
        body += _mqtt_str(password)
    return bytes([0x10]) + _remaining_length(len(body)) + body


def _recv_exactly(sock, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def mqtt311_connack(port: int, client_id: str, username=None, password=None,
                    context: Optional[ssl.SSLContext] = None) -> int:
    """Sends an MQTT 3.1.1 CONNECT and returns the CONNACK return code byte."""
    with socket.create_connection((LOCALHOST, port), timeout=TIMEOUT) as raw:
        sock = context.wrap_socket(raw, server_hostname=LOCALHOST) if context else raw
        sock.sendall(mqtt311_connect_packet(client_id, username, password))
        connack = _recv_exactly(sock, 4)
        assert len(connack) == 4 and connack[:2] == b"\x20\x02", f"not a CONNACK: {connack!r}"
        return connack[3]


def client_context(ca: Optional[Path] = None, cert: Optional[Path] = None, key: Optional[Path] = None,
                   check_hostname: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca) if ca else None)
    ctx.check_hostname = check_hostname
    if cert:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


# -- clients ----------------------------------------------------------------------------


class SecureMqtt(MqttClient):
    """An MqttClient for any listener, optionally over TLS and with credentials;
    records PUBACK reason codes (MQTT 5) by message id."""

    def __init__(self, broker: Broker, version: str, listener: str = "mqtt", tls: Optional[dict] = None,
                 username: Optional[str] = None, password: Optional[str] = None, **kwargs):
        host, port = broker.endpoints[listener]
        super().__init__(SimpleNamespace(host=host, mqtt_port=port), version, **kwargs)
        if tls is not None:
            self.client.tls_set(**{k: str(v) for k, v in tls.items()})
        if username is not None:
            self.client.username_pw_set(username, password)
        self._pubacks: dict = {}
        self._puback_lock = threading.Lock()
        self.client.on_publish = self._on_publish

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self._puback_lock:
            entry = self._pubacks.setdefault(mid, [threading.Event(), None])
        entry[1] = int(getattr(reason_code, "value", reason_code))
        entry[0].set()

    def publish_reason(self, topic: str, payload, qos: int = 1) -> int:
        """Publishes at QoS 1/2 and returns the PUBACK/PUBREC reason code (0 for 3.1.1)."""
        info = self.publish(topic, payload, qos=qos)
        with self._puback_lock:
            entry = self._pubacks.setdefault(info.mid, [threading.Event(), None])
        assert entry[0].wait(TIMEOUT), f"no acknowledgement for {topic!r}"
        return entry[1]

    def try_connect(self) -> int:
        """Connects expecting a CONNACK either way; returns its reason code value."""
        try:
            self.connect()
        except AssertionError:
            if not self.connected.is_set():
                raise
        return int(self.connack_reason.value)


def tls_opts(pki: Pki, client_cert: bool = False, ca: Optional[Path] = None) -> dict:
    opts = {"ca_certs": ca or pki.ca}
    if client_cert:
        opts.update(certfile=pki.client, keyfile=pki.client_key)
    return opts


class Security:
    """Brokers started with a config file, and clients closed before them at teardown."""

    def __init__(self, request, tmp_path: Path):
        self.request = request
        self.tmp_path = tmp_path
        self.brokers: list = []
        self.clients: list = []

    def start(self, *sections: str, env: Optional[dict] = None) -> Broker:
        work = self.tmp_path / f"broker{len(self.brokers)}"
        work.mkdir()
        config = work / "tern.toml"
        config.write_text("\n".join([section("storage", enabled=False), *sections]))
        broker = start_broker(work, env, ["--config", str(config)])
        broker.config_path = config
        self.brokers.append(broker)
        self.request.node._tern_broker = broker
        return broker

    def mqtt(self, broker: Broker, version: str = "5.0", **kwargs) -> SecureMqtt:
        client = SecureMqtt(broker, version, **kwargs)
        self.clients.append(client)
        return client

    def stomp(self, broker: Broker, listener: str = "stomp", ssl_opts: Optional[dict] = None) -> StompClient:
        """A STOMP client (not connected yet); ssl_opts: ca_certs, cert_file, key_file."""
        host, port = broker.endpoints[listener]
        client = StompClient(SimpleNamespace(host=host, stomp_port=port))
        if ssl_opts is not None:
            client.conn.set_ssl(for_hosts=[(host, port)], **{k: str(v) for k, v in ssl_opts.items()})
        self.clients.append(client)
        return client

    def close(self) -> None:
        for client in self.clients:
            client.close()
        codes = [stop_broker(b) for b in self.brokers]
        assert all(code == 0 for code in codes), f"tern exit codes at SIGTERM: {codes}"


@pytest.fixture
def sec(request, tmp_path):
    harness = Security(request, tmp_path)
    yield harness
    harness.close()


def sighup(broker: Broker) -> None:
    broker.proc.send_signal(signal.SIGHUP)


# -- STOMP refusals ---------------------------------------------------------------------


def stomp_connect_error(client: StompClient, **headers):
    """CONNECT that the broker must answer with ERROR; returns the ERROR frame."""
    try:
        client.conn.connect(wait=True, headers=headers or None)
    except Exception:  # noqa: BLE001 - stomp.py raises ConnectFailedException after ERROR
        pass
    assert client.listener.connected_frame is None, "CONNECTED although the login should fail"
    return client.expect_error()


def stomp_refused(client: StompClient, frame: str, destination: str, **kwargs):
    """SUBSCRIBE or SEND that the broker must answer with ERROR (not the RECEIPT)."""
    receipt = client.receipt()
    if frame == "SUBSCRIBE":
        client.conn.subscribe(destination, kwargs.pop("id", "s1"), headers={"receipt": receipt})
    else:
        client.conn.send(destination, kwargs.pop("body", b"x"), headers={"receipt": receipt})
    error = client.expect_error()
    assert client.listener.receipts.empty(), f"RECEIPT for a refused {frame} to {destination}"
    return error


# -- command-line clients -------------------------------------------------------------


def mosquitto_tls_args(port: int, ca: Path, cert: Optional[Path] = None, key: Optional[Path] = None) -> list:
    args = ["-h", LOCALHOST, "-p", str(port), "--cafile", str(ca)]
    if cert:
        args += ["--cert", str(cert), "--key", str(key)]
    return args


def mosquitto_pub(port: int, topic: str, message: str, ca: Path, cert=None, key=None, qos: int = 1,
                  extra: tuple = ()) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["mosquitto_pub", *mosquitto_tls_args(port, ca, cert, key), "-t", topic, "-m", message,
         "-q", str(qos), "-d", *extra],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )


class MosquittoSub:
    """mosquitto_sub -d -v -C count: started, then waited on until its SUBACK arrives."""

    def __init__(self, port: int, topic: str, ca: Path, cert=None, key=None, count: int = 1, qos: int = 1):
        self.proc = subprocess.Popen(
            ["stdbuf", "-oL", "mosquitto_sub", *mosquitto_tls_args(port, ca, cert, key), "-t", topic, "-q", str(qos),
             "-v", "-d", "-C", str(count), "-W", "20"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
        )
        self.lines: list = []
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if "received SUBACK" in line:
                return
        self.proc.wait(5)
        raise AssertionError(f"mosquitto_sub got no SUBACK: {self.lines} {self.proc.stderr.read()}")

    def messages(self) -> list:
        """Waits for exit; returns the `topic payload` lines (not the -d debug lines)."""
        out, err = self.proc.communicate(timeout=30)
        self.lines += out.splitlines()
        assert self.proc.returncode == 0, f"mosquitto_sub exited {self.proc.returncode}: {self.lines} {err}"
        return [line for line in self.lines if not line.startswith(("Client ", "Subscribed "))]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def s_client(port: int, *args: str, data: bytes = b"") -> subprocess.CompletedProcess:
    """openssl s_client to the port. With `data` it is sent and s_client reads on
    (-ign_eof) until the server closes, so a TLS 1.3 alert sent after the client's
    Finished (e.g. certificate required) is seen."""
    extra = ["-ign_eof"] if data else []
    return subprocess.run(
        ["openssl", "s_client", "-connect", f"{LOCALHOST}:{port}", "-verify_return_error", *extra, *args],
        input=data, capture_output=True, timeout=30,
    )


def s_client_text(result: subprocess.CompletedProcess) -> str:
    return (result.stdout + result.stderr).decode(errors="replace")
