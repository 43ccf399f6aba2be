"""What running Tern as a system service relies on, checked on the `tern` binary:
`--version` names the commit, the man page and shell completions come from the
CLI, systemd notifications (Type=notify: READY, RELOADING, STOPPING on
NOTIFY_SOCKET, as systemd reads them) and log lines fit for the journal.
The Debian package itself is tested by tests/package/test_deb.sh."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from ternproc import REPO_ROOT, clean_env, start_broker, stop_broker

NOTIFY_TIMEOUT = 10.0


def run_tern(binary: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(binary), *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
    )


def test_version_names_the_git_commit(tern_binary):
    result = run_tern(tern_binary, "--version")
    assert result.returncode == 0, result.stderr
    found = re.fullmatch(r"tern \d+\.\d+\.\d+ \(commit ([0-9a-f]{12}|unknown)\)\n", result.stdout)
    assert found, f"unexpected --version output {result.stdout!r}"
    commit = found.group(1)
    if (REPO_ROOT / ".git").exists():
        # Built in this checkout: the commit is one of its commits (not
        # necessarily HEAD, if the binary predates the last commit).
        assert commit != "unknown", "built in a git checkout, yet the commit is unknown"
        known = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "cat-file", "-e", f"{commit}^{{commit}}"],
            capture_output=True,
            timeout=30,
        )
        assert known.returncode == 0, f"{commit} is no commit of {REPO_ROOT}"


@pytest.mark.parametrize(
    "shell, marker",
    [("bash", "_tern()"), ("zsh", "#compdef tern"), ("fish", "complete -c tern")],
)
def test_completions_cover_the_subcommands(tern_binary, shell, marker):
    result = run_tern(tern_binary, "completions", shell)
    assert result.returncode == 0, result.stderr
    assert marker in result.stdout
    for subcommand in ["serve", "check-config", "passwd", "certs", "manpage"]:
        assert subcommand in result.stdout, f"{shell} completions lack {subcommand}"


def test_unknown_shell_is_refused(tern_binary):
    result = run_tern(tern_binary, "completions", "cmd.exe")
    assert result.returncode != 0
    assert "cmd.exe" in result.stderr


def test_manpage_is_roff_from_the_cli(tern_binary):
    result = run_tern(tern_binary, "manpage")
    assert result.returncode == 0, result.stderr
    page = result.stdout
    assert re.search(r"^\.TH tern 1 ", page, re.MULTILINE), page[:400]
    for text in [r"\-\-config", "check\\-config", "passwd", "/etc/tern/tern.toml", "SIGHUP"]:
        assert text in page, f"man page lacks {text!r}"


class NotifySocket:
    """The socket systemd listens on for a Type=notify service (NOTIFY_SOCKET)."""

    def __init__(self) -> None:
        # Short path: AF_UNIX paths are limited to 108 bytes.
        self.dir = tempfile.TemporaryDirectory(prefix="tern-notify-")
        self.path = str(Path(self.dir.name) / "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)

    def next(self) -> dict:
        """The next notification as {VARIABLE: value}; fails after NOTIFY_TIMEOUT."""
        self.sock.settimeout(NOTIFY_TIMEOUT)
        try:
            data = self.sock.recv(4096).decode()
        except socket.timeout:
            pytest.fail(f"no notification within {NOTIFY_TIMEOUT}s")
        return dict(line.split("=", 1) for line in data.splitlines() if line)

    def close(self) -> None:
        self.sock.close()
        self.dir.cleanup()


@pytest.fixture
def notify_socket():
    sock = NotifySocket()
    yield sock
    sock.close()


def test_tells_systemd_ready_reloading_and_stopping(tmp_path, notify_socket):
    b = start_broker(tmp_path, extra_env={"NOTIFY_SOCKET": notify_socket.path})
    try:
        ready = notify_socket.next()
        assert ready.get("READY") == "1", ready
        assert "mqtt=" in ready.get("STATUS", ""), ready
        # Ready means every listener is bound.
        for name, (host, port) in b.endpoints.items():
            with socket.create_connection((host, port), timeout=5):
                pass

        b.proc.send_signal(signal.SIGHUP)
        reloading = notify_socket.next()
        assert reloading.get("RELOADING") == "1", reloading
        # systemd matches a reload by its start time on CLOCK_MONOTONIC (microseconds).
        usec = int(reloading.get("MONOTONIC_USEC", "0"))
        assert abs(usec - time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000) < 60_000_000
        assert notify_socket.next().get("READY") == "1"

        b.proc.send_signal(signal.SIGTERM)
        assert notify_socket.next().get("STOPPING") == "1"
        assert b.proc.wait(10) == 0
    finally:
        if b.proc.poll() is None:
            stop_broker(b)


LOG_LINE_WITH_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")


def log_lines(b) -> list:
    lines = [line for line in b.stderr_text().splitlines() if line.strip()]
    assert lines, "no log lines"
    return lines


def test_log_lines_for_the_journal_have_no_timestamps(tmp_path):
    # systemd sets JOURNAL_STREAM when stderr goes to the journal, which stamps lines itself.
    b = start_broker(tmp_path, extra_env={"JOURNAL_STREAM": "8:12345"})
    assert stop_broker(b) == 0
    lines = log_lines(b)
    assert not any(LOG_LINE_WITH_TIME.match(line) for line in lines), lines[:3]
    assert not any("\x1b[" in line for line in lines), "colour codes in the journal"
    assert any("store loaded" in line for line in lines), lines[:5]


def test_log_lines_elsewhere_have_timestamps_and_no_colours_off_a_terminal(tmp_path):
    b = start_broker(tmp_path)
    assert stop_broker(b) == 0
    lines = log_lines(b)
    assert all(LOG_LINE_WITH_TIME.match(line) for line in lines), lines[:3]
    assert not any("\x1b[" in line for line in lines), "colour codes in a file"


def test_packaged_config_is_valid_loopback_and_keeps_data_in_var_lib(tern_binary):
    """dist/etc/tern/tern.toml, the package's /etc/tern/tern.toml."""
    import json

    config = REPO_ROOT / "dist" / "etc" / "tern" / "tern.toml"
    result = run_tern(tern_binary, "check-config", "--config", str(config))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    settings = json.loads(out[out.index("{"):])
    assert settings["storage"]["data_dir"] == "/var/lib/tern"
    for section in ["mqtt", "stomp", "websocket", "http"]:
        assert settings[section]["bind"].startswith("127.0.0.1:"), (section, settings[section])
    # The lines that open the broker are there, commented.
    text = config.read_text()
    for bind in ["0.0.0.0:1883", "0.0.0.0:61613", "0.0.0.0:8080"]:
        assert f'# bind = "{bind}"' in text
