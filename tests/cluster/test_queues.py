"""Point-to-point queues cluster-wide, with real clients on different nodes:
`/queue/<q>` (stomp.py) and `$queue/<q>` (paho) are one queue in the whole
cluster: each message to one consumer on any node, kept until acked,
redelivered on NACK, on a consumer's disconnect and on a node's death to a
consumer on another node; the per-queue limit holds cluster-wide. HTTP pull
consumers take from the same queue under leases."""

from __future__ import annotations

import queue
import threading
import time

import pytest
import requests

from mqttutil import unique
from stomputil import StompClient

# Short, so a killed node's messages come back quickly.
ACK_WAIT = "2"
WAIT = 20.0


def start_three(nats, nodes, extra=None):
    env = {"TERN_CLUSTER__ACK_WAIT_SECS": ACK_WAIT, **(extra or {})}
    return [nodes.start(f"tern-{n}", [nats.url], env) for n in "abc"]


def stomp_consumer(broker, q: str, ack: str = "client-individual") -> StompClient:
    client = StompClient(broker).connect()
    client.subscribe(f"/queue/{q}", id="s1", ack=ack)
    return client


def next_frame(client: StompClient, wait: float):
    try:
        return client.listener.messages.get(timeout=wait)
    except queue.Empty:
        return None


def next_mqtt(client, wait: float):
    try:
        return client.messages.get(timeout=wait)
    except queue.Empty:
        return None


def await_consumer(publisher_send, receive, timeout: float = WAIT) -> None:
    """Sends probes until one reaches the consumer (its node pulls the queue)."""
    deadline = time.monotonic() + timeout
    n = 0
    while time.monotonic() < deadline:
        n += 1
        publisher_send(f"probe-{n}")
        got = receive(1.0)
        if got is not None:
            return
    raise AssertionError(f"no queue message reached the consumer within {timeout}s")


def test_queue_consumers_on_three_nodes_get_every_message_exactly_once(nats, nodes, mqtt):
    a, b, c = start_three(nats, nodes)
    q = unique("jobs")
    # A consumer on node b alone first: a message published on a crosses to it.
    mq = mqtt(b)
    assert mq.subscribe(f"$queue/{q}", qos=1) == [1]
    pub = mqtt(a)
    await_consumer(
        lambda text: pub.publish(f"$queue/{q}", text.encode(), qos=1),
        lambda wait: next_mqtt(mq, wait),
    )
    stomp_a = stomp_consumer(a, q)
    stomp_c = stomp_consumer(c, q)
    sender = StompClient(c).connect()
    expected = set()
    for i in range(30):
        pub.publish(f"$queue/{q}", f"m{i}".encode(), qos=1)
        expected.add(f"m{i}")
    for i in range(10):
        sender.send(f"/queue/{q}", f"s{i}".encode())
        expected.add(f"s{i}")

    got: dict = {}
    deadline = time.monotonic() + WAIT
    while sum(len(v) for v in got.values()) < len(expected) and time.monotonic() < deadline:
        for name, client in (("a", stomp_a), ("c", stomp_c)):
            frame = next_frame(client, 0.05)
            if frame is not None:
                client.ack(frame)
                got.setdefault(name, []).append(frame.body.decode())
        message = next_mqtt(mq, 0.05)
        if message is not None:
            got.setdefault("b", []).append(message.payload.decode())
    everything = [body for bodies in got.values() for body in bodies]
    assert sorted(everything) == sorted(expected), f"each message once in total: {got}"
    # Nothing more comes: no message was handed to two consumers.
    stomp_a.expect_nothing()
    stomp_c.expect_nothing()
    mq.expect_nothing()
    for client in (stomp_a, stomp_c, sender):
        client.disconnect()
    # What operators see: node a stored what its client published; the nodes
    # that handed messages out acked them on JetStream.
    from test_operations import metric

    assert metric(a, "tern_cluster_queue_messages_published_total") >= 30
    delivered = sum(metric(n, "tern_cluster_queue_messages_delivered_total") for n in (a, b, c))
    acked = sum(metric(n, "tern_cluster_queue_messages_acked_total") for n in (a, b, c))
    assert delivered >= len(expected) and acked >= len(expected), (delivered, acked)


def test_nack_is_redelivered_to_a_consumer_on_another_node(nats, nodes):
    a, b, c = start_three(nats, nodes)
    q = unique("jobs")
    refuser = stomp_consumer(a, q)
    sender = StompClient(c).connect()
    sender.send(f"/queue/{q}", b"job-1")
    first = refuser.expect(WAIT)
    assert first.body == b"job-1"
    taker = stomp_consumer(b, q)
    refuser.nack(first)
    # The refuser keeps refusing (it may get it again); the consumer on b gets it.
    deadline = time.monotonic() + WAIT
    while True:
        again = next_frame(refuser, 0.05)
        if again is not None:
            assert again.body == b"job-1"
            refuser.nack(again)
        frame = next_frame(taker, 0.05)
        if frame is not None:
            assert frame.body == b"job-1"
            taker.ack(frame)
            break
        assert time.monotonic() < deadline, "the NACKed message never reached node b"
    refuser.unsubscribe("s1")
    taker.expect_nothing()
    for client in (refuser, taker, sender):
        client.disconnect()


def test_consumer_disconnecting_with_unacked_messages_they_go_to_another_node(nats, nodes, mqtt):
    a, b, c = start_three(nats, nodes)
    q = unique("jobs")
    leaver = stomp_consumer(a, q)
    sender = StompClient(c).connect()
    for i in range(3):
        sender.send(f"/queue/{q}", f"job-{i}".encode())
    held = [leaver.expect(WAIT).body for _ in range(3)]
    assert sorted(held) == [b"job-0", b"job-1", b"job-2"]
    heir = mqtt(b)
    assert heir.subscribe(f"$queue/{q}", qos=1) == [1]
    leaver.drop()  # no ACK, no DISCONNECT
    got = sorted(m.payload for m in heir.expect_n(3, timeout=WAIT))
    assert got == [b"job-0", b"job-1", b"job-2"]
    heir.expect_nothing()
    sender.disconnect()


def test_node_killed_with_unacked_queue_messages_they_go_to_another_node(nats, nodes, mqtt):
    a, b, c = start_three(nats, nodes)
    q = unique("jobs")
    doomed = stomp_consumer(a, q)
    sender = StompClient(c).connect()
    for i in range(3):
        sender.send(f"/queue/{q}", f"job-{i}".encode())
    held = sorted(doomed.expect(WAIT).body for _ in range(3))
    assert held == [b"job-0", b"job-1", b"job-2"]
    heir = mqtt(b)
    assert heir.subscribe(f"$queue/{q}", qos=1) == [1]
    a.proc.kill()  # SIGKILL: node a acks nothing and naks nothing
    a.proc.wait(5)
    del nodes.running["tern-a"]
    # JetStream hands them out again once the ack wait (2 s) has passed.
    got = sorted(m.payload for m in heir.expect_n(3, timeout=WAIT))
    assert got == [b"job-0", b"job-1", b"job-2"]
    heir.expect_nothing()
    sender.disconnect()


def test_mqtt_qos1_queue_messages_of_a_killed_node_go_to_another_node(nats, nodes, mqtt):
    """An MQTT consumer that never sent PUBACK: its node dies; nothing is lost."""
    a, b, c = start_three(nats, nodes)
    q = unique("jobs")
    # A raw paho client whose PUBACKs we hold back: manual acks.
    from mqttutil import MqttClient

    silent = MqttClient(a, "5.0", client_id=unique("silent"))
    silent.client.manual_ack_set(True)
    silent.connect()
    assert silent.subscribe(f"$queue/{q}", qos=1) == [1]
    pub = mqtt(c)
    for i in range(3):
        pub.publish(f"$queue/{q}", f"job-{i}".encode(), qos=1)
    held = sorted(m.payload for m in silent.expect_n(3, timeout=WAIT))
    assert held == [b"job-0", b"job-1", b"job-2"]
    heir = mqtt(b)
    assert heir.subscribe(f"$queue/{q}", qos=1) == [1]
    heir.expect_nothing(within=0.5)  # node a still holds them (not acked, not lost)
    a.proc.kill()
    a.proc.wait(5)
    del nodes.running["tern-a"]
    silent.close()
    got = sorted(m.payload for m in heir.expect_n(3, timeout=WAIT))
    assert got == [b"job-0", b"job-1", b"job-2"]


def test_queue_limit_applies_cluster_wide(nats, nodes, mqtt):
    a, b, c = start_three(nats, nodes, {"TERN_LIMITS__QUEUE_MAX_MESSAGES": "5"})
    q = unique("jobs")
    sender_a = StompClient(a).connect()
    for i in range(3):
        sender_a.send(f"/queue/{q}", f"a{i}".encode())
    pub_b = mqtt(b)
    codes: dict = {}
    done = threading.Event()

    def on_publish(client, userdata, mid, reason_code, properties):
        codes[mid] = reason_code
        done.set()

    pub_b.client.on_publish = on_publish
    for i in range(2):
        info = pub_b.publish(f"$queue/{q}", f"b{i}".encode(), qos=1)
        assert not codes[info.mid].is_failure, f"accepted: {codes[info.mid]}"
    # Five in the whole cluster: the next ones are refused (the first one over
    # may be taken and dropped by the stream before the node knows it is full).
    refused = None
    deadline = time.monotonic() + WAIT
    n = 0
    while refused is None:
        assert time.monotonic() < deadline, f"node b never refused the 6th message: {codes}"
        n += 1
        info = pub_b.publish(f"$queue/{q}", f"over{n}".encode(), qos=1)
        if codes[info.mid].is_failure:
            refused = codes[info.mid]
    assert refused.value == 0x97, f"quota exceeded, got {refused}"
    consumer = mqtt(c)
    assert consumer.subscribe(f"$queue/{q}", qos=1) == [1]
    got = sorted(m.payload for m in consumer.expect_n(5, timeout=WAIT))
    assert got == [b"a0", b"a1", b"a2", b"b0", b"b1"]
    consumer.expect_nothing()
    sender_a.disconnect()


def pull(node, q: str, **params) -> list:
    """POST /v1/queues/<q>/pull on `node`: the leased messages."""
    host, port = node.endpoints["ws"]
    r = requests.post(f"http://{host}:{port}/v1/queues/{q}/pull", params=params, timeout=WAIT)
    assert r.status_code == 200, r.text
    return r.json()["messages"]


def settle(node, q: str, op: str, lease_id: str) -> None:
    host, port = node.endpoints["ws"]
    r = requests.post(f"http://{host}:{port}/v1/queues/{q}/{op}", json={"lease_ids": [lease_id]}, timeout=WAIT)
    assert r.status_code == 200, r.text


def pull_all(node, q: str, count: int, **params) -> dict:
    """Pulls on `node` until `count` messages are leased: payload -> lease id."""
    leased = {}
    deadline = time.monotonic() + WAIT
    while len(leased) < count:
        assert time.monotonic() < deadline, f"only {sorted(leased)} pulled from {q}"
        for m in pull(node, q, max=10, wait=2, **params):
            assert m["payload"] not in leased, f"{m['payload']} leased twice"
            leased[m["payload"]] = m["lease_id"]
    return leased


def test_http_pull_takes_from_the_cluster_queue_and_what_is_not_acked_goes_back(nats, nodes, mqtt):
    # An ack wait longer than the test: only the leases bring messages back.
    a, b, c = start_three(nats, nodes, {"TERN_CLUSTER__ACK_WAIT_SECS": "60"})
    q = unique("jobs")
    publisher = mqtt(c)
    for i in range(3):
        publisher.publish(f"$queue/{q}", f"job-{i}".encode(), qos=1)
    leased = pull_all(a, q, 3, visibility=2)
    assert sorted(leased) == ["job-0", "job-1", "job-2"]
    settle(a, q, "ack", leased["job-0"])
    settle(a, q, "nack", leased["job-1"])
    # job-1 at once, job-2 once its lease (2 s) is over: both to a pull on another node.
    again = pull_all(b, q, 2, visibility=30)
    assert sorted(again) == ["job-1", "job-2"]
    for lease_id in again.values():
        settle(b, q, "ack", lease_id)
    assert pull(c, q, max=10, wait=2) == [], "acked messages never come back"
