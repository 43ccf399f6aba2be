"""The `tern` binary as a process: the shipped config file, `check-config`, the
start-up banner and shutdown on signals. Needs no MQTT library."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from ternproc import REPO_ROOT, clean_env, start_broker, stop_broker

CONFIG = REPO_ROOT / "config" / "tern.toml"


def check_config(binary: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(binary), "check-config", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env or clean_env(),
        stdin=subprocess.DEVNULL,
    )


def effective_settings(result: subprocess.CompletedProcess) -> dict:
    out = result.stdout
    assert out.startswith("configuration OK"), out
    return json.loads(out[out.index("{"):])


def test_shipped_config_is_valid(tern_binary):
    result = check_config(tern_binary, "--config", str(CONFIG))
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"


def test_shipped_config_mirrors_built_in_defaults(tern_binary):
    """config/tern.toml documents the defaults: loading it changes nothing."""
    with_file = effective_settings(check_config(tern_binary, "--config", str(CONFIG)))
    defaults = effective_settings(check_config(tern_binary))
    assert with_file == defaults


def test_shipped_config_documents_every_key(tern_binary):
    """Every setting appears in config/tern.toml (as a key, or commented out when unset)."""
    defaults = effective_settings(check_config(tern_binary))
    text = CONFIG.read_text()
    for section, values in defaults.items():
        if isinstance(values, list):  # an array of tables such as [[acl]], empty by default
            assert re.search(rf"^#?\s*\[\[{section}\]\]\s*$", text, re.M), f"[[{section}]] missing"
            continue
        assert re.search(rf"^\[{section}\]\s*$", text, re.M), f"[{section}] missing"
        for key in values:
            assert re.search(rf"^#?\s*{key}\s*=", text, re.M), f"{section}.{key} not in {CONFIG}"


@pytest.mark.parametrize(
    "section,line,key",
    [
        ("limits", "max_inflight = 0", "limits.max_inflight"),
        ("limits", "max_packet_size = 10", "limits.max_packet_size"),
        ("limits", "stomp_min_heartbeat_ms = 0", "limits.stomp_min_heartbeat_ms"),
        ("limits", "queue_overflow = \"drop_everything\"", "queue_overflow"),
        # STOMP has heart-beats; an MQTT keep-alive maximum there is a mistake.
        ("stomp", "max_keep_alive_secs = 60", "stomp.max_keep_alive_secs"),
        ("stomp_tls", "max_keep_alive_secs = 60", "stomp_tls.max_keep_alive_secs"),
        ("storage", "cache_size = \"lots\"", "storage.cache_size"),
        ("storage", "cache_size = \"64KiB\"", "storage.cache_size"),
        ("mqtt", "bind = \"not an address\"", "bind"),
        ("mqtt", "bnd = \"127.0.0.1:1\"", "bnd"),
    ],
)
def test_bad_value_is_refused_and_named(tern_binary, tmp_path, section, line, key):
    text = CONFIG.read_text()
    # Replace (or add) the line in its section of a copy of the shipped file.
    name = line.split("=")[0].strip()
    pattern = re.compile(rf"^#?\s*{name}\s*=.*$", re.M)
    header = re.search(rf"^\[{section}\]$", text, re.M)
    assert header, f"no [{section}] section in {CONFIG}"
    start = header.start()
    end = text.find("\n[", start + 1)
    end = len(text) if end == -1 else end
    body = text[start:end]
    body = pattern.sub(line, body, count=1) if pattern.search(body) else body.rstrip() + f"\n{line}\n"
    bad = tmp_path / "bad.toml"
    bad.write_text(text[:start] + body + text[end:])
    result = check_config(tern_binary, "--config", str(bad))
    assert result.returncode != 0, f"accepted {line!r}:\n{result.stdout}"
    assert key in result.stderr, f"error does not name {key!r}: {result.stderr!r}"


def test_env_overrides_file(tern_binary):
    env = clean_env(TERN_LIMITS__MAX_INFLIGHT="7", TERN_MQTT__BIND="127.0.0.1:1999")
    settings = effective_settings(check_config(tern_binary, "--config", str(CONFIG), env=env))
    assert settings["limits"]["max_inflight"] == 7
    assert settings["mqtt"]["bind"] == "127.0.0.1:1999"


def test_bad_env_value_is_refused(tern_binary):
    env = clean_env(TERN_LIMITS__MAX_INFLIGHT="0")
    result = check_config(tern_binary, env=env)
    assert result.returncode != 0
    assert "limits.max_inflight" in result.stderr


def test_missing_config_file_is_an_error(tern_binary, tmp_path):
    result = check_config(tern_binary, "--config", str(tmp_path / "nope.toml"))
    assert result.returncode != 0
    assert "nope.toml" in result.stderr


def test_check_config_into_a_closed_pipe_does_not_panic(tern_binary):
    # `tern check-config | head -1`: the reader may be gone before tern writes.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [str(tern_binary), "check-config"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
            env=clean_env(),
            stdin=subprocess.DEVNULL,
        )
    finally:
        os.close(write_end)
    assert "panicked" not in result.stderr, result.stderr
    assert result.returncode == 0, result.stderr


def test_banner_names_listeners_and_ports_accept(broker):
    assert broker.banner.startswith("tern "), broker.banner
    assert f"data={broker.data_dir}" in broker.banner
    assert broker.host == "127.0.0.1" and broker.mqtt_port > 0
    for name, (host, port) in broker.endpoints.items():
        with socket.create_connection((host, port), timeout=5):
            pass


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_right_after_banner_exits_cleanly(tmp_path, sig):
    """The banner says the broker is ready, so a signal sent the moment it is read
    must already get the graceful shutdown (exit 0), not the signal's default action.

    Several brokers start at once so that some are descheduled between printing the
    banner and whatever they do next, which makes an ordering bug show every run.
    """
    rounds, per_round = 4, 16
    runs = rounds * per_round
    codes: list = [None] * runs
    errors: list = []

    def run(i: int) -> None:
        try:
            b = start_broker(tmp_path / f"run{i}")
            b.proc.send_signal(sig)
            try:
                codes[i] = b.proc.wait(10)
            except subprocess.TimeoutExpired:
                b.proc.kill()
                codes[i] = "timeout"
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(f"run {i}: {e}")

    for r in range(rounds):
        threads = [
            threading.Thread(target=run, args=(i,))
            for i in range(r * per_round, (r + 1) * per_round)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        if any(c not in (0, None) for c in codes):
            break
    bad = [(i, c) for i, c in enumerate(codes) if c not in (0, None)]
    assert not bad, (
        f"{sig.name} sent right after the banner: {len(bad)} of {sum(c is not None for c in codes)} brokers did not exit 0 "
        f"(run, exit code) {bad}; a negative code is death by the signal's default action: "
        "the handler is installed only after the banner is printed"
    )


def test_sigterm_with_connected_clients_exits_cleanly(tmp_path):
    b = start_broker(tmp_path)
    socks = []
    try:
        for i in range(3):
            s = socket.create_connection((b.host, b.mqtt_port), timeout=5)
            client_id = f"idle{i}".encode()
            # MQTT 3.1.1 CONNECT, clean session, keep-alive 60.
            var = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(client_id).to_bytes(2, "big") + client_id
            s.sendall(bytes([0x10, len(var)]) + var)
            assert s.recv(4) == b"\x20\x02\x00\x00"
            socks.append(s)
        b.proc.send_signal(signal.SIGTERM)
        code = b.proc.wait(10)
        assert code == 0, f"exit code {code}\n{b.stderr_text()}"
        for s in socks:
            s.settimeout(5)
            assert s.recv(16) == b"", "connection not closed on shutdown"
    finally:
        for s in socks:
            s.close()
        if b.proc.poll() is None:
            stop_broker(b)


def test_a_taken_port_is_a_clear_start_up_error(tern_binary, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [str(tern_binary)],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=tmp_path,
            env=clean_env(
                TERN_MQTT__BIND=f"127.0.0.1:{port}",
                TERN_STOMP__BIND="127.0.0.1:0",
                TERN_STORAGE__ENABLED="false",
            ),
            stdin=subprocess.DEVNULL,
        )
    assert result.returncode != 0
    assert result.stdout == "", "no banner: nothing is listening"
    assert f"cannot listen for mqtt on 127.0.0.1:{port}" in result.stderr, result.stderr
