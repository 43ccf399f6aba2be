"""paho-mqtt ⇄ stomp.py through one Tern broker: payloads, QoS, retained
messages, user properties ⇄ headers, wildcards and queues from both sides."""

from __future__ import annotations

import time

import pytest

from mqttutil import publish_props, unique
from stomputil import stomp_client  # noqa: F401 (fixture)

QOS = pytest.mark.parametrize("qos", [0, 1, 2])
MQTT_VERSIONS = pytest.mark.parametrize("version", ["3.1", "3.1.1", "5.0"])
STOMP_VERSIONS = pytest.mark.parametrize("stomp_version", ["1.0", "1.1", "1.2"])


@QOS
@MQTT_VERSIONS
@STOMP_VERSIONS
def test_paho_publisher_to_stomp_subscriber(mqtt_client, stomp_client, version, stomp_version, qos):
    s = stomp_client(stomp_version)
    s.subscribe("/topic/sensors/room1/temp", "s")
    m = mqtt_client(version, client_id=unique("pub")).connect()
    payload = b"21.5\x00\xff"
    m.publish("sensors/room1/temp", payload, qos=qos)
    frame = s.expect()
    assert frame.body == payload
    assert frame.headers["destination"] == "/topic/sensors/room1/temp"


@QOS
@MQTT_VERSIONS
@STOMP_VERSIONS
def test_stomp_sender_to_paho_subscriber(mqtt_client, stomp_client, version, stomp_version, qos):
    m = mqtt_client(version, client_id=unique("sub")).connect()
    m.subscribe("commands/#", qos=2)
    s = stomp_client(stomp_version)
    s.send("/topic/commands/lamp", b"on", {"qos": str(qos)})
    msg = m.expect()
    assert (msg.topic, msg.payload, msg.qos) == ("commands/lamp", b"on", qos)


def test_stomp_send_defaults_to_qos_1(mqtt_client, stomp_client):
    m = mqtt_client("3.1.1", client_id=unique("sub")).connect()
    m.subscribe("defaults", qos=2)
    stomp_client().send("/topic/defaults", b"x")
    assert m.expect().qos == 1


def test_user_properties_become_headers(mqtt_client, stomp_client):
    s = stomp_client()
    s.subscribe("/topic/props", "s")
    m = mqtt_client("5.0", client_id=unique("pub")).connect()
    props = publish_props(
        UserProperty=[("site", "north"), ("unit", "C")],
        ContentType="application/json",
        ResponseTopic="replies/42",
        CorrelationData=b"corr-42",
        MessageExpiryInterval=600,
    )
    m.publish("props", b"{}", qos=1, properties=props)
    h = s.expect().headers
    assert h["site"] == "north" and h["unit"] == "C"
    assert h["content-type"] == "application/json"
    assert h["reply-to"] == "/topic/replies/42"
    assert h["correlation-id"] == "corr-42"
    expires = int(h["expires"])
    now_ms = int(time.time() * 1000)
    assert now_ms + 590_000 < expires < now_ms + 610_000


def test_headers_become_user_properties(mqtt_client, stomp_client):
    m = mqtt_client("5.0", client_id=unique("sub")).connect()
    m.subscribe("headers", qos=1)
    expires = str(int(time.time() * 1000) + 60_000)
    stomp_client().send(
        "/topic/headers",
        b"body",
        {
            "site": "south",
            "content-type": "text/plain",
            "reply-to": "/queue/answers",
            "correlation-id": "c-1",
            "expires": expires,
        },
    )
    msg = m.expect()
    p = msg.properties
    assert ("site", "south") in p.UserProperty
    assert p.ContentType == "text/plain"
    assert p.ResponseTopic == "$queue/answers"
    assert p.CorrelationData == b"c-1"
    assert 55 <= p.MessageExpiryInterval <= 60


def test_retained_paho_message_reaches_a_new_stomp_subscriber(mqtt_client, stomp_client):
    m = mqtt_client("3.1.1", client_id=unique("pub")).connect()
    m.publish("status/dev-1", b"online", qos=1, retain=True)
    s = stomp_client()
    s.subscribe("/topic/status/+", "s")
    frame = s.expect()
    assert frame.body == b"online"
    assert frame.headers["retain"] == "true"


def test_retained_stomp_message_reaches_a_new_paho_subscriber(mqtt_client, stomp_client):
    stomp_client().send("/topic/config/site", b"v2", {"retain": "true"})
    m = mqtt_client("5.0", client_id=unique("sub")).connect()
    m.subscribe("config/#", qos=1)
    msg = m.expect()
    assert msg.retain and msg.payload == b"v2"


def test_wildcards_both_ways(mqtt_client, stomp_client):
    s = stomp_client()
    s.subscribe("/topic/a/+/c", "plus")
    s.subscribe("/topic/x/#", "hash")
    m = mqtt_client("3.1.1", client_id=unique("both")).connect()
    m.subscribe("x/#", qos=1)
    m.publish("a/b/c", b"from-mqtt", qos=1)
    frame = s.expect()
    assert (frame.headers["subscription"], frame.body) == ("plus", b"from-mqtt")
    s.send("/topic/x/y/z", b"from-stomp")
    frame = s.expect()
    assert (frame.headers["subscription"], frame.body) == ("hash", b"from-stomp")
    msg = m.expect()
    assert (msg.topic, msg.payload) == ("x/y/z", b"from-stomp")


def test_queue_paho_producer_stomp_consumer(mqtt_client, stomp_client):
    m = mqtt_client("3.1.1", client_id=unique("producer")).connect()
    for i in range(3):
        m.publish("$queue/jobs", str(i).encode(), qos=1)
    s = stomp_client()
    s.subscribe("/queue/jobs", "q", ack="client-individual")
    frames = s.expect_n(3)
    assert [f.body for f in frames] == [b"0", b"1", b"2"]
    assert frames[0].headers["destination"] == "/queue/jobs"
    for f in frames:
        s.ack(f)


def test_queue_stomp_producer_paho_consumer(mqtt_client, stomp_client):
    m = mqtt_client("5.0", client_id=unique("worker")).connect()
    m.subscribe("$queue/tasks", qos=1)
    stomp_client().send("/queue/tasks", b"task-1")
    msg = m.expect()
    assert (msg.topic, msg.payload) == ("$queue/tasks", b"task-1")


def test_queue_consumers_from_both_sides_compete(mqtt_client, stomp_client):
    s = stomp_client()
    s.subscribe("/queue/shared", "q")
    m = mqtt_client("3.1.1", client_id=unique("worker")).connect()
    m.subscribe("$queue/shared", qos=1)
    producer = stomp_client()
    for i in range(6):
        producer.send("/queue/shared", str(i).encode())
    from_stomp = [f.body for f in s.expect_n(3)]
    from_mqtt = [msg.payload for msg in m.expect_n(3)]
    s.expect_nothing()
    m.expect_nothing()
    assert sorted(from_stomp + from_mqtt) == [str(i).encode() for i in range(6)]
