"""Flow control between nodes: a node that routes more slowly than another
sends must slow the sender down, not lose what its publishers had acked.

The nodes run with a tiny `cluster.window` (2 messages unconfirmed), so the
sender waits for the receiver's confirmations all the time: every message must
still arrive, once, in order, with no NATS slow-consumer drop on the receiver.
(Without flow control the loss shows once more than a subscription's buffer,
65,536 messages, is in flight: the cluster bench's qos1 scenario.)
"""

from __future__ import annotations

import queue
import socket

import pytest

from clusterutil import await_route, flood_qos1, mqtt_probe
from mqttutil import unique
from test_operations import metric

PUBLISHERS = 4
PER_PUBLISHER = 4000
TOTAL = PUBLISHERS * PER_PUBLISHER
SLOW_SESSIONS = 10
# Quiet this long with messages still missing: they are lost.
IDLE = 15.0


@pytest.fixture
def pair(nats, nodes):
    env = {"TERN_CLUSTER__WINDOW": "2"}
    return nodes.start("tern-a", [nats.url], env), nodes.start("tern-b", [nats.url], env)


def mqtt311_connect_and_subscribe(client_id: str, topic_filter: str) -> bytes:
    """CONNECT (3.1.1, clean) and SUBSCRIBE at QoS 1, raw: these sessions never read."""

    def string(text: str) -> bytes:
        raw = text.encode()
        return len(raw).to_bytes(2, "big") + raw

    def packet(kind: int, body: bytes) -> bytes:
        length, encoded = len(body), b""
        while True:
            byte, length = length % 128, length // 128
            encoded += bytes([byte | (0x80 if length else 0)])
            if not length:
                return bytes([kind]) + encoded + body

    connect = packet(0x10, string("MQTT") + bytes([4, 0x02]) + (0).to_bytes(2, "big") + string(client_id))
    subscribe = packet(0x82, (1).to_bytes(2, "big") + string(topic_filter) + bytes([1]))
    return connect + subscribe


def test_qos1_flood_across_nodes_to_slow_subscribers_loses_nothing(pair, mqtt):
    a, b = pair
    prefix = unique("flood")
    counter = mqtt(b, "5.0")
    counter.subscribe(f"{prefix}/#", qos=1)
    # Sessions on B that never read: every message costs B's routing more, and
    # their queues (100,000 by default) hold what they do not take.
    slow = []
    for i in range(SLOW_SESSIONS):
        sock = socket.create_connection((b.host, b.mqtt_port), timeout=10)
        sock.sendall(mqtt311_connect_and_subscribe(f"{prefix}-slow-{i}", f"{prefix}/#"))
        slow.append(sock)
    probe = mqtt(a)
    await_route(*mqtt_probe(probe, counter, f"{prefix}/probe"))
    slow_before = metric(b, "tern_cluster_nats_slow_consumer_drops_total")

    publishers, infos = flood_qos1(a, prefix, PUBLISHERS, PER_PUBLISHER, 1000)
    acked = sum(1 for batch in infos for info in batch if info.is_published())
    assert acked == TOTAL, f"only {acked} of {TOTAL} QoS 1 publishes were acknowledged"

    payloads = []
    while len(payloads) < TOTAL:
        try:
            payloads.append(counter.messages.get(timeout=IDLE).payload.decode())
        except queue.Empty:
            break
    assert len(payloads) == TOTAL, (
        f"{TOTAL - len(payloads)} of {TOTAL} acknowledged QoS 1 messages lost between the nodes "
        f"(nothing more for {IDLE}s)"
    )
    expected = {f"{i}-{n}" for i in range(PUBLISHERS) for n in range(PER_PUBLISHER)}
    assert set(payloads) == expected and len(payloads) == TOTAL
    for index in range(PUBLISHERS):
        mine = [int(p.split("-")[1]) for p in payloads if p.startswith(f"{index}-")]
        assert mine == list(range(PER_PUBLISHER)), f"publisher {index}: order across nodes"
    assert metric(b, "tern_cluster_nats_slow_consumer_drops_total") == slow_before
    assert metric(a, "tern_cluster_window_waits_total") > 0, "the sender waited for confirmations"
    assert metric(a, "tern_cluster_confirm_timeouts_total") == 0, "every sync was confirmed"
    for publisher in publishers:
        publisher.close()
    for sock in slow:
        sock.close()
