"""Start and stop a real `tern` process for the interop tests.

The broker binary is $TERN_BIN (default: target/debug/tern in the repository).
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
BANNER_TIMEOUT = 15.0
SHUTDOWN_TIMEOUT = 10.0
# `tern 0.1.0 listening: mqtt=127.0.0.1:PORT stomp=127.0.0.1:PORT data=./data`
ENDPOINT_RE = re.compile(r"(\w+)=([\d.]+):(\d+)")


def tern_bin() -> Path:
    path = Path(os.environ.get("TERN_BIN", REPO_ROOT / "target" / "debug" / "tern"))
    if not path.is_absolute():
        path = REPO_ROOT / path
    return path


def clean_env(**extra: str) -> dict:
    """The current environment without any TERN_* variable, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TERN_")}
    env.pop("RUST_LOG", None)
    env.update(extra)
    return env


@dataclass
class Broker:
    proc: subprocess.Popen
    banner: str
    host: str
    mqtt_port: int
    stomp_port: Optional[int]
    data_dir: Path
    stderr_path: Path
    endpoints: dict = field(default_factory=dict)

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError as e:  # pragma: no cover - diagnostics only
            return f"<cannot read {self.stderr_path}: {e}>"


def _read_banner(proc: subprocess.Popen, timeout: float) -> Optional[str]:
    lines: "queue.Queue[str]" = queue.Queue()

    def reader() -> None:
        assert proc.stdout is not None
        lines.put(proc.stdout.readline())
        # Keep draining so the broker never blocks on a full stdout pipe.
        for _ in proc.stdout:
            pass

    threading.Thread(target=reader, name="tern-stdout", daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        return None


def start_broker(
    tmp_dir: Path, extra_env: Optional[dict] = None, args: Optional[list] = None
) -> Broker:
    """Starts tern in `tmp_dir`; `args` go on its command line (e.g. ["--config", FILE])."""
    binary = tern_bin()
    if not binary.exists():
        pytest.fail(f"tern binary not found at {binary} (build it or set TERN_BIN)")
    data_dir = tmp_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    stderr_path = tmp_dir / "tern.stderr"
    env = clean_env(
        TERN_MQTT__BIND="127.0.0.1:0",
        TERN_STOMP__BIND="127.0.0.1:0",
        TERN_WEBSOCKET__BIND="127.0.0.1:0",
        TERN_HTTP__BIND="127.0.0.1:0",
        TERN_STORAGE__DATA_DIR=str(data_dir),
        TERN_LOG__LEVEL=os.environ.get("TERN_TEST_LOG", "debug"),
    )
    env.update(extra_env or {})
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(
            [str(binary), *(args or [])],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
            cwd=tmp_dir,
            text=True,
        )
    banner = _read_banner(proc, BANNER_TIMEOUT)
    if not banner:
        proc.kill()
        proc.wait(5)
        pytest.fail(
            f"tern printed no banner within {BANNER_TIMEOUT}s (exit={proc.returncode})\n"
            f"--- stderr ---\n{stderr_path.read_text(errors='replace')}"
        )
    banner = banner.strip()
    endpoints = {name: (host, int(port)) for name, host, port in ENDPOINT_RE.findall(banner)}
    if "mqtt" not in endpoints:
        proc.kill()
        pytest.fail(f"no mqtt=HOST:PORT in banner {banner!r}")
    host, mqtt_port = endpoints["mqtt"]
    stomp = endpoints.get("stomp")
    return Broker(
        proc=proc,
        banner=banner,
        host=host,
        mqtt_port=mqtt_port,
        stomp_port=stomp[1] if stomp else None,
        data_dir=data_dir,
        stderr_path=stderr_path,
        endpoints=endpoints,
    )


def stop_broker(broker: Broker) -> Optional[int]:
    """SIGTERM, then wait; returns the exit code (None if it had to be killed)."""
    if broker.proc.poll() is None:
        broker.proc.send_signal(signal.SIGTERM)
    try:
        return broker.proc.wait(SHUTDOWN_TIMEOUT)
    except subprocess.TimeoutExpired:
        broker.proc.kill()
        broker.proc.wait(5)
        return None
