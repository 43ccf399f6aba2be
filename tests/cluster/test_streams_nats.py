"""Durable streams (#20) on the NATS store backend (#19): a stream is one
JetStream stream, cluster-wide. Messages appended over MQTT on one node are
replayed on another over MQTT 5 and STOMP from `first`, an offset and a time;
a reader live on the other node gets them too; JetStream applies the
retention limits; a node restart keeps the stream and its offsets go on.
Real paho-mqtt and stomp.py clients, two tern nodes on one nats-server.
"""

from __future__ import annotations

import time

from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

from mqttutil import TIMEOUT, MqttClient, unique
from stomputil import StompClient
from test_streams import CONFIG  # sensors/#, and small/# keeping 10

NATS_STORE = {"TERN_STORAGE__BACKEND": "nats"}

def start(nodes, nats, name: str, tmp_path):
    path = tmp_path / "tern.toml"
    path.write_text(CONFIG)
    return nodes.start(name, [nats.url], NATS_STORE, args=["--config", str(path)])


def mqtt_offsets(messages) -> list:
    return [int(dict(m.properties.UserProperty)["stream-offset"]) for m in messages]


def stomp_offsets(frames) -> list:
    return [int(f.headers["x-stream-offset"]) for f in frames]


def mqtt_replay(node, position: str, n: int, stream: str = "sensors") -> list:
    sub = MqttClient(node, "5.0", client_id=unique("r")).connect()
    try:
        props = Properties(PacketTypes.SUBSCRIBE)
        props.UserProperty = [("stream-offset", position)]
        assert sub.subscribe(f"$stream/{stream}/#", qos=1, properties=props) == [1]
        got = sub.expect_n(n)
        sub.expect_nothing()
        return got
    finally:
        sub.close()


def stomp_replay(node, position: str, n: int, stream: str = "sensors") -> list:
    sub = StompClient(node, "1.2").connect()
    try:
        sub.subscribe(f"/stream/{stream}", id="s", **{"x-stream-offset": position})
        frames = sub.expect_n(n)
        sub.expect_nothing()
        return frames
    finally:
        sub.conn.disconnect()


def publish(node, topic: str, payloads) -> None:
    """QoS 1 over MQTT: each PUBACK comes after JetStream acknowledged the append."""
    pub = MqttClient(node, "5.0", client_id=unique("p")).connect()
    try:
        for payload in payloads:
            pub.publish(topic, payload, qos=1)
    finally:
        pub.close()


def test_appends_on_one_node_replay_on_another_over_mqtt_and_stomp(nats, nodes, tmp_path):
    a = start(nodes, nats, "tern-a", tmp_path)
    b = start(nodes, nats, "tern-b", tmp_path)
    publish(a, "sensors/room1", [f"m{i}".encode() for i in range(5)])
    # The next whole second: the messages after it are found by their time.
    since = int(time.time()) + 1
    time.sleep(max(0.0, since - time.time()) + 0.05)
    publish(a, "sensors/room2", [f"m{i}".encode() for i in range(5, 10)])

    got = mqtt_replay(b, "first", 10)
    assert mqtt_offsets(got) == list(range(10))
    assert [m.payload for m in got] == [f"m{i}".encode() for i in range(10)]
    assert [m.topic for m in got[4:6]] == ["sensors/room1", "sensors/room2"]
    assert mqtt_offsets(mqtt_replay(b, "offset=4", 6)) == list(range(4, 10))
    assert mqtt_offsets(mqtt_replay(b, f"timestamp={since}", 5)) == list(range(5, 10))

    frames = stomp_replay(b, "first", 10)
    assert stomp_offsets(frames) == list(range(10))
    assert frames[9].body == b"m9"
    assert frames[9].headers["destination"] == "/topic/sensors/room2"
    assert stomp_offsets(stomp_replay(b, "offset=7", 3)) == [7, 8, 9]
    assert stomp_offsets(stomp_replay(b, f"timestamp={since}", 5)) == list(range(5, 10))
    assert stomp_offsets(stomp_replay(b, "last", 1)) == [9]

    # A reader live on tern-b gets what tern-a appends (from JetStream, within about a second).
    live = StompClient(b, "1.2").connect()
    live.subscribe("/stream/sensors", id="l", **{"x-stream-offset": "next"})
    publish(a, "sensors/room3", [b"m10", b"m11"])
    frames = live.expect_n(2, timeout=TIMEOUT)
    assert [(f.body, f.headers["x-stream-offset"]) for f in frames] == [(b"m10", "10"), (b"m11", "11")]
    live.expect_nothing()
    live.conn.disconnect()


def test_retention_limits_apply_and_a_restart_keeps_the_stream(nats, nodes, tmp_path):
    a = start(nodes, nats, "tern-a", tmp_path)
    b = start(nodes, nats, "tern-b", tmp_path)
    publish(a, "small/x", [f"s{i}".encode() for i in range(13)])
    # max_messages = 10: the oldest three went.
    kept = list(range(3, 13))
    assert mqtt_offsets(mqtt_replay(b, "first", 10, stream="small")) == kept
    assert stomp_offsets(stomp_replay(b, "first", 10, stream="small")) == kept

    publish(a, "sensors/r", [b"before-0", b"before-1", b"before-2"])
    assert nodes.stop("tern-a") == 0
    assert nodes.stop("tern-b") == 0
    a = start(nodes, nats, "tern-a", tmp_path)
    got = mqtt_replay(a, "first", 3)
    assert (mqtt_offsets(got), got[2].payload) == ([0, 1, 2], b"before-2")
    # Offsets go on after the restart, never repeat.
    publish(a, "sensors/r", [b"after"])
    frames = stomp_replay(a, "offset=2", 2)
    assert [(f.body, f.headers["x-stream-offset"]) for f in frames] == [(b"before-2", "2"), (b"after", "3")]
    assert stomp_offsets(stomp_replay(a, "first", 10, stream="small")) == kept
