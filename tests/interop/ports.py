"""Loopback ports for servers the tests start themselves (nats-server, Mosquitto).

A port from `bind(("127.0.0.1", 0))` is an ephemeral one: the kernel may give it
to any outgoing connection as its source port before the server binds it (one CI
run lost a nats-server route port so: "bind: address already in use"), or while
a server the test restarts is down. Ports below the kernel's ephemeral range are
never handed out that way; they are picked at random there, checked free, and
never picked twice in one test run.
"""

from __future__ import annotations

import random
import socket

_LOWEST = 10000
_picked: set = set()


def _ephemeral_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


_HIGHEST = _ephemeral_start() - 1


def free_port() -> int:
    """A loopback port free right now and outside the ephemeral range."""
    highest = _HIGHEST
    for _ in range(1000):
        if highest <= _LOWEST:
            break
        port = random.randint(_LOWEST, highest)
        if port in _picked:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _picked.add(port)
        return port
    # No room below the ephemeral range on this machine: any free port.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
