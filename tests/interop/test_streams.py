"""Durable topic streams (#20) with real clients: stomp.py with x-stream-offset
(every start position, errors), paho-mqtt 5 with the stream-offset user
property, mosquitto_sub with the MQTT 3.1.1 form, the live/replay boundary
under concurrent publishing, retention, purge-free restarts.

Each test starts tern with a config file declaring the streams (the
environment still moves every listener to port 0 and the store to the test's
own directory).
"""

from __future__ import annotations

import subprocess
import threading
import time

import pytest
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

from mqttutil import MqttClient
from stomputil import StompClient
from ternproc import start_broker, stop_broker

CONFIG = """
[[stream]]
name = "sensors"
topics = ["sensors/#"]

[[stream]]
name = "small"
topics = ["small/#"]
max_messages = 10
"""


def start(tmp_path, config: str = CONFIG):
    path = tmp_path / "tern.toml"
    path.write_text(config)
    return start_broker(tmp_path, args=["--config", str(path)])


@pytest.fixture
def streams_broker(request, tmp_path):
    b = start(tmp_path)
    request.node._tern_broker = b
    yield b
    assert stop_broker(b) == 0


def stomp(broker) -> StompClient:
    return StompClient(broker, "1.2").connect()


def offsets(frames) -> list:
    return [int(f.headers["x-stream-offset"]) for f in frames]


def publish_stomp(client: StompClient, n: int, topic: str = "sensors/a", start: int = 0) -> None:
    for i in range(start, start + n):
        client.send(f"/topic/{topic}", f"m{i}".encode())


def test_stomp_reads_from_every_start_position(streams_broker):
    pub = stomp(streams_broker)
    publish_stomp(pub, 5)
    cases = {
        "first": [0, 1, 2, 3, 4],
        "last": [4],
        "offset=2": [2, 3, 4],
        "3": [3, 4],
        "timestamp=0": [0, 1, 2, 3, 4],
        "-10m": [0, 1, 2, 3, 4],
    }
    for position, expected in cases.items():
        sub = stomp(streams_broker)
        sub.subscribe("/stream/sensors", id="s", **{"x-stream-offset": position})
        frames = sub.expect_n(len(expected))
        assert offsets(frames) == expected, position
        assert frames[0].headers["destination"] == "/topic/sensors/a"
        assert frames[-1].body == f"m{expected[-1]}".encode()
        sub.expect_nothing()
        sub.conn.disconnect()
    # next (and no header at all): only what comes after the SUBSCRIBE.
    nxt = stomp(streams_broker)
    nxt.subscribe("/stream/sensors", id="n", **{"x-stream-offset": "next"})
    default = stomp(streams_broker)
    default.subscribe("/stream/sensors", id="d")
    nxt.expect_nothing()
    publish_stomp(pub, 1, start=5)
    assert offsets([nxt.expect()]) == [5]
    assert offsets([default.expect()]) == [5]


def test_stomp_stream_filter_narrows_to_matching_topics(streams_broker):
    pub = stomp(streams_broker)
    publish_stomp(pub, 2, topic="sensors/a")
    publish_stomp(pub, 2, topic="sensors/b", start=2)
    sub = stomp(streams_broker)
    sub.subscribe("/stream/sensors/sensors/b", id="s", **{"x-stream-offset": "first"})
    frames = sub.expect_n(2)
    assert offsets(frames) == [2, 3]
    sub.expect_nothing()


@pytest.mark.parametrize(
    "destination,position,reason",
    [
        ("/stream/nope", "first", 'unknown stream "nope"'),
        ("/stream/sensors", "soon", "malformed stream position"),
        ("/stream/sensors", "offset=1000", "beyond the end"),
        ("/stream/sensors", f"timestamp={int(time.time()) + 3600}", "in the future"),
    ],
)
def test_stomp_bad_stream_subscriptions_get_an_error_naming_the_problem(
    streams_broker, destination, position, reason
):
    sub = stomp(streams_broker)
    sub.conn.subscribe(destination, "s", headers={"x-stream-offset": position})
    error = sub.expect_error()
    assert reason in error.headers["message"], error.headers


def test_paho_mqtt5_reads_a_stream_with_the_stream_offset_property(streams_broker):
    pub = stomp(streams_broker)
    publish_stomp(pub, 3)
    sub = MqttClient(streams_broker, "5.0").connect()
    props = Properties(PacketTypes.SUBSCRIBE)
    props.UserProperty = [("stream-offset", "offset=1")]
    sub.subscribe("$stream/sensors/#", qos=1, properties=props)
    got = sub.expect_n(2)
    assert [m.topic for m in got] == ["sensors/a", "sensors/a"]
    assert [m.payload for m in got] == [b"m1", b"m2"]
    assert [dict(m.properties.UserProperty)["stream-offset"] for m in got] == ["1", "2"]
    # MQTT publishes, STOMP replays (and the reverse above).
    sub.publish("sensors/x", b"from-mqtt", qos=1)
    live = sub.expect()
    assert dict(live.properties.UserProperty)["stream-offset"] == "3"
    reader = stomp(streams_broker)
    reader.subscribe("/stream/sensors", id="s", **{"x-stream-offset": "last"})
    frame = reader.expect()
    assert (frame.body, frame.headers["x-stream-offset"]) == (b"from-mqtt", "3")
    sub.close()


def test_paho_mqtt5_unknown_stream_is_refused_with_0x8f(streams_broker):
    sub = MqttClient(streams_broker, "5.0").connect()
    codes = sub.subscribe("$stream/nope/#", qos=1)
    assert [int(c.value) if hasattr(c, "value") else int(c) for c in codes] == [0x8F]
    sub.close()


def test_mosquitto_sub_311_reads_with_the_position_in_the_filter(streams_broker):
    pub = stomp(streams_broker)
    publish_stomp(pub, 4)
    out = subprocess.run(
        [
            "mosquitto_sub", "-V", "311", "-h", streams_broker.host,
            "-p", str(streams_broker.mqtt_port), "-q", "1", "-C", "2", "-W", "10",
            "-v", "-t", "$stream/sensors/@offset=2/#",
        ],
        capture_output=True, text=True, timeout=20,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["sensors/a m2", "sensors/a m3"]


def test_replay_meets_live_publishing_without_gap_or_duplicate(streams_broker):
    pub = MqttClient(streams_broker, "5.0").connect()
    for i in range(300):
        pub.publish("sensors/a", f"{i}".encode(), qos=1)
    total = 3000
    done = threading.Event()

    def keep_publishing():
        for i in range(300, total):
            pub.publish("sensors/a", f"{i}".encode(), qos=1)
        done.set()

    sub = stomp(streams_broker)
    publisher = threading.Thread(target=keep_publishing)
    publisher.start()
    sub.subscribe("/stream/sensors", id="s", **{"x-stream-offset": "first"})
    frames = sub.expect_n(total, timeout=60)
    publisher.join(60)
    assert done.is_set()
    assert offsets(frames) == list(range(total))
    assert [f.body for f in frames] == [f"{i}".encode() for i in range(total)]
    sub.expect_nothing()
    pub.close()


def test_retention_by_count_keeps_the_newest(streams_broker):
    pub = stomp(streams_broker)
    publish_stomp(pub, 30, topic="small/t")
    deadline = time.monotonic() + 10
    while True:
        sub = stomp(streams_broker)
        sub.subscribe("/stream/small", id="s", **{"x-stream-offset": "first"})
        first = offsets([sub.expect()])[0]
        sub.conn.disconnect()
        if first == 20 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert first == 20


def test_restart_keeps_offsets_dense_and_monotonic(tmp_path):
    broker = start(tmp_path)
    pub = stomp(broker)
    publish_stomp(pub, 5)
    pub.conn.disconnect()
    assert stop_broker(broker) == 0
    broker = start(tmp_path)
    try:
        pub = stomp(broker)
        publish_stomp(pub, 3, start=5)
        sub = stomp(broker)
        sub.subscribe("/stream/sensors", id="s", **{"x-stream-offset": "first"})
        frames = sub.expect_n(8)
        assert offsets(frames) == list(range(8))
        assert [f.body for f in frames] == [f"m{i}".encode() for i in range(8)]
    finally:
        assert stop_broker(broker) == 0


def test_stomp_named_consumer_resumes_after_reconnect_and_restart(tmp_path):
    broker = start(tmp_path)
    try:
        pub = stomp(broker)
        publish_stomp(pub, 5)
        sub = stomp(broker)
        sub.subscribe(
            "/stream/sensors", id="s", ack="client-individual",
            **{"x-stream-offset": "first", "x-stream-consumer": "job"},
        )
        frames = sub.expect_n(5)
        assert offsets(frames) == [0, 1, 2, 3, 4]
        sub.ack(frames[0])
        sub.ack(frames[1])
        sub.conn.disconnect()
        # Reconnect: resumes after the last acknowledged offset (the header's
        # position is for a consumer that has acknowledged nothing yet).
        again = stomp(broker)
        again.subscribe(
            "/stream/sensors", id="s", ack="client-individual",
            **{"x-stream-offset": "first", "x-stream-consumer": "job"},
        )
        frames = again.expect_n(3)
        assert offsets(frames) == [2, 3, 4]
        again.ack(frames[0])
        again.conn.disconnect()
    finally:
        assert stop_broker(broker) == 0
    broker = start(tmp_path)
    try:
        after = stomp(broker)
        after.subscribe(
            "/stream/sensors", id="s", ack="client-individual",
            **{"x-stream-offset": "first", "x-stream-consumer": "job"},
        )
        frames = after.expect_n(2)
        assert offsets(frames) == [3, 4]
        after.expect_nothing()
    finally:
        assert stop_broker(broker) == 0


def test_paho_named_consumer_commits_on_puback(streams_broker):
    pub = stomp(streams_broker)
    publish_stomp(pub, 4)
    props = Properties(PacketTypes.SUBSCRIBE)
    props.UserProperty = [("stream-offset", "first"), ("stream-consumer", "mq")]
    sub = MqttClient(streams_broker, "5.0").connect()
    sub.subscribe("$stream/sensors/#", qos=1, properties=props)
    assert [m.payload for m in sub.expect_n(4)] == [b"m0", b"m1", b"m2", b"m3"]
    sub.close()
    # paho acknowledged all four: the next subscriber of "mq" starts after them.
    again = MqttClient(streams_broker, "5.0").connect()
    again.subscribe("$stream/sensors/#", qos=1, properties=props)
    publish_stomp(pub, 1, start=4)
    got = again.expect()
    assert (got.payload, dict(got.properties.UserProperty)["stream-offset"]) == (b"m4", "4")
    again.close()


def admin(broker, method: str, path: str, body: bytes = None):
    import json
    import urllib.error
    import urllib.request

    host, port = broker.endpoints["http"]
    request = urllib.request.Request(
        f"http://{host}:{port}{path}", data=body, method=method,
        headers={"Authorization": "Bearer t0ken", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_admin_api_creates_lists_inspects_and_purges_streams(tmp_path):
    path = tmp_path / "tern.toml"
    path.write_text(CONFIG)
    broker = start_broker(
        tmp_path, extra_env={"TERN_HTTP__ADMIN_TOKEN": "t0ken"}, args=["--config", str(path)]
    )
    try:
        status, body = admin(broker, "POST", "/api/streams",
                             b'{"name": "made", "topics": ["made/#"], "max_messages": 100}')
        assert (status, body) == (201, {"created": "made"})
        status, body = admin(broker, "POST", "/api/streams", b'{"name": "made", "topics": ["x"]}')
        assert status == 409 and "already exists" in body["error"]
        pub = stomp(broker)
        publish_stomp(pub, 3, topic="made/t")
        sub = stomp(broker)
        sub.subscribe("/stream/made", id="s", ack="client-individual",
                      **{"x-stream-offset": "first", "x-stream-consumer": "c"})
        frames = sub.expect_n(3)
        sub.ack(frames[0])
        status, info = admin(broker, "GET", "/api/streams/made")
        assert status == 200
        assert (info["first_offset"], info["last_offset"], info["messages"]) == (0, 2, 3)
        assert info["bytes"] == 3 * (len("made/t") + 2)
        assert info["consumers"] == [{"name": "c", "acked": 0, "lag": 2}]
        status, listed = admin(broker, "GET", "/api/streams")
        assert sorted(s["name"] for s in listed) == ["made", "sensors", "small"]
        status, body = admin(broker, "DELETE", "/api/streams/made/messages")
        assert (status, body) == (200, {"purged": 3})
        status, info = admin(broker, "GET", "/api/streams/made")
        assert (info["first_offset"], info["last_offset"], info["messages"]) == (3, None, 0)
        publish_stomp(pub, 1, topic="made/t", start=3)
        status, info = admin(broker, "GET", "/api/streams/made")
        assert (info["first_offset"], info["last_offset"]) == (3, 3)
        assert admin(broker, "GET", "/api/streams/nope")[0] == 404
    finally:
        assert stop_broker(broker) == 0


def test_retention_by_bytes_and_by_age(tmp_path):
    broker = start(tmp_path, """
[[stream]]
name = "bytes"
topics = ["b/#"]
max_bytes = "100"

[[stream]]
name = "age"
topics = ["a/#"]
max_age = "1s"
""")
    try:
        pub = stomp(broker)
        # Each message is 3 + 7 = 10 bytes: 100 bytes keep the newest ten.
        for i in range(25):
            pub.send("/topic/b/t", f"payload".encode())
        for i in range(5):
            pub.send("/topic/a/t", f"old{i}".encode())

        def first_offset(stream: str):
            sub = stomp(broker)
            sub.subscribe(f"/stream/{stream}", id="s", **{"x-stream-offset": "first"})
            try:
                return offsets([sub.listener.messages.get(timeout=1)])[0]
            except Exception:
                return None
            finally:
                sub.conn.disconnect()

        deadline = time.monotonic() + 15
        while first_offset("bytes") != 15 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert first_offset("bytes") == 15
        # After a second and the next retention pass, the old ones are gone.
        while first_offset("age") is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert first_offset("age") is None
        pub.send("/topic/a/t", b"new")
        assert first_offset("age") == 5
    finally:
        assert stop_broker(broker) == 0


def test_kill_9_during_appends_keeps_every_acknowledged_message(tmp_path):
    broker = start(tmp_path)
    acked = []
    stop = threading.Event()
    pub = MqttClient(broker, "3.1.1").connect()

    def publish():
        i = 0
        while not stop.is_set():
            try:
                pub.publish("sensors/k", f"{i}".encode(), qos=1)
            except BaseException:
                return
            acked.append(i)
            i += 1

    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while len(acked) < 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    broker.proc.kill()
    broker.proc.wait(10)
    stop.set()
    thread.join(15)
    assert len(acked) >= 200
    broker = start(tmp_path)
    try:
        sub = stomp(broker)
        sub.subscribe("/stream/sensors", id="s", **{"x-stream-offset": "first"})
        frames = []
        while True:
            try:
                frames.append(sub.listener.messages.get(timeout=2))
            except Exception:
                break
        got = [int(f.body) for f in frames]
        assert offsets(frames) == list(range(len(frames))), "offsets are dense from 0"
        assert got[: len(acked)] == acked, "every acknowledged message is in the stream, in order"
    finally:
        assert stop_broker(broker) == 0


def test_a_reader_sees_only_the_topics_it_may_read(tmp_path):
    broker = start(tmp_path, CONFIG + """
[[acl]]
all = true
allow = "both"
topic = "#"

[[acl]]
all = true
deny = "subscribe"
topic = "sensors/secret/#"
""")
    try:
        pub = stomp(broker)
        pub.send("/topic/sensors/a", b"open0")
        pub.send("/topic/sensors/secret/x", b"hidden")
        pub.send("/topic/sensors/a", b"open1")
        sub = stomp(broker)
        sub.subscribe("/stream/sensors", id="s", **{"x-stream-offset": "first"})
        frames = sub.expect_n(2)
        assert [(f.body, f.headers["x-stream-offset"]) for f in frames] == [
            (b"open0", "0"), (b"open1", "2")
        ]
        sub.expect_nothing()
        denied = stomp(broker)
        denied.conn.subscribe("/stream/sensors/sensors/secret/#", "d",
                              headers={"x-stream-offset": "first"})
        assert "not authorized" in denied.expect_error().headers["message"]
    finally:
        assert stop_broker(broker) == 0


def test_stomp_prefetch_count_bounds_unacknowledged_replay(streams_broker):
    pub = stomp(streams_broker)
    publish_stomp(pub, 6)
    sub = stomp(streams_broker)
    sub.subscribe("/stream/sensors", id="s", ack="client-individual",
                  **{"x-stream-offset": "first", "prefetch-count": "2"})
    frames = sub.expect_n(2)
    assert offsets(frames) == [0, 1]
    sub.expect_nothing()
    sub.ack(frames[0])
    assert offsets([sub.expect()]) == [2]
    sub.expect_nothing()


def _group_member_stomp(broker, consumer: str) -> StompClient:
    member = stomp(broker)
    member.subscribe(
        "/stream/sensors", id="g", ack="client-individual",
        **{"x-stream-offset": "first", "x-stream-consumer": consumer},
    )
    return member


def _group_member_paho(broker, consumer: str) -> MqttClient:
    props = Properties(PacketTypes.SUBSCRIBE)
    props.UserProperty = [("stream-offset", "first"), ("stream-consumer", consumer)]
    member = MqttClient(broker, "5.0").connect()
    member.subscribe("$stream/sensors/#", qos=1, properties=props)
    return member


def _drain_group(stomps: dict, pahos: dict, total: int, ack: bool = True) -> dict:
    """Reads every member until together they hold `total` distinct offsets;
    each member's (offset, topic) list in arrival order. STOMP members ack
    each message when `ack` (paho acknowledges QoS 1 itself)."""
    import queue as queue_mod

    got = {name: [] for name in [*stomps, *pahos]}
    frames = {name: [] for name in stomps}
    deadline = time.monotonic() + 15
    while len({o for seen in got.values() for o, _ in seen}) < total:
        assert time.monotonic() < deadline, {n: [o for o, _ in s] for n, s in got.items()}
        for name, client in stomps.items():
            try:
                frame = client.listener.messages.get(timeout=0.05)
            except queue_mod.Empty:
                continue
            topic = frame.headers["destination"].removeprefix("/topic/")
            got[name].append((int(frame.headers["x-stream-offset"]), topic))
            frames[name].append(frame)
            if ack:
                client.ack(frame)
        for name, client in pahos.items():
            try:
                message = client.messages.get(timeout=0.05)
            except queue_mod.Empty:
                continue
            offset = int(dict(message.properties.UserProperty)["stream-offset"])
            got[name].append((offset, message.topic))
    got["_frames"] = frames
    return got


def _in_order_per_topic(seen: list) -> bool:
    last = {}
    for offset, topic in seen:
        if last.get(topic, -1) >= offset:
            return False
        last[topic] = offset
    return True


def test_named_consumer_group_members_share_the_stream_disjointly(streams_broker):
    """Two stomp.py members and one paho 5 member of consumer "grp": each
    message reaches exactly one, each topic one member in order, and the
    union is the dense range; the group commits what was acknowledged."""
    stomps = {"s1": _group_member_stomp(streams_broker, "grp"),
              "s2": _group_member_stomp(streams_broker, "grp")}
    pahos = {"p": _group_member_paho(streams_broker, "grp")}
    pub = stomp(streams_broker)
    for i in range(60):
        pub.send(f"/topic/sensors/t{i % 12}", f"m{i}".encode())
    got = _drain_group(stomps, pahos, 60)
    got.pop("_frames")
    everything = [o for seen in got.values() for o, _ in seen]
    assert sorted(everything) == list(range(60)), "each offset exactly once"
    assert sum(1 for seen in got.values() if seen) >= 2, "shared, not one member"
    topics = [{t for _, t in seen} for seen in got.values()]
    for i, a in enumerate(topics):
        for b in topics[i + 1:]:
            assert not a & b, "a topic goes to one member"
    for name, seen in got.items():
        assert _in_order_per_topic(seen), name
    for client in stomps.values():
        client.expect_nothing()
    # Everything was acknowledged: a new member of "grp" gets only new messages.
    for client in stomps.values():
        client.conn.disconnect()
    pahos["p"].close()
    late = _group_member_stomp(streams_broker, "grp")
    late.expect_nothing()
    pub.send("/topic/sensors/t0", b"m60")
    assert offsets([late.expect()]) == [60]


def test_a_group_member_leaving_midway_loses_nothing(streams_broker):
    """Member A (stomp.py) acknowledges only part of its share and leaves; B
    (paho 5) then gets A's unacknowledged messages and everything new: A's
    acknowledged ones and B's together are the dense range, with no overlap."""
    stomps = {"a": _group_member_stomp(streams_broker, "job")}
    pahos = {"b": _group_member_paho(streams_broker, "job")}
    pub = stomp(streams_broker)
    for i in range(40):
        pub.send(f"/topic/sensors/t{i % 8}", f"m{i}".encode())
    got = _drain_group(stomps, pahos, 40, ack=False)
    a_frames = got["_frames"]["a"]
    assert a_frames and got["b"], "both members have a share"
    acked = a_frames[: len(a_frames) // 2]
    for frame in acked:
        stomps["a"].ack(frame)
    a_acked = {int(f.headers["x-stream-offset"]) for f in acked}
    stomps["a"].conn.disconnect()
    for i in range(40, 60):
        pub.send(f"/topic/sensors/t{i % 8}", f"m{i}".encode())
    b_seen = list(got["b"])
    rest = _drain_group({}, pahos, 60 - len(a_acked) - len({o for o, _ in b_seen}))
    after = rest["b"]
    b_all = [o for o, _ in b_seen] + [o for o, _ in after]
    assert len(b_all) == len(set(b_all)), "no duplicate at B"
    assert not a_acked & set(b_all), "A's acknowledged messages are not redelivered"
    assert sorted(a_acked | set(b_all)) == list(range(60))
    assert _in_order_per_topic(after)


def test_streams_created_through_the_admin_api_survive_a_restart_and_can_be_deleted(tmp_path):
    path = tmp_path / "tern.toml"
    path.write_text(CONFIG)

    def boot(config: str = CONFIG):
        path.write_text(config)
        return start_broker(
            tmp_path, extra_env={"TERN_HTTP__ADMIN_TOKEN": "t0ken"}, args=["--config", str(path)]
        )

    broker = boot()
    try:
        for name in ("made", "later"):
            status, _ = admin(broker, "POST", "/api/streams",
                              f'{{"name": "{name}", "topics": ["{name}/#"]}}'.encode())
            assert status == 201
        pub = stomp(broker)
        publish_stomp(pub, 3, topic="made/t")
        # A config file's stream cannot be deleted through the API.
        status, body = admin(broker, "DELETE", "/api/streams/sensors")
        assert status == 409 and "config file" in body["error"], body
    finally:
        assert stop_broker(broker) == 0
    # "later" is now in the config file too, with other topics: the file wins.
    broker = boot(CONFIG + '\n[[stream]]\nname = "later"\ntopics = ["other/#"]\n')
    try:
        status, info = admin(broker, "GET", "/api/streams/made")
        assert status == 200, info
        assert (info["topics"], info["first_offset"], info["last_offset"]) == (["made/#"], 0, 2)
        sub = stomp(broker)
        sub.subscribe("/stream/made", id="s", **{"x-stream-offset": "first"})
        assert [f.body for f in sub.expect_n(3)] == [b"m0", b"m1", b"m2"]
        assert admin(broker, "GET", "/api/streams/later")[1]["topics"] == ["other/#"]
        status, body = admin(broker, "DELETE", "/api/streams/made")
        assert (status, body) == (200, {"deleted": "made"})
        assert admin(broker, "GET", "/api/streams/made")[0] == 404
        assert admin(broker, "DELETE", "/api/streams/made")[0] == 404
    finally:
        assert stop_broker(broker) == 0
    broker = boot()
    try:
        names = sorted(s["name"] for s in admin(broker, "GET", "/api/streams")[1])
        # "made" was deleted; the stored "later" was dropped when the file declared it.
        assert names == ["sensors", "small"], names
        # A new "made" starts empty at offset 0: its old messages are gone too.
        assert admin(broker, "POST", "/api/streams", b'{"name": "made", "topics": ["made/#"]}')[0] == 201
        info = admin(broker, "GET", "/api/streams/made")[1]
        assert (info["next_offset"], info["messages"]) == (0, 0)
    finally:
        assert stop_broker(broker) == 0
