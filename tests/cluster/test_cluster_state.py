"""Client identity and retained messages across nodes (JetStream KV), with
real paho-mqtt clients connected to different tern nodes of one NATS.

- A client id is one session in the cluster: a connection with the same id on
  another node takes the session over; the first connection is told so
  (MQTT 5 DISCONNECT 0x8E). Resuming keeps the subscriptions (with their
  selectors); a clean start discards them.
- A retained message set, replaced or cleared on any node is what a new
  subscriber on any node gets.
"""

from __future__ import annotations

import json
import time
import urllib.request

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from mqttutil import TIMEOUT, MqttClient, publish_props, unique

SESSION_TAKEN_OVER = 0x8E
CLIENTS_STREAM = "KV_tern_clients"


def stream_last_seq(nats, stream: str) -> int:
    """The last sequence of a JetStream stream, from nats-server's monitoring port."""
    url = f"http://127.0.0.1:{nats.monitor_port}/jsz?streams=true"
    with urllib.request.urlopen(url, timeout=5) as r:
        jsz = json.load(r)
    for account in jsz.get("account_details", []):
        for detail in account.get("stream_detail", []):
            if detail.get("name") == stream:
                return detail["state"]["last_seq"]
    return 0


def wait_for_writes(nats, stream: str, at_least: int) -> None:
    """Waits (bounded) until `stream` holds `at_least` writes: a node's KV
    writes go out after the client's ack, so a test reads the bucket's count."""
    deadline = time.monotonic() + TIMEOUT
    while stream_last_seq(nats, stream) < at_least:
        assert time.monotonic() < deadline, f"{stream} never reached {at_least} writes"
        time.sleep(0.02)


def take_over(nats, nodes, mqtt, filter_: str, clean: bool, properties=None):
    """A persistent session on tern-a subscribes `filter_` (written to the
    bucket), then its client id connects to tern-b with clean start `clean`,
    which takes it over: (tern-b, the first client, the second)."""
    a = nodes.start("tern-a", [nats.url])
    b = nodes.start("tern-b", [nats.url])
    client_id = unique("device")
    first = mqtt(a, client_id=client_id, clean=False, session_expiry=300)
    assert not first.session_present
    before = stream_last_seq(nats, CLIENTS_STREAM)
    assert first.subscribe(filter_, qos=1, properties=properties) == [1]
    wait_for_writes(nats, CLIENTS_STREAM, before + 1)
    second = mqtt(b, client_id=client_id, clean=clean, session_expiry=300)
    assert first.disconnected.wait(TIMEOUT), "tern-a never closed the first connection"
    assert first.disconnect_reason == SESSION_TAKEN_OVER, first.disconnect_reason
    return b, first, second


def test_takeover_on_another_node_disconnects_with_0x8e_and_keeps_subscriptions(nats, nodes, mqtt):
    b, _, second = take_over(nats, nodes, mqtt, "cs/takeover/+", clean=False)
    assert second.session_present, "the session held on tern-a resumes on tern-b"
    # The carried subscription works on tern-b with no SUBSCRIBE there.
    mqtt(b).publish("cs/takeover/1", b"hello", qos=1)
    message = second.expect()
    assert (message.topic, message.payload, message.qos) == ("cs/takeover/1", b"hello", 1)


def test_a_session_resumed_on_another_node_keeps_its_subscriptions_selectors(nats, nodes, mqtt):
    props = Properties(PacketTypes.SUBSCRIBE)
    props.UserProperty = [("selector", "bucket = 3")]
    b, _, second = take_over(nats, nodes, mqtt, "cs/picky/+", clean=False, properties=props)
    assert second.session_present
    publisher = mqtt(b)
    for bucket in [1, 3, 2, 3]:
        publisher.publish("cs/picky/x", f"b{bucket}".encode(), qos=1,
                          properties=publish_props(UserProperty=[("bucket", str(bucket))]))
    assert [m.payload for m in second.expect_n(2)] == [b"b3", b"b3"]
    second.expect_nothing()


def test_clean_start_takeover_on_another_node_discards_the_session(nats, nodes, mqtt):
    b, _, second = take_over(nats, nodes, mqtt, "cs/clean/+", clean=True)
    assert not second.session_present
    mqtt(b).publish("cs/clean/1", b"x", qos=1)
    second.expect_nothing()


def test_retained_set_replace_and_clear_are_seen_from_every_node(nats, nodes):
    names = ["tern-a", "tern-b", "tern-c"]
    brokers = {name: nodes.start(name, [nats.url]) for name in names}
    topic = f"cs/retained/{unique('t')}"
    # A live subscriber on every node: once it got a change, its node's
    # retained index holds that change (both happen under one lock).
    live = {
        name: MqttClient(broker, "5.0", client_id=unique(f"live-{name}")).connect()
        for name, broker in brokers.items()
    }
    clients = list(live.values())
    try:
        for client in live.values():
            assert client.subscribe("cs/retained/#", qos=1) == [1]

        for setter, payload in (("tern-a", b"20"), ("tern-b", b"21"), ("tern-c", b"")):
            publisher = MqttClient(brokers[setter], "5.0", client_id=unique("pub")).connect()
            clients.append(publisher)
            publisher.publish(topic, payload, qos=1, retain=True)
            for name, client in live.items():
                message = client.expect()
                assert (message.topic, message.payload) == (topic, payload), (name, setter)
            for name, broker in brokers.items():
                fresh = MqttClient(broker, "5.0", client_id=unique(f"new-{name}")).connect()
                clients.append(fresh)
                assert fresh.subscribe(topic, qos=1) == [1]
                if payload:
                    message = fresh.expect()
                    assert (message.payload, message.retain) == (payload, True), (name, setter)
                fresh.expect_nothing()
        for name, client in live.items():
            client.expect_nothing()  # one copy of each change, not one per path
    finally:
        for client in clients:
            client.close()


def test_takeover_and_retained_across_a_three_server_nats_cluster_with_three_replicas(
    nats_cluster, nodes
):
    """Each tern node on its own NATS server; the buckets have three replicas."""
    replicas = {"TERN_CLUSTER__REPLICAS": "3"}
    a = nodes.start("tern-a", [nats_cluster[0].url], replicas)
    b = nodes.start("tern-b", [nats_cluster[1].url], replicas)
    c = nodes.start("tern-c", [nats_cluster[2].url], replicas)
    client_id = unique("device")
    topic = f"cs/r3/{unique('t')}"
    clients = []
    try:
        first = MqttClient(a, "5.0", client_id=client_id, clean=False, session_expiry=300).connect()
        clients.append(first)
        before = stream_last_seq(nats_cluster[0], CLIENTS_STREAM)
        assert first.subscribe("cs/r3/#", qos=1) == [1]
        wait_for_writes(nats_cluster[0], CLIENTS_STREAM, before + 1)

        second = MqttClient(c, "5.0", client_id=client_id, clean=False, session_expiry=300).connect()
        clients.append(second)
        assert second.session_present
        assert first.disconnected.wait(TIMEOUT)
        assert first.disconnect_reason == SESSION_TAKEN_OVER, first.disconnect_reason

        publisher = MqttClient(b, "5.0", client_id=unique("pub")).connect()
        clients.append(publisher)
        publisher.publish(topic, b"on", qos=1, retain=True)
        # The carried subscription on tern-c gets the retained change live.
        message = second.expect()
        assert (message.topic, message.payload) == (topic, b"on")
        # tern-c's index has it now; a new subscriber there finds it retained.
        fresh = MqttClient(c, "5.0", client_id=unique("new")).connect()
        clients.append(fresh)
        assert fresh.subscribe(topic, qos=1) == [1]
        message = fresh.expect()
        assert (message.payload, message.retain) == (b"on", True)
    finally:
        for client in clients:
            client.close()
