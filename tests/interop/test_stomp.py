"""Tern against stomp.py, an independent STOMP client, over STOMP 1.0, 1.1 and 1.2
wherever the behaviour is the same: every ack mode, receipts,
transactions, heart-beats, queues, NACK, binary bodies and header escaping."""

from __future__ import annotations

import socket
import time

import pytest

import stomp

from stomputil import QUIET, TIMEOUT, Collector, StompClient, stomp_client  # noqa: F401 (fixture)
from ternproc import start_broker, stop_broker

VERSIONS = pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])


@VERSIONS
def test_connect_negotiates_the_version(stomp_client, version):
    c = stomp_client(version)
    headers = c.listener.connected_frame.headers
    assert headers.get("session", "").startswith("stomp-")
    assert headers.get("server", "").startswith("tern/")
    if version != "1.0":
        assert headers["version"] == version


@VERSIONS
def test_send_subscribe_auto_ack(stomp_client, version):
    c = stomp_client(version)
    c.subscribe("/topic/greetings", "s1")
    c.send("/topic/greetings", b"hello", {"content-type": "text/plain", "x-lang": "en"})
    m = c.expect()
    assert m.body == b"hello"
    assert m.headers["destination"] == "/topic/greetings"
    assert m.headers["subscription"] == "s1"
    assert m.headers["content-type"] == "text/plain"
    assert m.headers["x-lang"] == "en"
    assert "message-id" in m.headers


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_client_ack_is_cumulative(stomp_client, version):
    c = stomp_client(version)
    c.subscribe("/queue/cumulative", "q", ack="client")
    for i in range(3):
        c.send("/queue/cumulative", str(i).encode())
    ms = c.expect_n(3)
    if version == "1.2":
        assert all("ack" in m.headers for m in ms)
    c.ack(ms[2])  # covers all three
    c.disconnect()
    # Nothing comes back to a new consumer: all three were acknowledged.
    d = stomp_client(version)
    d.subscribe("/queue/cumulative", "q")
    d.expect_nothing()


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_client_individual_ack_leaves_the_others(stomp_client, version):
    c = stomp_client(version)
    c.subscribe("/queue/individual", "q", ack="client-individual")
    for i in range(3):
        c.send("/queue/individual", str(i).encode())
    ms = c.expect_n(3)
    c.ack(ms[1])
    c.drop()
    d = stomp_client(version)
    d.subscribe("/queue/individual", "q")
    assert sorted(m.body for m in d.expect_n(2)) == [b"0", b"2"]
    d.expect_nothing()


@VERSIONS
def test_receipts_for_every_frame(stomp_client, version):
    c = stomp_client(version)
    c.subscribe("/topic/r", "s")  # waits for its RECEIPT
    c.send("/topic/r", b"x")  # waits for its RECEIPT
    c.expect()
    c.begin("t1")
    c.abort("t1")
    c.unsubscribe("s")


@VERSIONS
def test_transaction_commit_and_abort(stomp_client, version):
    sub = stomp_client(version)
    sub.subscribe("/topic/tx", "s")
    c = stomp_client(version)
    c.begin("t1")
    c.send("/topic/tx", b"one", {"transaction": "t1"})
    c.send("/topic/tx", b"two", {"transaction": "t1"})
    sub.expect_nothing()
    c.commit("t1")
    assert [m.body for m in sub.expect_n(2)] == [b"one", b"two"]
    c.begin("t2")
    c.send("/topic/tx", b"never", {"transaction": "t2"})
    c.abort("t2")
    sub.expect_nothing()


@pytest.mark.parametrize("version", ["1.1", "1.2"])  # client-individual and NACK are 1.1+
def test_ack_inside_a_transaction(stomp_client, version):
    c = stomp_client(version)
    c.subscribe("/queue/txack", "q", ack="client-individual")
    c.send("/queue/txack", b"job")
    m = c.expect()
    c.begin("t")
    c.ack(m, transaction="t")
    c.abort("t")  # the ACK vanishes: the job is still ours to settle
    c.nack(m)
    again = c.expect()
    assert again.body == b"job"
    c.ack(again)


def test_receipts_of_transactional_frames_come_when_the_transaction_ends(stomp_client):
    sub = stomp_client()
    sub.subscribe("/queue/txr", "q", ack="client-individual")
    c = stomp_client()
    c.begin("t")
    c.send("/queue/txr", b"one", {"transaction": "t"})  # its receipt waits for COMMIT
    c.send("/queue/txr", b"two", {"transaction": "t"})
    # A frame outside the transaction is answered at once, before the two above.
    c.send("/topic/elsewhere", b"now")
    assert c.listener.receipts.empty(), "a transactional frame was answered early"
    sub.expect_nothing()
    c.commit("t")  # the SENDs' receipts in order, then COMMIT's
    m1, m2 = sub.expect_n(2)
    assert [m1.body, m2.body] == [b"one", b"two"]
    sub.begin("a")
    sub.ack(m1, transaction="a")
    sub.abort("a")  # the ACK's receipt, then ABORT's
    sub.ack(m1)
    sub.ack(m2)


def test_ack_and_nack_with_another_subscription_header_settle_the_message(stomp_client):
    """stomp.py 1.1 programs in the wild send ACK/NACK with a `subscription`
    that is not the subscription's id: the message-id decides (as in RabbitMQ)."""
    c = stomp_client("1.1")
    c.subscribe("/queue/hint", "q", ack="client-individual")
    for body in (b"first", b"second"):
        c.send("/queue/hint", body)
    first, second = c.expect_n(2)
    r = c.receipt()
    c.conn.ack(first.headers["message-id"], subscription="not-q", receipt=r)
    c.wait_receipt(r)
    c.begin("t")
    r = c.receipt()
    c.conn.nack(second.headers["message-id"], subscription="wrong", transaction="t", receipt=r)
    c._await_receipt(r, "t")
    c.commit("t")
    again = c.expect()  # NACKed: redelivered
    assert again.body == b"second"
    assert c.listener.errors.empty()
    c.ack(again)
    c.drop()
    # The first was acknowledged: a new consumer finds nothing.
    d = stomp_client("1.1")
    d.subscribe("/queue/hint", "q")
    d.expect_nothing()


def test_missing_header_error_starts_like_rabbitmq(stomp_client):
    c = stomp_client()
    c.conn.send_frame("SUBSCRIBE", {"destination": "/topic/x"})  # no id
    e = c.expect_error()
    assert e.headers["message"].startswith("Missing header: id"), e.headers


def test_no_common_version_error_body_is_rabbitmqs(broker):
    conn = stomp.Connection10([(broker.host, broker.stomp_port)], auto_decode=False)
    conn.version = "2.0,3.0"  # what stomp.py sends as accept-version
    listener = Collector()
    conn.set_listener("collector", listener)
    conn.connect(wait=False)
    try:
        e = listener.errors.get(timeout=TIMEOUT)
        assert e.body == b"Supported versions are 1.0,1.1,1.2\n"
        assert e.headers["version"] == "1.0,1.1,1.2"
        assert "version" in e.headers["message"]
    finally:
        conn.disconnect()


def test_a_1_mib_message_fits_by_default(stomp_client):
    c = stomp_client()
    c.subscribe("/topic/big", "s")
    body = bytes(range(256)) * 4096  # 1 MiB
    c.send("/topic/big", body, {"content-type": "application/octet-stream"})
    assert c.expect().body == body


@VERSIONS
def test_commit_of_unknown_transaction_is_an_error(stomp_client, version):
    c = stomp_client(version)
    c.conn.commit(transaction="nope")
    e = c.expect_error()
    assert "nope" in e.headers["message"]
    assert c.listener.disconnected.wait(TIMEOUT)


@VERSIONS
def test_queue_with_two_competing_consumers(stomp_client, version):
    a = stomp_client(version)
    b = stomp_client(version)
    a.subscribe("/queue/work", "a")
    b.subscribe("/queue/work", "b")
    p = stomp_client(version)
    for i in range(10):
        p.send("/queue/work", str(i).encode())
    got_a = a.expect_n(5)
    got_b = b.expect_n(5)
    a.expect_nothing()
    b.expect_nothing()
    bodies = sorted(int(m.body) for m in got_a + got_b)
    assert bodies == list(range(10))


@VERSIONS
def test_queue_messages_wait_for_a_consumer(stomp_client, version):
    p = stomp_client(version)
    p.send("/queue/later", b"waiting")
    c = stomp_client(version)
    c.subscribe("/queue/later", "q")
    assert c.expect().body == b"waiting"


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_nack_redelivers(stomp_client, version):
    c = stomp_client(version)
    c.subscribe("/queue/retry", "q", ack="client-individual")
    c.send("/queue/retry", b"flaky")
    first = c.expect()
    c.nack(first)
    second = c.expect()
    assert second.body == b"flaky"
    c.ack(second)
    c.expect_nothing()


@VERSIONS
def test_unacked_queue_message_goes_to_another_consumer_on_disconnect(stomp_client, version):
    a = stomp_client(version)
    a.subscribe("/queue/handover", "q", ack="client")
    a.send("/queue/handover", b"job")
    assert a.expect().body == b"job"
    a.drop()
    b = stomp_client(version)
    b.subscribe("/queue/handover", "q", ack="client")
    assert b.expect().body == b"job"


@VERSIONS
def test_binary_body_with_nul_bytes(stomp_client, version):
    c = stomp_client(version)
    c.subscribe("/topic/bin", "s")
    payload = bytes(range(256)) + b"\x00\x00end\x00"
    c.send("/topic/bin", payload, {"content-type": "application/octet-stream"})
    m = c.expect()
    assert m.body == payload
    assert m.headers["content-length"] == str(len(payload))


@pytest.mark.parametrize("version", ["1.1", "1.2"])
def test_header_escaping(stomp_client, version):
    c = stomp_client(version)
    c.subscribe("/topic/esc", "s")
    tricky = "colon:backslash\\newline\nend"
    c.send("/topic/esc", b"x", {"x-tricky": tricky})
    assert c.expect().headers["x-tricky"] == tricky


@VERSIONS
def test_reply_to_and_correlation_id(stomp_client, version):
    server = stomp_client(version)
    server.subscribe("/queue/requests", "req")
    client = stomp_client(version)
    client.subscribe("/topic/replies/client-1", "rep")
    client.send("/queue/requests", b"ping", {"reply-to": "/topic/replies/client-1", "correlation-id": "c-7"})
    request = server.expect()
    assert request.headers["reply-to"] == "/topic/replies/client-1"
    server.send(request.headers["reply-to"], b"pong", {"correlation-id": request.headers["correlation-id"]})
    reply = client.expect()
    assert reply.body == b"pong"
    assert reply.headers["correlation-id"] == "c-7"


@VERSIONS
def test_send_to_a_wildcard_topic_is_an_error(stomp_client, version):
    c = stomp_client(version)
    c.conn.send("/topic/a/+", b"x")
    e = c.expect_error()
    assert "wildcard" in e.headers["message"]


@VERSIONS
def test_unknown_destination_is_an_error(stomp_client, version):
    c = stomp_client(version)
    c.conn.send("/exchange/amq.topic", b"x")
    e = c.expect_error()
    assert "unknown destination" in e.headers["message"]


@pytest.fixture
def hb_broker(request, tmp_path):
    """A broker offering 200 ms heart-beats."""
    b = start_broker(
        tmp_path,
        {"TERN_LIMITS__STOMP_HEARTBEAT_MS": "200", "TERN_LIMITS__STOMP_MIN_HEARTBEAT_MS": "200"},
    )
    request.node._tern_broker = b
    yield b
    assert stop_broker(b) == 0


def test_heart_beats_keep_an_idle_connection_alive(hb_broker):
    c = StompClient(hb_broker, "1.2", heartbeats=(200, 200)).connect()
    try:
        assert c.listener.connected_frame.headers["heart-beat"] == "200,200"
        time.sleep(2.0)  # ten intervals with nothing but heart-beats
        assert c.conn.is_connected()
        assert c.listener.heartbeats >= 3, c.listener.heartbeats
        assert c.listener.heartbeat_timeouts == 0
        c.subscribe("/topic/hb", "s")
        c.send("/topic/hb", b"still here")
        assert c.expect().body == b"still here"
    finally:
        c.close()


def test_the_server_beats_as_often_as_the_client_asks(broker):
    """heart-beat:0,500 gets a beat every 500 ms (not the 10 s default), down to
    limits.stomp_min_heartbeat_ms (500)."""
    c = StompClient(broker, "1.2", heartbeats=(0, 500)).connect()
    try:
        assert c.listener.connected_frame.headers["heart-beat"] == "500,10000"
        deadline = time.monotonic() + TIMEOUT
        while c.listener.heartbeats < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert c.listener.heartbeats >= 3, c.listener.heartbeats
        assert c.listener.heartbeat_timeouts == 0
    finally:
        c.close()


def test_a_client_that_misses_heart_beats_is_disconnected(hb_broker):
    s = socket.create_connection((hb_broker.host, hb_broker.stomp_port), timeout=TIMEOUT)
    s.sendall(b"CONNECT\naccept-version:1.2\nhost:localhost\nheart-beat:200,0\n\n\x00")
    started = time.monotonic()
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    elapsed = time.monotonic() - started
    assert data.startswith(b"CONNECTED\n")
    assert b"ERROR\n" in data and b"heart-beat" in data
    assert 0.3 < elapsed < 3.0, elapsed
