"""Selectors on subscribe (#22) with real clients: stomp.py's `selector`
header on topics, queues and streams, paho-mqtt 5.0 with the subscription
user property `selector`, HTTP server-sent events and pulls with
`selector=`; a bad selector refused on each protocol with its position.
"""

from __future__ import annotations

import json

import pytest
import requests
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from httputil import TIMEOUT, SseReader, base_url
from mqttutil import publish_props, unique
from stomputil import StompClient, stomp_client  # noqa: F401 (fixture)
from ternproc import start_broker, stop_broker

SELECTOR = "bucket = 3 AND payload.temp > 20"


def reading(bucket: int, temp: float) -> tuple:
    return {"bucket": str(bucket)}, json.dumps({"temp": temp}).encode()


def subscribe_properties(selector: str) -> Properties:
    props = Properties(PacketTypes.SUBSCRIBE)
    props.UserProperty = [("selector", selector)]
    return props


def test_stomp_topic_subscription_gets_only_what_its_selector_matches(stomp_client):
    picky = stomp_client()
    picky.subscribe("/topic/sensors/#", "picky", selector=SELECTOR)
    everything = stomp_client()
    everything.subscribe("/topic/sensors/#", "all")
    pub = stomp_client()
    for bucket, temp in [(3, 25), (3, 10), (4, 30), (3, 21.5)]:
        headers, body = reading(bucket, temp)
        pub.send("/topic/sensors/room1", body, headers)
    got = picky.expect_n(2)
    assert [json.loads(f.body)["temp"] for f in got] == [25, 21.5]
    picky.expect_nothing()
    assert len(everything.expect_n(4)) == 4


def test_stomp_selectors_of_one_connection_on_one_topic_each_apply(stomp_client):
    c = stomp_client()
    c.subscribe("/topic/t", "three", selector="bucket = 3")
    c.subscribe("/topic/t", "four", selector="bucket = 4")
    pub = stomp_client()
    for bucket in [3, 4, 5]:
        pub.send("/topic/t", f"b{bucket}".encode(), {"bucket": str(bucket)})
    got = sorted((f.headers["subscription"], f.body) for f in c.expect_n(2))
    assert got == [("four", b"b4"), ("three", b"b3")]
    c.expect_nothing()


def test_stomp_queue_consumer_with_a_selector_leaves_the_rest_for_another(stomp_client):
    a = stomp_client()
    a.subscribe("/queue/jobs", "a", ack="client-individual", selector="kind = 'a'")
    pub = stomp_client()
    # No consumer matches it yet: it waits in the queue.
    pub.send("/queue/jobs", b"b0", {"kind": "b"})
    a.expect_nothing()
    b = stomp_client()
    b.subscribe("/queue/jobs", "b", ack="client-individual", selector="kind <> 'a'")
    first = b.expect()
    assert first.body == b"b0"
    b.ack(first)
    for i in range(3):
        pub.send("/queue/jobs", f"a{i}".encode(), {"kind": "a"})
        pub.send("/queue/jobs", f"b{i + 1}".encode(), {"kind": "b"})
    got_a = a.expect_n(3)
    got_b = b.expect_n(3)
    assert [f.body for f in got_a] == [b"a0", b"a1", b"a2"]
    assert [f.body for f in got_b] == [b"b1", b"b2", b"b3"]
    for f in got_a:
        a.ack(f)
    for f in got_b:
        b.ack(f)


def test_stomp_stream_subscription_with_a_selector(tmp_path):
    path = tmp_path / "tern.toml"
    path.write_text('[[stream]]\nname = "sensors"\ntopics = ["sensors/#"]\n')
    broker = start_broker(tmp_path, args=["--config", str(path)])
    try:
        pub = StompClient(broker).connect()
        for bucket in range(6):
            pub.send("/topic/sensors/a", f"m{bucket}".encode(), {"bucket": str(bucket % 3)})
        sub = StompClient(broker).connect()
        sub.subscribe("/stream/sensors", "s", selector="bucket = 1", **{"x-stream-offset": "first"})
        assert [f.body for f in sub.expect_n(2)] == [b"m1", b"m4"]
        sub.expect_nothing()
        pub.close()
        sub.close()
    finally:
        assert stop_broker(broker) == 0


def test_paho_mqtt5_subscription_user_property_selects_for_every_filter(mqtt_client):
    sub = mqtt_client("5.0", client_id=unique("sub")).connect()
    codes = sub.subscribe([("a/#", 1), ("b/#", 1)], properties=subscribe_properties("bucket BETWEEN 2 AND 3"))
    assert codes == [1, 1]
    pub = mqtt_client("5.0", client_id=unique("pub")).connect()
    for topic in ["a/x", "b/y"]:
        for bucket in range(5):
            props = publish_props(UserProperty=[("bucket", str(bucket))])
            pub.publish(topic, f"{topic}:{bucket}".encode(), qos=1, properties=props)
    got = sorted(m.payload for m in sub.expect_n(4))
    assert got == [b"a/x:2", b"a/x:3", b"b/y:2", b"b/y:3"]
    sub.expect_nothing()


def test_paho_mqtt5_selector_on_json_payload_and_retained(mqtt_client):
    pub = mqtt_client("5.0", client_id=unique("pub")).connect()
    pub.publish("r/hot", json.dumps({"temp": 30}).encode(), qos=1, retain=True)
    pub.publish("r/cold", json.dumps({"temp": 5}).encode(), qos=1, retain=True)
    sub = mqtt_client("5.0", client_id=unique("sub")).connect()
    assert sub.subscribe("r/#", qos=1, properties=subscribe_properties("payload.temp > 20")) == [1]
    retained = sub.expect()
    assert retained.topic == "r/hot" and retained.retain
    sub.expect_nothing()


def test_bad_selector_is_refused_with_its_position_on_every_protocol(broker, mqtt_client, stomp_client):
    bad = "bucket = 3 AND"
    expected = "selector error at byte 14: expected a name, a literal, '(', NOT or '-', found the end"
    # MQTT 5: SUBACK 0x8F for every filter, the error as reason string.
    m = mqtt_client("5.0", client_id=unique("sub")).connect()
    assert m.subscribe([("a/#", 1), ("b", 0)], properties=subscribe_properties(bad)) == [0x8F, 0x8F]
    assert m.suback_properties.ReasonString == expected
    # STOMP: ERROR with the same text.
    s = stomp_client()
    s.conn.subscribe("/topic/a", "x", headers={"selector": bad})
    error = s.expect_error()
    assert error.headers["message"] == expected
    # HTTP: 400 with it, for server-sent events and pulls.
    url = base_url(broker)
    r = requests.get(f"{url}/events", params={"topic": "a/#", "selector": bad}, timeout=TIMEOUT)
    assert r.status_code == 400 and expected in r.text, r.text
    r = requests.post(f"{url}/queues/jobs/pull", params={"selector": bad}, timeout=TIMEOUT)
    assert r.status_code == 400 and expected in r.text, r.text


def test_http_server_sent_events_and_pull_with_a_selector(broker, mqtt_client):
    url = base_url(broker)
    pub = mqtt_client("5.0", client_id=unique("pub")).connect()
    pub.publish("live/old", b"skip", qos=1, retain=True, properties=publish_props(UserProperty=[("bucket", "1")]))
    pub.publish("live/kept", b"keep", qos=1, retain=True, properties=publish_props(UserProperty=[("bucket", "3")]))
    events = SseReader(f"{url}/events", params={"topic": "live/#", "selector": "bucket = 3"})
    assert events.response.status_code == 200
    try:
        first = events.expect()
        assert first["data"]["topic"] == "live/kept"
        for bucket in [1, 3, 2]:
            props = publish_props(UserProperty=[("bucket", str(bucket))])
            pub.publish("live/now", f"n{bucket}".encode(), qos=1, properties=props)
        ev = events.expect()
        assert ev["data"]["payload"] == "n3"
        with pytest.raises(AssertionError):
            events.expect(timeout=0.5)
    finally:
        events.close()
    for kind in ["a", "b", "a"]:
        pub.publish("$queue/work", kind.encode(), qos=1, properties=publish_props(UserProperty=[("kind", kind)]))
    r = requests.post(f"{url}/queues/work/pull", params={"max": 10, "selector": "kind = 'b'"}, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    assert [x["payload"] for x in r.json()["messages"]] == ["b"]
    r = requests.post(f"{url}/queues/work/pull", params={"max": 10}, timeout=TIMEOUT)
    assert [x["payload"] for x in r.json()["messages"]] == ["a", "a"]


def test_a_persistent_mqtt5_subscription_keeps_its_selector_over_a_restart(tmp_path):
    from mqttutil import MqttClient  # noqa: PLC0415

    first = start_broker(tmp_path)
    try:
        sub = MqttClient(first, "5.0", client_id="keeper", clean=False, session_expiry=3600).connect()
        assert sub.subscribe("kept/#", qos=1, properties=subscribe_properties("bucket = 3")) == [1]
        sub.close()
    finally:
        assert stop_broker(first) == 0
    second = start_broker(tmp_path)
    try:
        pub = MqttClient(second, "5.0", client_id=unique("pub")).connect()
        for bucket in [1, 3, 2, 3]:
            props = publish_props(UserProperty=[("bucket", str(bucket))])
            pub.publish("kept/x", f"b{bucket}".encode(), qos=1, properties=props)
        sub = MqttClient(second, "5.0", client_id="keeper", clean=False, session_expiry=3600).connect()
        assert sub.session_present
        assert [m.payload for m in sub.expect_n(2)] == [b"b3", b"b3"]
        sub.expect_nothing()
        sub.close()
        pub.close()
    finally:
        assert stop_broker(second) == 0
