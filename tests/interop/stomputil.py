"""A thin, synchronous-looking wrapper around stomp.py for the interop tests.

Every wait is on a queue or event filled by a stomp.py listener callback
(CONNECTED, RECEIPT, MESSAGE, ERROR, disconnect) with a timeout.
"""

from __future__ import annotations

import itertools
import queue
import threading
from typing import Optional

import pytest
import stomp

TIMEOUT = 10.0
# How long to listen when proving that something does NOT arrive.
QUIET = 0.5

CONNECTIONS = {"1.0": stomp.Connection10, "1.1": stomp.Connection11, "1.2": stomp.Connection12}
_receipts = itertools.count(1)


class Collector(stomp.ConnectionListener):
    """Turns stomp.py callbacks into queues and events."""

    def __init__(self) -> None:
        self.messages: "queue.Queue" = queue.Queue()
        self.errors: "queue.Queue" = queue.Queue()
        self.receipts: "queue.Queue[str]" = queue.Queue()
        self.heartbeats = 0
        self.heartbeat_timeouts = 0
        self.connected_frame = None
        self.disconnected = threading.Event()

    def on_connected(self, frame):
        self.connected_frame = frame

    def on_message(self, frame):
        self.messages.put(frame)

    def on_error(self, frame):
        self.errors.put(frame)

    def on_receipt(self, frame):
        self.receipts.put(frame.headers.get("receipt-id"))

    def on_heartbeat(self):
        self.heartbeats += 1

    def on_heartbeat_timeout(self):
        self.heartbeat_timeouts += 1

    def on_disconnected(self):
        self.disconnected.set()


class StompClient:
    """One stomp.py connection with its callbacks turned into waits."""

    def __init__(self, broker, version: str = "1.2", heartbeats=(0, 0)):
        kwargs = {"auto_decode": False, "reconnect_attempts_max": 1}
        if version != "1.0":
            kwargs["heartbeats"] = heartbeats
        self.version = version
        self.conn = CONNECTIONS[version]([(broker.host, broker.stomp_port)], **kwargs)
        self.listener = Collector()
        self.conn.set_listener("collector", self.listener)
        # Receipts of frames inside a transaction, by transaction: the broker
        # answers them when the transaction ends, before COMMIT's/ABORT's own.
        self.deferred: dict = {}

    def connect(self, **headers) -> "StompClient":
        self.conn.connect(wait=True, headers=headers or None)
        return self

    def receipt(self) -> str:
        return f"r-{next(_receipts)}"

    def wait_receipt(self, receipt: str, timeout: float = TIMEOUT) -> None:
        got = self.listener.receipts.get(timeout=timeout)
        assert got == receipt, f"expected RECEIPT {receipt}, got {got}"

    def subscribe(self, destination: str, id: str, ack: str = "auto", **headers) -> None:
        r = self.receipt()
        self.conn.subscribe(destination, id, ack=ack, headers={"receipt": r, **headers})
        self.wait_receipt(r)

    def unsubscribe(self, id: str) -> None:
        r = self.receipt()
        self.conn.unsubscribe(id, headers={"receipt": r})
        self.wait_receipt(r)

    def _await_receipt(self, r: str, transaction: Optional[str]) -> None:
        """Waits for `r` now, or at the end of `transaction`."""
        if transaction is None:
            self.wait_receipt(r)
        else:
            self.deferred.setdefault(transaction, []).append(r)

    def _end(self, transaction: str, r: str) -> None:
        """After COMMIT/ABORT: the transaction's receipts in frame order, then `r`."""
        for deferred in self.deferred.pop(transaction, []):
            self.wait_receipt(deferred)
        self.wait_receipt(r)

    def send(self, destination: str, body, headers: Optional[dict] = None, receipt: bool = True) -> None:
        headers = dict(headers or {})
        r = None
        if receipt:
            r = self.receipt()
            headers["receipt"] = r
        self.conn.send(destination, body, headers=headers)
        if r:
            self._await_receipt(r, headers.get("transaction"))

    def expect(self, timeout: float = TIMEOUT):
        try:
            return self.listener.messages.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no MESSAGE within {timeout}s")

    def expect_n(self, n: int, timeout: float = TIMEOUT) -> list:
        return [self.expect(timeout) for _ in range(n)]

    def expect_nothing(self, within: float = QUIET) -> None:
        try:
            frame = self.listener.messages.get(timeout=within)
        except queue.Empty:
            return
        pytest.fail(f"unexpected MESSAGE {frame.headers} {frame.body!r}")

    def expect_error(self, timeout: float = TIMEOUT):
        try:
            return self.listener.errors.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no ERROR within {timeout}s")

    def _ack_args(self, frame) -> dict:
        if self.version == "1.2":
            return {"id": frame.headers["ack"]}
        if self.version == "1.1":
            return {"id": frame.headers["message-id"], "subscription": frame.headers["subscription"]}
        return {"id": frame.headers["message-id"]}

    def ack(self, frame, transaction: Optional[str] = None) -> None:
        r = self.receipt()
        self.conn.ack(**self._ack_args(frame), transaction=transaction, receipt=r)
        self._await_receipt(r, transaction)

    def nack(self, frame, transaction: Optional[str] = None) -> None:
        r = self.receipt()
        self.conn.nack(**self._ack_args(frame), transaction=transaction, receipt=r)
        self._await_receipt(r, transaction)

    def begin(self, transaction: str) -> None:
        r = self.receipt()
        self.conn.begin(transaction=transaction, headers={"receipt": r})
        self.wait_receipt(r)

    def commit(self, transaction: str) -> None:
        r = self.receipt()
        self.conn.commit(transaction=transaction, headers={"receipt": r})
        self._end(transaction, r)

    def abort(self, transaction: str) -> None:
        r = self.receipt()
        self.conn.abort(transaction, headers={"receipt": r})
        self._end(transaction, r)

    def disconnect(self) -> None:
        if self.conn.is_connected():
            self.conn.disconnect(receipt=self.receipt())

    def drop(self) -> None:
        """Closes the socket without DISCONNECT, as a crashed client would."""
        transport = self.conn.transport
        sock = getattr(transport, "socket", None)
        if sock is not None:
            try:
                sock.shutdown(2)
            except OSError:
                pass
        self.listener.disconnected.wait(TIMEOUT)

    def close(self) -> None:
        try:
            self.disconnect()
        except Exception:  # pragma: no cover - teardown best effort
            pass


@pytest.fixture
def stomp_client(broker):
    """Factory: stomp_client(version="1.2", heartbeats=(0, 0)) -> connected StompClient."""
    made = []

    def make(version: str = "1.2", heartbeats=(0, 0), **headers) -> StompClient:
        client = StompClient(broker, version, heartbeats).connect(**headers)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()
