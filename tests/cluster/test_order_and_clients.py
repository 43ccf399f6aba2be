"""Per-publisher order across nodes when one subscriber's filters are
different NATS subscriptions, and the Mosquitto command-line clients on two
nodes."""

from __future__ import annotations

import subprocess

import pytest

from clusterutil import await_route, mqtt_probe
from mqttutil import unique
from test_mosquitto_clients import Sub
from test_operations import metric

COUNT = 2000


@pytest.fixture
def pair(nats, nodes):
    return nodes.start("tern-a", [nats.url]), nodes.start("tern-b", [nats.url])


def test_order_holds_across_filters_that_are_separate_nats_subscriptions(pair, mqtt):
    a, b = pair
    prefix = unique("o")
    sub = mqtt(b, "3.1.1")
    # Three filters, three NATS subscriptions, three channels in the client library.
    for part in ("left", "right", "probe"):
        sub.subscribe(f"{prefix}/{part}/#", qos=0)
    pub = mqtt(a, "3.1.1")
    await_route(*mqtt_probe(pub, sub, f"{prefix}/probe/x"))
    for i in range(COUNT):
        side = "left" if i % 3 else "right"
        pub.client.publish(f"{prefix}/{side}/x", str(i).encode(), qos=0)
    pub.publish(f"{prefix}/left/x", b"end", qos=1)
    got = [m.payload.decode() for m in sub.expect_n(COUNT + 1, timeout=30)]
    assert got[-1] == "end"
    numbers = [int(p) for p in got[:-1]]
    assert numbers == list(range(COUNT)), "one publisher's messages in publish order, none lost or repeated"


def test_mosquitto_clients_across_nodes(pair, mqtt):
    a, b = pair
    prefix = unique("mq")
    sub = Sub(b, "mqttv5", f"{prefix}/#", qos=1)
    try:
        # A paho publisher on node A proves the route before mosquitto_pub runs.
        probe_pub = mqtt(a)
        seen = []

        def next_probe(wait):
            try:
                message = sub.message(timeout=wait)
            except AssertionError:
                return None
            seen.append(message)
            return message["payload"]

        await_route(lambda text: probe_pub.publish(f"{prefix}/probe", text.encode(), qos=1), next_probe)
        subprocess.run(
            ["mosquitto_pub", "-h", a.host, "-p", str(a.mqtt_port), "-V", "mqttv5", "-q", "1",
             "-t", f"{prefix}/room", "-m", "21.5", "-D", "publish", "user-property", "unit", "C"],
            check=True, timeout=10, stdin=subprocess.DEVNULL, capture_output=True,
        )
        message = sub.message()
        assert message["topic"] == f"{prefix}/room"
        assert message["payload"] == "21.5"
        assert message["qos"] == "1"
        assert "unit" in message["user"] and "C" in message["user"]
    finally:
        sub.close()


FLOOD = 50_000


def test_a_flood_from_a_fast_publisher_all_arrives_in_order(pair, mqtt):
    """mosquitto_pub -l publishes as fast as it reads lines: far more than one
    round of the receiving node's inbound task takes at once."""
    a, b = pair
    prefix = unique("flood")
    probe = mqtt(b, "3.1.1")
    probe.subscribe(f"{prefix}/#", qos=0)
    sub = Sub(b, "mqttv311", f"{prefix}/data", qos=0)
    try:
        pub = mqtt(a, "3.1.1")
        await_route(*mqtt_probe(pub, probe, f"{prefix}/probe"))
        # "end" last from the same publisher: per-publisher order says all came before it.
        lines = "".join(f"{i}\n" for i in range(FLOOD)) + "end\n"
        subprocess.run(
            ["mosquitto_pub", "-h", a.host, "-p", str(a.mqtt_port), "-q", "0", "-t", f"{prefix}/data", "-l"],
            input=lines, text=True, check=True, timeout=60, capture_output=True,
        )
        last = sub.wait_for("|end", timeout=60)
        assert last.endswith("|end")
        numbers = [int(m["payload"]) for m in sub.messages_seen() if m["payload"] != "end"]
        assert len(numbers) == FLOOD, f"{FLOOD - len(numbers)} lost"
        assert numbers == list(range(FLOOD))
    finally:
        sub.close()


def test_lone_messages_and_batched_bursts_keep_one_order(pair, mqtt):
    """One publisher alternating lone messages (each alone in its NATS
    message) with bursts on two topics (batched per topic run): received in
    publish order, and the bursts went in fewer NATS messages than messages."""
    a, b = pair
    prefix = unique("lone")
    sub = mqtt(b, "3.1.1")
    sub.subscribe(f"{prefix}/#", qos=1)
    pub = mqtt(a, "3.1.1")
    await_route(*mqtt_probe(pub, sub, f"{prefix}/probe"))
    nats_before = metric(a, "tern_cluster_nats_messages_forwarded_total")
    sent, got = [], []
    for round_ in range(20):
        # A lone message: everything before it was received, so nothing is queued.
        lone = f"lone-{round_}"
        pub.publish(f"{prefix}/x", lone.encode(), qos=1)
        sent.append(lone)
        while not got or got[-1] != lone:
            got.append(sub.expect(timeout=10).payload.decode())
        burst = [f"{round_}-{i}" for i in range(300)]
        for text in burst:
            pub.client.publish(f"{prefix}/x" if len(text) % 2 else f"{prefix}/y", text.encode(), qos=0)
        sent.extend(burst)
    pub.publish(f"{prefix}/x", b"end", qos=1)
    sent.append("end")
    while got[-1] != "end":
        got.append(sub.expect(timeout=30).payload.decode())
    assert got == sent, "one publisher's messages in publish order, none lost or repeated"
    nats = metric(a, "tern_cluster_nats_messages_forwarded_total") - nats_before
    assert nats < len(sent), f"{nats} NATS messages for {len(sent)}: bursts were not batched"
