"""Durable streams (#20) on the NATS store backend (#19): a stream is one
JetStream stream, cluster-wide. Messages appended over MQTT on one node are
replayed on another over MQTT 5 and STOMP from `first`, an offset and a time;
a reader live on the other node gets them too; JetStream applies the
retention limits; a node restart keeps the stream and its offsets go on.
A stream created (or deleted) through the admin API on one node is read (or
gone) on another without a restart; a replay on a node flooded with QoS 0
messages into the stream completes.
Real paho-mqtt and stomp.py clients, two tern nodes on one nats-server.
"""

from __future__ import annotations

import socket
import struct
import threading
import time

from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

from mqttutil import TIMEOUT, MqttClient, unique
from stomputil import StompClient
from rawmqtt import PUBLISH, RawMqtt
from securityutil import _mqtt_str, _remaining_length
from test_streams import CONFIG, admin  # sensors/#, and small/# keeping 10; admin API calls

NATS_STORE = {"TERN_STORAGE__BACKEND": "nats", "TERN_HTTP__ADMIN_TOKEN": "t0ken"}


def start(nodes, nats, name: str, tmp_path):
    path = tmp_path / "tern.toml"
    path.write_text(CONFIG)
    return nodes.start(name, [nats.url], NATS_STORE, args=["--config", str(path)])


def await_log(node, text: str, timeout: float = TIMEOUT) -> float:
    """Waits for `text` in the node's log; the seconds it took."""
    started = time.monotonic()
    while text not in node.stderr_text():
        assert time.monotonic() - started < timeout, f"{node.node} never logged {text!r}"
        time.sleep(0.01)
    return time.monotonic() - started


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


def test_a_stream_created_through_the_admin_api_reaches_the_other_node_without_a_restart(nats, nodes, tmp_path):
    a = start(nodes, nats, "tern-a", tmp_path)
    b = start(nodes, nats, "tern-b", tmp_path)
    assert admin(b, "GET", "/api/streams/made")[0] == 404
    status, body = admin(a, "POST", "/api/streams", b'{"name": "made", "topics": ["made/#"]}')
    assert (status, body) == (201, {"created": "made"})
    took = await_log(b, "stream created by another node declared here")
    print(f"tern-b knew of the stream {took * 1000:.0f} ms after tern-a's 201")
    status, info = admin(b, "GET", "/api/streams/made")
    assert (status, info["topics"]) == (200, ["made/#"])

    # Appended on b (the node that did not create it), replayed on a and b.
    publish(b, "made/x", [f"m{i}".encode() for i in range(4)])
    assert mqtt_offsets(mqtt_replay(a, "first", 4, stream="made")) == [0, 1, 2, 3]
    assert stomp_offsets(stomp_replay(b, "offset=2", 2, stream="made")) == [2, 3]

    # A purge on a: b's first offset follows from JetStream (once a second).
    assert admin(a, "DELETE", "/api/streams/made/messages") == (200, {"purged": 4})
    deadline = time.monotonic() + TIMEOUT
    while admin(b, "GET", "/api/streams/made")[1]["first_offset"] != 4:
        assert time.monotonic() < deadline, "tern-b never saw the purge"
        time.sleep(0.05)

    # Deleted on b: gone on a too, and a config stream cannot be deleted from afar.
    assert admin(b, "DELETE", "/api/streams/made")[0] == 200
    await_log(a, "stream deleted by another node removed here")
    assert admin(a, "GET", "/api/streams/made")[0] == 404
    assert admin(a, "DELETE", "/api/streams/sensors")[0] == 409
    assert admin(b, "GET", "/api/streams/sensors")[0] == 200


def qos0_flood(node, topic: str, stop: threading.Event) -> RawMqtt:
    """A raw MQTT connection sending QoS 0 PUBLISHes of 64 bytes on `topic`
    as fast as the broker reads them, from a thread, until `stop` is set."""
    raw = RawMqtt(node, unique("flood"), clean=True)
    body = _mqtt_str(topic) + b"x" * 64
    packet = bytes([PUBLISH << 4]) + _remaining_length(len(body)) + body
    burst = packet * 1000
    raw.sock.settimeout(None)

    def flood() -> None:
        try:
            while not stop.is_set():
                raw.sock.sendall(burst)
        except OSError:
            pass  # closed by the test

    threading.Thread(target=flood, daemon=True).start()
    return raw


def test_a_replay_completes_while_a_qos0_flood_appends_to_the_stream(nats, nodes, tmp_path):
    a = start(nodes, nats, "tern-a", tmp_path)
    # 3,000 kept messages (QoS 1: each acknowledged once in the stream).
    pub = MqttClient(a, "5.0", client_id=unique("p"))
    pub.client.max_inflight_messages_set(200)
    pub.connect()
    infos = [pub.client.publish("sensors/fill", struct.pack(">I", i), qos=1) for i in range(3000)]
    for info in infos:
        info.wait_for_publish(TIMEOUT * 3)
    pub.close()

    stop = threading.Event()
    floods = [qos0_flood(a, "sensors/flood", stop) for _ in range(2)]
    try:
        # The flood is in the stream (not just in the sockets) before the replay starts.
        deadline = time.monotonic() + TIMEOUT * 3
        while admin(a, "GET", "/api/streams/sensors")[1]["messages"] < 3000 + 20_000:
            assert time.monotonic() < deadline, "the flood never reached the stream"
            time.sleep(0.05)
        # A new client's handshake, its subscription and the whole replay go
        # through while the flood goes on.
        sub = MqttClient(a, "5.0", client_id=unique("r")).connect()
        props = Properties(PacketTypes.SUBSCRIBE)
        props.UserProperty = [("stream-offset", "first")]
        assert sub.subscribe("$stream/sensors/sensors/fill", qos=1, properties=props) == [1]
        got = sub.expect_n(3000, timeout=60)
        assert mqtt_offsets(got) == list(range(3000))
        assert [struct.unpack(">I", m.payload)[0] for m in got] == list(range(3000))
        assert admin(a, "GET", "/api/streams/sensors")[0] == 200, "the admin API answers too"
        sub.close()
    finally:
        stop.set()
        for raw in floods:
            raw.sock.close()
