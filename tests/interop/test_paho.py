"""Tern against paho-mqtt 2.x, an independent MQTT client, over MQTT 3.1, 3.1.1 and 5.0."""

from __future__ import annotations

import queue
import time

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from mqttutil import QUIET, TIMEOUT, MqttClient, publish_props, unique
from ternproc import start_broker, stop_broker

# Every version paho speaks: the cases 3.1.1 and 5.0 share run on 3.1 (MQIsdp) too.
BOTH = pytest.mark.parametrize("version", ["3.1", "3.1.1", "5.0"])


# --------------------------------------------------------------------------- connect


@BOTH
def test_connect(broker, mqtt_client, version):
    c = mqtt_client(version, client_id=unique("conn")).connect()
    assert not c.session_present
    if version == "5.0":
        props = c.connack_properties
        # What Tern tells a 5.0 client about itself (config/tern.toml defaults).
        assert getattr(props, "ReceiveMaximum", None) == 1024
        assert getattr(props, "MaximumPacketSize", None) == 4 * 1024 * 1024
        assert getattr(props, "TopicAliasMaximum", None) == 64
    c.disconnect()


def test_connect_v5_empty_client_id_is_assigned(broker, mqtt_client):
    c = mqtt_client("5.0", client_id="").connect()
    assigned = getattr(c.connack_properties, "AssignedClientIdentifier", None)
    assert assigned, "MQTT 5: an empty client id must be answered with an Assigned Client Identifier"


# --------------------------------------------------------------------------- QoS


@BOTH
@pytest.mark.parametrize("pub_qos", [0, 1, 2])
@pytest.mark.parametrize("sub_qos", [0, 1, 2])
def test_publish_subscribe_qos(broker, mqtt_client, version, pub_qos, sub_qos):
    topic = unique("qos") + f"/p{pub_qos}/s{sub_qos}"
    sub = mqtt_client(version, client_id=unique("sub")).connect()
    assert sub.subscribe(topic, sub_qos) == [sub_qos], "SUBACK grants the QoS asked for"
    pub = mqtt_client(version, client_id=unique("pub")).connect()
    payloads = [f"msg {i} at {pub_qos}".encode() for i in range(3)] + [b"", bytes(range(256)) * 40]
    for p in payloads:
        pub.publish(topic, p, qos=pub_qos)
    got = sub.expect_n(len(payloads))
    assert [m.payload for m in got] == payloads, "payloads arrive intact and in order"
    for m in got:
        assert m.topic == topic
        assert m.qos == min(pub_qos, sub_qos), f"delivered at QoS {m.qos}, expected min({pub_qos}, {sub_qos})"
        assert not m.retain
    sub.expect_nothing()


# --------------------------------------------------------------------------- retained


@BOTH
def test_retained_delivered_to_later_subscriber_and_cleared(broker, mqtt_client, version):
    topic = unique("retained") + "/state"
    live = mqtt_client(version, client_id=unique("live")).connect()
    live.subscribe(topic, 1)
    pub = mqtt_client(version, client_id=unique("pub")).connect()
    pub.publish(topic, b"first", qos=1, retain=True)
    pub.publish(topic, b"on", qos=1, retain=True)

    m1, m2 = live.expect_n(2)
    assert (m1.payload, m2.payload) == (b"first", b"on")
    assert not m1.retain and not m2.retain, (
        "a message sent to an established subscription has RETAIN 0 [MQTT-3.3.1-9]"
    )

    later = mqtt_client(version, client_id=unique("later")).connect()
    later.subscribe(topic, 1)
    m = later.expect()
    assert (m.topic, m.payload, m.retain, m.qos) == (topic, b"on", True, 1), (
        "the newest retained message is sent on SUBSCRIBE with RETAIN 1"
    )
    later.expect_nothing()

    # Wildcard subscribers get it too.
    wild = mqtt_client(version, client_id=unique("wild")).connect()
    wild.subscribe(topic.split("/")[0] + "/#", 0)
    m = wild.expect()
    assert (m.payload, m.retain, m.qos) == (b"on", True, 0)

    # An empty retained message clears the retained message.
    pub.publish(topic, b"", qos=1, retain=True)
    m = live.expect()
    assert m.payload == b""
    after = mqtt_client(version, client_id=unique("after")).connect()
    after.subscribe(topic, 1)
    after.expect_nothing()


def test_retain_as_published_and_retain_handling_v5(broker, mqtt_client):
    topic = unique("rap") + "/t"
    pub = mqtt_client("5.0", client_id=unique("pub")).connect()
    pub.publish(topic, b"kept", qos=1, retain=True)

    never = mqtt_client("5.0", client_id=unique("rh2")).connect()
    never.subscribe(topic, options=SubscribeOptions(qos=1, retainHandling=2))
    never.expect_nothing()

    rap = mqtt_client("5.0", client_id=unique("rap")).connect()
    rap.subscribe(topic, options=SubscribeOptions(qos=1, retainAsPublished=True, retainHandling=1))
    m = rap.expect()
    assert (m.payload, m.retain) == (b"kept", True)
    pub.publish(topic, b"live", qos=1, retain=True)
    m = rap.expect()
    assert (m.payload, m.retain) == (b"live", True), "retain-as-published keeps RETAIN 1 on live delivery"
    m = never.expect()
    assert (m.payload, m.retain) == (b"live", False)


# --------------------------------------------------------------------------- will


@BOTH
def test_will_published_when_socket_dropped(broker, mqtt_client, version):
    will_topic = unique("will") + "/status"
    watcher = mqtt_client(version, client_id=unique("watch")).connect()
    watcher.subscribe(will_topic, 1)
    dying = mqtt_client(
        version,
        client_id=unique("dying"),
        will={"topic": will_topic, "payload": b"gone", "qos": 1, "retain": False},
    ).connect()
    dying.drop()
    m = watcher.expect()
    assert (m.topic, m.payload, m.qos) == (will_topic, b"gone", 1)
    watcher.expect_nothing()


@BOTH
def test_will_retained(broker, mqtt_client, version):
    will_topic = unique("will") + "/retained"
    dying = mqtt_client(
        version,
        client_id=unique("dying"),
        will={"topic": will_topic, "payload": b"offline", "qos": 1, "retain": True},
    ).connect()
    watcher = mqtt_client(version, client_id=unique("watch")).connect()
    watcher.subscribe(will_topic, 1)
    dying.drop()
    assert watcher.expect().payload == b"offline"
    # The will was retained: a subscriber that comes later still sees it.
    later = mqtt_client(version, client_id=unique("later")).connect()
    later.subscribe(will_topic, 1)
    m = later.expect()
    assert (m.payload, m.retain) == (b"offline", True)


@BOTH
def test_no_will_after_clean_disconnect(broker, mqtt_client, version):
    will_topic = unique("will") + "/clean"
    watcher = mqtt_client(version, client_id=unique("watch")).connect()
    watcher.subscribe(will_topic, 1)
    polite = mqtt_client(
        version,
        client_id=unique("polite"),
        will={"topic": will_topic, "payload": b"should not appear", "qos": 1},
    ).connect()
    polite.disconnect()
    # Sentinel on the same topic from another client: everything routed before it has arrived.
    other = mqtt_client(version, client_id=unique("other")).connect()
    other.publish(will_topic, b"sentinel", qos=1)
    got = watcher.expect_until(will_topic, b"sentinel")
    assert [m.payload for m in got] == [b"sentinel"], "will published after a clean DISCONNECT"
    watcher.expect_nothing()


def test_will_published_on_disconnect_with_will_message_v5(broker, mqtt_client):
    will_topic = unique("will") + "/rc4"
    watcher = mqtt_client("5.0", client_id=unique("watch")).connect()
    watcher.subscribe(will_topic, 1)
    c = mqtt_client(
        "5.0",
        client_id=unique("rc4"),
        will={"topic": will_topic, "payload": b"asked for", "qos": 1},
    ).connect()
    c.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message"))
    m = watcher.expect()
    assert m.payload == b"asked for"


# --------------------------------------------------------------------------- persistent session


@BOTH
def test_persistent_session_keeps_subscription_and_queues_qos1(broker, mqtt_client, version):
    topic = unique("persist") + "/inbox"
    cid = unique("persistent")
    kwargs = {"clean": False}
    if version == "5.0":
        kwargs["session_expiry"] = 300
    first = mqtt_client(version, client_id=cid, **kwargs)
    # Start from nothing: clean start on the very first connection.
    first.connect(clean=True) if version == "5.0" else first.connect()
    first.subscribe(topic, 1)
    first.disconnect()

    pub = mqtt_client(version, client_id=unique("pub")).connect()
    queued = [f"offline {i}".encode() for i in range(5)]
    for p in queued:
        pub.publish(topic, p, qos=1)
    pub.publish(topic, b"qos0 while offline", qos=0)

    again = mqtt_client(version, client_id=cid, **kwargs).connect()
    if version == "3.1":
        assert not again.session_present, "MQTT 3.1 has no session-present flag: the bit is reserved"
    else:
        assert again.session_present, "CONNACK session present = 1 for a resumed session"
    got = again.expect_n(len(queued))
    assert [m.payload for m in got] == queued
    assert all(m.qos == 1 for m in got)
    # The subscription survived: a new message arrives without subscribing again.
    pub.publish(topic, b"online again", qos=1)
    rest = again.expect_until(topic, b"online again")
    # A broker may or may not queue the QoS 0 message for an offline session.
    assert [m.payload for m in rest if m.payload != b"qos0 while offline"] == [b"online again"]


@BOTH
def test_clean_session_discards_state(broker, mqtt_client, version):
    topic = unique("clean") + "/inbox"
    cid = unique("cleanme")
    kwargs = {"clean": False, "session_expiry": 300} if version == "5.0" else {"clean": False}
    first = mqtt_client(version, client_id=cid, **kwargs).connect()
    first.subscribe(topic, 1)
    first.disconnect()
    fresh = mqtt_client(version, client_id=cid, clean=True).connect()
    assert not fresh.session_present
    pub = mqtt_client(version, client_id=unique("pub")).connect()
    pub.publish(topic, b"nobody listens", qos=1)
    fresh.expect_nothing()


# --------------------------------------------------------------------------- wildcards


@BOTH
def test_wildcards(broker, mqtt_client, version):
    root = unique("wild")
    plus = mqtt_client(version, client_id=unique("plus")).connect()
    plus.subscribe(f"{root}/+/temp", 1)
    hash_ = mqtt_client(version, client_id=unique("hash")).connect()
    hash_.subscribe(f"{root}/#", 1)
    mid = mqtt_client(version, client_id=unique("mid")).connect()
    mid.subscribe(f"+/{root}/a/#", 1)
    all_ = mqtt_client(version, client_id=unique("all")).connect()
    all_.subscribe("#", 1)

    pub = mqtt_client(version, client_id=unique("pub")).connect()
    sent = [
        f"{root}/a/temp",
        f"{root}/b/hum",
        f"{root}",
        f"{root}/a/b/temp",
        f"{root}//temp",
        f"other/{root}/a/temp",
    ]
    for t in sent:
        pub.publish(t, t.encode(), qos=1)
    sentinel = f"{root}/z/temp"
    pub.publish(sentinel, b"end", qos=1)

    got_plus = [m.topic for m in plus.expect_until(sentinel, b"end")]
    assert got_plus == [f"{root}/a/temp", f"{root}//temp", sentinel]
    got_hash = [m.topic for m in hash_.expect_until(sentinel, b"end")]
    assert got_hash == sent[:5] + [sentinel], "`#` also matches the parent level"
    got_all = [m.topic for m in all_.expect_until(sentinel, b"end")]
    assert got_all == sent + [sentinel]
    assert mid.expect().topic == f"other/{root}/a/temp", "`+` matches a whole first level"
    mid.expect_nothing(0.1)


@BOTH
def test_hash_does_not_match_dollar_topics(broker, mqtt_client, version):
    all_ = mqtt_client(version, client_id=unique("all")).connect()
    all_.subscribe("#", 0)
    plus = mqtt_client(version, client_id=unique("plus")).connect()
    plus.subscribe("+/x", 0)
    dollar = mqtt_client(version, client_id=unique("dollar")).connect()
    dollar.subscribe("$internal/#", 0)
    pub = mqtt_client(version, client_id=unique("pub")).connect()
    pub.publish("$internal/x", b"hidden", qos=1)
    m = dollar.expect()
    assert m.topic == "$internal/x"
    pub.publish("visible/x", b"end", qos=1)
    assert [m.topic for m in all_.expect_until("visible/x", b"end")] == ["visible/x"]
    assert [m.topic for m in plus.expect_until("visible/x", b"end")] == ["visible/x"]


@BOTH
def test_unsubscribe_stops_delivery(broker, mqtt_client, version):
    topic = unique("unsub") + "/t"
    sub = mqtt_client(version, client_id=unique("sub")).connect()
    sub.subscribe(topic, 1)
    pub = mqtt_client(version, client_id=unique("pub")).connect()
    pub.publish(topic, b"before", qos=1)
    assert sub.expect().payload == b"before"
    sub.unsubscribe(topic)
    pub.publish(topic, b"after", qos=1)
    sub.expect_nothing()


# --------------------------------------------------------------------------- MQTT 5 only


def test_v5_properties_pass_through(broker, mqtt_client):
    topic = unique("props") + "/req"
    sub = mqtt_client("5.0", client_id=unique("sub")).connect()
    sub.subscribe(topic, 1)
    pub = mqtt_client("5.0", client_id=unique("pub")).connect()
    user = [("k", "v"), ("k", "v2"), ("ünï", "cødé"), ("empty", "")]
    props = publish_props(
        UserProperty=user,
        ContentType="application/json; charset=utf-8",
        ResponseTopic="reply/" + topic,
        CorrelationData=b"\x00\x01corr\xff",
        PayloadFormatIndicator=1,
    )
    pub.publish(topic, b'{"t": 21.5}', qos=1, properties=props)
    m = sub.expect()
    got = m.properties
    assert m.payload == b'{"t": 21.5}'
    assert got.UserProperty == user, "user properties: all pairs, duplicates and order kept"
    assert got.ContentType == "application/json; charset=utf-8"
    assert got.ResponseTopic == "reply/" + topic
    assert got.CorrelationData == b"\x00\x01corr\xff"
    assert getattr(got, "PayloadFormatIndicator", None) == 1

    # A message without properties arrives without them.
    pub.publish(topic, b"plain", qos=1)
    m = sub.expect()
    for name in ("UserProperty", "ContentType", "ResponseTopic", "CorrelationData"):
        assert not hasattr(m.properties, name), f"{name} appeared on a message published without it"


def test_v5_properties_on_retained_and_will(broker, mqtt_client):
    topic = unique("props") + "/retained"
    pub = mqtt_client("5.0", client_id=unique("pub")).connect()
    pub.publish(topic, b"r", qos=1, retain=True, properties=publish_props(UserProperty=[("src", "retained")], ContentType="text/plain"))
    sub = mqtt_client("5.0", client_id=unique("sub")).connect()
    sub.subscribe(topic, 1)
    m = sub.expect()
    assert m.retain
    assert m.properties.UserProperty == [("src", "retained")]
    assert m.properties.ContentType == "text/plain"

    will_topic = unique("props") + "/will"
    sub.subscribe(will_topic, 1)
    will_props = Properties(PacketTypes.WILLMESSAGE)
    will_props.UserProperty = [("why", "crash")]
    will_props.ContentType = "text/plain"
    will_props.CorrelationData = b"w1"
    dying = mqtt_client(
        "5.0",
        client_id=unique("dying"),
        will={"topic": will_topic, "payload": b"bye", "qos": 1, "properties": will_props},
    ).connect()
    dying.drop()
    m = sub.expect()
    assert m.payload == b"bye"
    assert m.properties.UserProperty == [("why", "crash")]
    assert m.properties.ContentType == "text/plain"
    assert m.properties.CorrelationData == b"w1"


def test_v5_message_expiry(broker, mqtt_client):
    topic = unique("expiry") + "/t"
    # Online delivery: the interval is forwarded (minus time spent waiting, if any).
    sub = mqtt_client("5.0", client_id=unique("sub")).connect()
    sub.subscribe(topic, 1)
    pub = mqtt_client("5.0", client_id=unique("pub")).connect()
    pub.publish(topic, b"fresh", qos=1, properties=publish_props(MessageExpiryInterval=60))
    m = sub.expect()
    assert 58 <= m.properties.MessageExpiryInterval <= 60
    pub.publish(topic, b"forever", qos=1)
    m = sub.expect()
    assert not hasattr(m.properties, "MessageExpiryInterval")

    # Retained message that expires is no longer sent to new subscribers.
    rtopic = unique("expiry") + "/retained"
    pub.publish(rtopic, b"short-lived", qos=1, retain=True, properties=publish_props(MessageExpiryInterval=1))
    pub.publish(rtopic + "/keep", b"kept", qos=1, retain=True, properties=publish_props(MessageExpiryInterval=600))

    # Queued for an offline session: expired ones are dropped, others keep counting down.
    cid = unique("offline")
    off = mqtt_client("5.0", client_id=cid, clean=True, session_expiry=300).connect()
    off.subscribe(topic, 1)
    off.disconnect()
    pub.publish(topic, b"expires", qos=1, properties=publish_props(MessageExpiryInterval=1))
    pub.publish(topic, b"stays", qos=1, properties=publish_props(MessageExpiryInterval=600))

    time.sleep(2.2)  # the behaviour under test is the passing of time

    late = mqtt_client("5.0", client_id=unique("late")).connect()
    late.subscribe(rtopic + "/#", 1)
    m = late.expect()
    assert m.payload == b"kept", f"an expired retained message was delivered: {m.payload!r}"
    assert m.properties.MessageExpiryInterval <= 598
    late.expect_nothing()

    back = mqtt_client("5.0", client_id=cid, clean=False, session_expiry=300).connect()
    assert back.session_present
    m = back.expect()
    assert m.payload == b"stays", f"an expired queued message was delivered: {m.payload!r}"
    assert m.properties.MessageExpiryInterval <= 598, "expiry interval counts down while queued"
    back.expect_nothing()


def test_v5_subscription_identifier(broker, mqtt_client):
    root = unique("subid")
    sub = mqtt_client("5.0", client_id=unique("sub")).connect()
    p42 = Properties(PacketTypes.SUBSCRIBE)
    p42.SubscriptionIdentifier = 42
    sub.subscribe(f"{root}/+", 1, properties=p42)
    p7 = Properties(PacketTypes.SUBSCRIBE)
    p7.SubscriptionIdentifier = 268_435_455  # the largest allowed value
    sub.subscribe(f"{root}/only/#", 1, properties=p7)
    sub.subscribe(f"{root}/none", 1)

    pub = mqtt_client("5.0", client_id=unique("pub")).connect()
    pub.publish(f"{root}/a", b"one", qos=1)
    m = sub.expect()
    assert m.properties.SubscriptionIdentifier == [42]

    pub.publish(f"{root}/only/x", b"two", qos=1)
    m = sub.expect()
    assert m.properties.SubscriptionIdentifier == [268_435_455]

    # Matches both `root/+` (42) and `root/none` (no identifier): either one copy with [42],
    # or two copies, one with [42] and one with none.
    pub.publish(f"{root}/none", b"three", qos=1)
    pub.publish(f"{root}/only/end", b"end", qos=1)
    got = sub.expect_until(f"{root}/only/end", b"end")[:-1]
    ids = sorted(tuple(getattr(m.properties, "SubscriptionIdentifier", [])) for m in got)
    assert all(m.payload == b"three" for m in got)
    assert ids in ([(42,)], [(), (42,)]), f"subscription identifiers: {ids}"


def test_v5_overlapping_subscription_identifiers(broker, mqtt_client):
    root = unique("subid2")
    sub = mqtt_client("5.0", client_id=unique("sub")).connect()
    for ident, flt in ((1, f"{root}/+"), (2, f"{root}/#")):
        p = Properties(PacketTypes.SUBSCRIBE)
        p.SubscriptionIdentifier = ident
        sub.subscribe(flt, 1, properties=p)
    pub = mqtt_client("5.0", client_id=unique("pub")).connect()
    pub.publish(f"{root}/x", b"both", qos=1)
    pub.publish(f"{root}/x/end", b"end", qos=1)
    got = sub.expect_until(f"{root}/x/end", b"end")
    assert got[-1].properties.SubscriptionIdentifier == [2]
    ids = sorted(i for m in got[:-1] for i in m.properties.SubscriptionIdentifier)
    assert ids == [1, 2], "every matching subscription's identifier is sent [MQTT-3.3.4-3]"


def test_v5_no_local(broker, mqtt_client):
    topic = unique("nolocal") + "/chat"
    a = mqtt_client("5.0", client_id=unique("a")).connect()
    a.subscribe(topic, options=SubscribeOptions(qos=1, noLocal=True))
    b = mqtt_client("5.0", client_id=unique("b")).connect()
    b.subscribe(topic, options=SubscribeOptions(qos=1))

    a.publish(topic, b"from a", qos=1)
    assert b.expect().payload == b"from a"
    b.publish(topic, b"from b", qos=1)
    got = a.expect_until(topic, b"from b")
    assert [m.payload for m in got] == [b"from b"], "no-local: a client's own message came back"
    assert b.expect().payload == b"from b", "without no-local a client gets its own messages"
    a.expect_nothing()


def test_v5_shared_subscription(broker, mqtt_client):
    topic = unique("shared") + "/jobs"
    workers = [mqtt_client("5.0", client_id=unique(f"worker{i}")).connect() for i in range(2)]
    # Both members feed one inbox, tagged with the member's index.
    shared_inbox: "queue.Queue" = queue.Queue()
    for i, w in enumerate(workers):
        w.client.on_message = lambda _c, _u, m, i=i: shared_inbox.put((i, m))
        assert w.subscribe(f"$share/g/{topic}", 1) == [1]
    other_group = mqtt_client("5.0", client_id=unique("othergroup")).connect()
    other_group.subscribe(f"$share/h/{topic}", 1)
    plain = mqtt_client("5.0", client_id=unique("plain")).connect()
    plain.subscribe(topic, 1)

    pub = mqtt_client("5.0", client_id=unique("pub")).connect()
    n = 40
    sent = [f"job {i}".encode() for i in range(n)]
    for p in sent:
        pub.publish(topic, p, qos=1)

    # Everyone not in group g gets everything.
    assert [m.payload for m in plain.expect_n(n)] == sent
    assert [m.payload for m in other_group.expect_n(n)] == sent

    received = [[], []]
    for _ in range(n):
        try:
            i, m = shared_inbox.get(timeout=10)
        except queue.Empty:
            pytest.fail(f"group g got {[len(r) for r in received]} messages for {n} published")
        received[i].append(m)
    counts = [len(r) for r in received]
    assert sum(counts) == n, f"group g got {counts} messages for {n} published"
    assert all(c > 0 for c in counts), f"shared subscription not split between members: {counts}"
    all_payloads = sorted(m.payload for r in received for m in r)
    assert all_payloads == sorted(sent), "each message goes to exactly one member of the group"
    try:
        extra = shared_inbox.get(timeout=QUIET)
    except queue.Empty:
        extra = None
    assert extra is None, f"more than {n} deliveries to group g: {extra}"


def test_v5_shared_subscription_member_leaves(broker, mqtt_client):
    topic = unique("shared") + "/leave"
    stay = mqtt_client("5.0", client_id=unique("stay")).connect()
    stay.subscribe(f"$share/g/{topic}", 1)
    leave = mqtt_client("5.0", client_id=unique("leave")).connect()
    leave.subscribe(f"$share/g/{topic}", 1)
    leave.disconnect()
    pub = mqtt_client("5.0", client_id=unique("pub")).connect()
    for i in range(10):
        pub.publish(topic, f"{i}".encode(), qos=1)
    assert sorted(m.payload for m in stay.expect_n(10)) == sorted(f"{i}".encode() for i in range(10))


def test_v5_topic_alias_from_client(broker, mqtt_client):
    topic = unique("alias") + "/long/topic/name"
    sub = mqtt_client("5.0", client_id=unique("sub")).connect()
    sub.subscribe(topic, 1)
    pub = mqtt_client("5.0", client_id=unique("pub")).connect()
    pub.publish(topic, b"set", qos=1, properties=publish_props(TopicAlias=3))
    pub.publish("", b"use", qos=1, properties=publish_props(TopicAlias=3))
    got = sub.expect_n(2)
    assert [(m.topic, m.payload) for m in got] == [(topic, b"set"), (topic, b"use")]


def test_v5_session_expiry_zero_drops_session(broker, mqtt_client):
    topic = unique("expiry0") + "/t"
    cid = unique("short")
    c = mqtt_client("5.0", client_id=cid, clean=True, session_expiry=0).connect()
    c.subscribe(topic, 1)
    c.disconnect()
    again = mqtt_client("5.0", client_id=cid, clean=False, session_expiry=0).connect()
    assert not again.session_present, "session expiry 0: the session ends with the connection"


def test_v5_server_assigned_topic_aliases(broker, mqtt_client):
    """With Topic Alias Maximum 2, the broker sends aliases: topic + alias on first
    use, the alias and an empty topic on reuse, the least recently used alias
    replaced. paho-mqtt 2.2 decodes the PUBLISHes but leaves resolving inbound
    aliases to the application, so the test resolves them as a client must."""
    base = unique("fleet") + "/building-7/floor-3/room-12"
    a, b, c = f"{base}/a/temperature", f"{base}/b/temperature", f"{base}/c/temperature"
    props = Properties(PacketTypes.CONNECT)
    props.TopicAliasMaximum = 2
    sub = mqtt_client("5.0", client_id=unique("sub"), connect_properties=props).connect()
    sub.subscribe(base + "/#", 1)
    pub = mqtt_client("5.0", client_id=unique("pub")).connect()
    sequence = [a, a, b, a, c, b, c, a]
    for i, topic in enumerate(sequence):
        pub.publish(topic, str(i).encode(), qos=1)
    got = sub.expect_n(len(sequence))
    wire = [(m.topic, getattr(m.properties, "TopicAlias", None)) for m in got]
    assert wire == [
        (a, 1), ("", 1), (b, 2), ("", 1), (c, 2), (b, 1), ("", 2), (a, 1)
    ], wire
    aliases: dict = {}
    resolved = []
    for m in got:
        if m.topic:
            aliases[m.properties.TopicAlias] = m.topic
        resolved.append((aliases[m.properties.TopicAlias], m.payload))
    assert resolved == [(t, str(i).encode()) for i, t in enumerate(sequence)]


@pytest.fixture
def ka_broker(request, tmp_path):
    """A broker whose MQTT listener holds clients to a 2 s keep-alive."""
    b = start_broker(tmp_path, {"TERN_MQTT__MAX_KEEP_ALIVE_SECS": "2"})
    request.node._tern_broker = b
    yield b
    assert stop_broker(b) == 0


@pytest.mark.parametrize("asked", [0, 600])
def test_v5_keep_alive_above_the_maximum_gets_server_keep_alive(ka_broker, asked):
    c = MqttClient(ka_broker, "5.0", client_id=unique("ka"), keepalive=asked).connect()
    try:
        assert c.connack_properties.ServerKeepAlive == 2
        # paho adopts it and pings; 2.5 intervals later the connection is still up.
        time.sleep(5.0)
        assert not c.disconnected.is_set(), c.disconnect_reason
        c.subscribe("ka/t", 1)
    finally:
        c.close()


def test_v311_keep_alive_zero_is_held_to_the_maximum(ka_broker):
    c = MqttClient(ka_broker, "3.1.1", client_id=unique("ka"), keepalive=0).connect()
    try:
        # It never pings: closed after 1.5 x 2 s of silence.
        assert c.disconnected.wait(TIMEOUT), "still connected"
    finally:
        c.close()
