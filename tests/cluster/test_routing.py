"""Routing by interest across nodes, with real clients on different nodes:
a message published on any node reaches every matching subscriber on every
node, whatever the protocols, exactly as on one node, once, in order."""

from __future__ import annotations

import pytest
from paho.mqtt.subscribeoptions import SubscribeOptions

from clusterutil import await_route, mqtt_probe
from mqttutil import publish_props, unique
from stomputil import StompClient

COUNT = 20


@pytest.fixture
def pair(nats, nodes):
    """Two nodes, tern-a and tern-b, on one NATS server."""
    return nodes.start("tern-a", [nats.url]), nodes.start("tern-b", [nats.url])


def ready(publisher, subscriber, prefix: str) -> None:
    """`subscriber` subscribed `<prefix>/#`: wait until `publisher`'s messages cross."""
    await_route(*mqtt_probe(publisher, subscriber, f"{prefix}/probe"))


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_mqtt_to_mqtt_across_nodes(mqtt, pair, qos):
    a, b = pair
    prefix = unique("t")
    sub = mqtt(b)
    assert sub.subscribe(f"{prefix}/#", qos=2) == [2]
    pub = mqtt(a)
    ready(pub, sub, prefix)
    for i in range(COUNT):
        pub.publish(f"{prefix}/data", f"m{i}".encode(), qos=qos)
    got = sub.expect_n(COUNT)
    assert [m.payload.decode() for m in got] == [f"m{i}" for i in range(COUNT)], "in order"
    assert {m.qos for m in got} == {qos}
    assert {m.topic for m in got} == {f"{prefix}/data"}
    sub.expect_nothing()


def test_qos_is_downgraded_to_the_remote_subscription(mqtt, pair):
    a, b = pair
    prefix = unique("t")
    sub = mqtt(b)
    sub.subscribe(f"{prefix}/#", qos=1)
    pub = mqtt(a)
    ready(pub, sub, prefix)
    pub.publish(f"{prefix}/x", b"two", qos=2)
    assert sub.expect().qos == 1


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_mqtt_to_stomp_across_nodes(mqtt, pair, qos):
    a, b = pair
    prefix = unique("t")
    stomp = StompClient(b).connect()
    stomp.subscribe(f"/topic/{prefix}/#", id="s1")
    pub = mqtt(a)

    def receive(wait):
        try:
            return stomp.listener.messages.get(timeout=wait).body.decode()
        except Exception:  # queue.Empty
            return None

    await_route(lambda text: pub.publish(f"{prefix}/probe", text.encode(), qos=1), receive)
    props = publish_props(ContentType="text/plain", UserProperty=[("site", "north")])
    for i in range(COUNT):
        pub.publish(f"{prefix}/data", f"m{i}".encode(), qos=qos, properties=props)
    frames = stomp.expect_n(COUNT)
    assert [f.body.decode() for f in frames] == [f"m{i}" for i in range(COUNT)]
    assert frames[0].headers["destination"] == f"/topic/{prefix}/data"
    assert frames[0].headers.get("content-type", "").startswith("text/plain")
    assert frames[0].headers.get("site") == "north", "user property -> STOMP header across nodes"
    stomp.expect_nothing()
    stomp.disconnect()


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_stomp_to_mqtt_across_nodes(mqtt, pair, qos):
    a, b = pair
    prefix = unique("t")
    sub = mqtt(b)
    sub.subscribe(f"{prefix}/#", qos=qos)
    stomp = StompClient(a).connect()
    await_route(
        lambda text: stomp.send(f"/topic/{prefix}/probe", text.encode()),
        lambda wait: _payload(sub, wait),
    )
    for i in range(COUNT):
        stomp.send(f"/topic/{prefix}/data", f"m{i}".encode(), headers={"colour": "blue"})
    got = sub.expect_n(COUNT)
    assert [m.payload.decode() for m in got] == [f"m{i}" for i in range(COUNT)]
    user = dict(getattr(got[0].properties, "UserProperty", []) or [])
    assert user.get("colour") == "blue", "STOMP header -> user property across nodes"
    stomp.disconnect()


def _payload(client, wait):
    import queue

    try:
        return client.messages.get(timeout=wait).payload.decode()
    except queue.Empty:
        return None


def test_overlapping_subscriptions_on_one_node_get_one_copy(mqtt, pair):
    a, b = pair
    prefix = unique("t")
    both = mqtt(b)
    both.subscribe(f"{prefix}/#", options=SubscribeOptions(qos=1), properties=_sub_id(1))
    both.subscribe(f"{prefix}/+", options=SubscribeOptions(qos=1), properties=_sub_id(2))
    # A second session on the same filter: the same NATS subscription.
    other = mqtt(b)
    other.subscribe(f"{prefix}/#", qos=1)
    pub = mqtt(a)
    ready(pub, both, prefix)
    drain_until(other, b"probe-last")
    pub.publish(f"{prefix}/x", b"once", qos=1)
    got = both.expect()
    assert got.payload == b"once"
    assert sorted(got.properties.SubscriptionIdentifier) == [1, 2], "one merged delivery"
    assert other.expect().payload == b"once"
    both.expect_nothing()
    other.expect_nothing()


def drain_until(client, payload: bytes) -> None:
    while client.expect().payload != payload:
        pass


def test_no_echo_a_local_subscriber_gets_one_copy(mqtt, pair):
    a, b = pair
    prefix = unique("t")
    local = mqtt(a)
    local.subscribe(f"{prefix}/#", qos=1)
    remote = mqtt(b)
    remote.subscribe(f"{prefix}/#", qos=1)
    pub = mqtt(a)
    ready(pub, remote, prefix)
    # The local subscriber saw the probes too: drain them by a last local marker.
    drain_until(local, b"probe-last")
    pub.publish(f"{prefix}/x", b"one", qos=1)
    assert local.expect().payload == b"one"
    assert remote.expect().payload == b"one"
    local.expect_nothing()
    remote.expect_nothing()


def test_properties_expiry_and_retain_as_published_cross(mqtt, pair):
    a, b = pair
    prefix = unique("t")
    sub = mqtt(b)
    sub.subscribe(f"{prefix}/#", options=SubscribeOptions(qos=1, retainAsPublished=True))
    pub = mqtt(a)
    ready(pub, sub, prefix)
    props = publish_props(
        MessageExpiryInterval=120,
        ResponseTopic="reply/here",
        CorrelationData=b"\x00\x01corr",
        PayloadFormatIndicator=1,
        UserProperty=[("k", "v1"), ("k", "v2")],
    )
    pub.publish(f"{prefix}/r", b"kept", qos=1, retain=True, properties=props)
    got = sub.expect()
    assert got.retain, "retain-as-published across nodes"
    assert got.properties.ResponseTopic == "reply/here"
    assert got.properties.CorrelationData == b"\x00\x01corr"
    assert got.properties.PayloadFormatIndicator == 1
    assert got.properties.UserProperty == [("k", "v1"), ("k", "v2")]
    assert 0 < got.properties.MessageExpiryInterval <= 120
    pub.publish(f"{prefix}/r", b"", qos=1, retain=True)  # clear it
    assert sub.expect().payload == b""


def test_a_node_without_interest_gets_nothing_and_unsubscribe_stops_traffic(mqtt, pair, nats):
    a, b = pair
    prefix = unique("t")
    sub = mqtt(b)
    sub.subscribe(f"{prefix}/#", qos=1)
    pub = mqtt(a)
    ready(pub, sub, prefix)
    sub.unsubscribe(f"{prefix}/#")
    watcher = mqtt(b)
    watcher.subscribe(f"{prefix}/other", qos=1)
    await_route(*mqtt_probe(pub, watcher, f"{prefix}/other"))
    pub.publish(f"{prefix}/x", b"nobody", qos=1)
    sub.expect_nothing()


def _sub_id(n):
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.SUBSCRIBE)
    props.SubscriptionIdentifier = n
    return props


