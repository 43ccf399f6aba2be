"""Start, stop, kill and restart real `nats-server` processes for the cluster tests.

Each server runs with JetStream (`-js`) on loopback ports picked free at start
and kept across a restart (so Tern's reconnects find it again), with its store
in the test's tmp directory. Readiness is nats-server's own "Server is ready"
log line, never a sleep.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import pytest

# Kept by the caller across restarts; never an ephemeral port (see ports.py).
from ports import free_port

READY_TIMEOUT = 15.0
NATS_BIN = shutil.which("nats-server") or "/usr/sbin/nats-server"


@dataclass
class NatsServer:
    name: str
    work_dir: Path
    port: int = field(default_factory=free_port)
    monitor_port: int = field(default_factory=free_port)
    cluster_port: Optional[int] = None
    routes: List[str] = field(default_factory=list)
    extra_config: str = ""
    proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.work_dir / f"{self.name}.log"

    def config_text(self) -> str:
        store = self.work_dir / f"{self.name}-js"
        lines = [
            f'server_name: "{self.name}"',
            'listen: "127.0.0.1:%d"' % self.port,
            "http_port: %d" % self.monitor_port,
            f'jetstream {{ store_dir: "{store}" }}',
        ]
        if self.cluster_port is not None:
            routes = ", ".join(f'"{r}"' for r in self.routes)
            lines.append(
                "cluster { name: \"tern-test\", listen: \"127.0.0.1:%d\", routes: [%s] }"
                % (self.cluster_port, routes)
            )
        if self.extra_config:
            lines.append(self.extra_config)
        return "\n".join(lines) + "\n"

    def start(self) -> "NatsServer":
        if not Path(NATS_BIN).exists():
            pytest.fail("nats-server not found (tests/run.sh installs the Debian package)")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        config = self.work_dir / f"{self.name}.conf"
        config.write_text(self.config_text())
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [NATS_BIN, "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self._wait_for_line("Server is ready", offset)
        return self

    def _wait_for_line(self, text: str, offset: int = 0, timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log_text()[offset:]:
                return
            if self.proc is not None and self.proc.poll() is not None:
                pytest.fail(f"nats-server {self.name} exited ({self.proc.returncode}):\n{self.log_text()[-4000:]}")
            time.sleep(0.02)  # polling a log file; the line is the signal
        pytest.fail(f"nats-server {self.name}: no {text!r} within {timeout}s:\n{self.log_text()[-4000:]}")

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """Graceful stop (SIGTERM), waited for."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL, as a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def restart(self) -> "NatsServer":
        self.stop()
        return self.start()


def start_single(work_dir: Path, name: str = "nats-1", extra_config: str = "") -> NatsServer:
    return NatsServer(name=name, work_dir=work_dir, extra_config=extra_config).start()


def start_cluster(work_dir: Path, size: int = 3) -> List[NatsServer]:
    """`size` JetStream servers routed to each other on loopback, started together."""
    cluster_ports = [free_port() for _ in range(size)]
    servers = []
    for i in range(size):
        routes = [f"nats-route://127.0.0.1:{p}" for j, p in enumerate(cluster_ports) if j != i]
        servers.append(
            NatsServer(
                name=f"nats-{i + 1}",
                work_dir=work_dir,
                cluster_port=cluster_ports[i],
                routes=routes,
            )
        )
    # Started one after another; a JetStream cluster is usable once it has a
    # meta leader, which the servers log.
    for server in servers:
        server.start()
    wait_for_meta_leader(servers)
    return servers


def wait_for_meta_leader(servers: List[NatsServer], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for server in servers:
            text = server.log_text()
            if "JetStream cluster new metadata leader" in text or "Self is new JetStream cluster metadata leader" in text:
                return
        time.sleep(0.05)  # polling log files; the line is the signal
    pytest.fail("the NATS cluster elected no JetStream meta leader:\n" + servers[0].log_text()[-3000:])
