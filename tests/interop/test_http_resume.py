"""HTTP server-sent events resumed from a durable stream (#21): every start
position with `from=`, `Last-Event-ID` across a reconnect while paho-mqtt keeps
publishing (the ids received are exactly the dense range), curl resuming, and
the bad inputs (400 naming the problem). A real tern with a `[[stream]]`
config; real clients (requests, curl, paho-mqtt)."""

from __future__ import annotations

import socket
import subprocess
import threading
import time

import pytest
import requests

from httputil import TIMEOUT, SseReader, base_url
from mqttutil import MqttClient, unique
from ternproc import start_broker, stop_broker

CONFIG = """
[[stream]]
name = "sensors"
topics = ["sensors/#"]
"""


@pytest.fixture
def broker(request, tmp_path):
    path = tmp_path / "tern.toml"
    path.write_text(CONFIG)
    # A keep-alive each second: closing a reader waits for its thread's read to return.
    b = start_broker(tmp_path, {"TERN_LIMITS__HTTP_SSE_KEEPALIVE_SECS": "1"}, args=["--config", str(path)])
    request.node._tern_broker = b
    yield b
    assert stop_broker(b) == 0


@pytest.fixture
def url(broker) -> str:
    return base_url(broker)


@pytest.fixture
def publisher(broker):
    client = MqttClient(broker, "5.0", client_id=unique("pub")).connect()
    yield client
    client.client.disconnect()


def publish(client: MqttClient, start: int, n: int, topic: str = "sensors/a") -> None:
    for i in range(start, start + n):
        client.publish(topic, f"m{i}".encode(), qos=1)


def ids(reader: SseReader, n: int) -> list:
    got = []
    for _ in range(n):
        ev = reader.expect()
        assert ev["event"] == "message"
        assert ev["data"]["payload"] == f"m{ev['id']}", ev
        got.append(int(ev["id"]))
    return got


def test_from_every_start_position_then_live_without_a_gap(url, publisher):
    publish(publisher, 0, 5)
    # What each position replays when the stream's next offset is `end`.
    cases = {
        "first": lambda end: list(range(end)),
        "last": lambda end: [end - 1],
        "offset=2": lambda end: list(range(2, end)),
        "3": lambda end: list(range(3, end)),
        "timestamp=0": lambda end: list(range(end)),
        "-10m": lambda end: list(range(end)),
        "next": lambda end: [],
    }
    live = 5
    for position, replayed in cases.items():
        expected = replayed(live)
        reader = SseReader(f"{url}/events", params=[("topic", "sensors/#"), ("from", position)])
        try:
            assert reader.response.status_code == 200, (position, reader.response.text)
            assert ids(reader, len(expected)) == expected, position
            # The next event is the next live message: nothing repeated, nothing skipped.
            publish(publisher, live, 1)
            assert ids(reader, 1) == [live], position
            live += 1
        finally:
            reader.close()


def test_last_event_id_resumes_the_dense_range_while_mqtt_publishes(url, publisher):
    total = 300
    reader = SseReader(f"{url}/events", params=[("topic", "sensors/#"), ("retained", "false")])
    assert reader.response.status_code == 200
    reader.wait_comment("connected")
    done = threading.Event()

    def feed():
        publish(publisher, 0, total)
        done.set()

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    got = ids(reader, 60)
    reader.close()
    # Reconnect as EventSource does, while paho goes on publishing.
    resumed = SseReader(f"{url}/events", params=[("topic", "sensors/#")],
                        headers={"Last-Event-ID": str(got[-1])})
    try:
        assert resumed.response.status_code == 200, resumed.response.text
        got += ids(resumed, total - len(got))
        feeder.join(TIMEOUT * 3)
        assert done.is_set()
        assert got == list(range(total))
        # And on into live messages.
        publish(publisher, total, 1)
        assert ids(resumed, 1) == [total]
    finally:
        resumed.close()


def test_last_event_id_wins_over_from_and_skips_retained(url, publisher):
    publisher.publish("sensors/r", b"retained", qos=1, retain=True)  # offset 0
    publish(publisher, 1, 3)
    reader = SseReader(f"{url}/events", params=[("topic", "sensors/#"), ("from", "first")],
                       headers={"Last-Event-ID": "1"})
    try:
        assert ids(reader, 2) == [2, 3]
    finally:
        reader.close()
    # A fresh open (no position) gets the retained message first, without an id.
    reader = SseReader(f"{url}/events", params=[("topic", "sensors/r")])
    try:
        first = reader.expect()
        assert first["data"]["retain"] is True and "id" not in first
        publisher.publish("sensors/r", b"m4", qos=0)
        assert ids(reader, 1) == [4]
    finally:
        reader.close()


def test_several_filters_read_one_stream_in_offset_order(url, publisher):
    publish(publisher, 0, 2, topic="sensors/a")
    publish(publisher, 2, 2, topic="sensors/b")
    publish(publisher, 4, 2, topic="sensors/c")
    reader = SseReader(f"{url}/events",
                       params=[("topic", "sensors/a"), ("topic", "sensors/c"), ("from", "first")])
    try:
        assert ids(reader, 4) == [0, 1, 4, 5]
        publish(publisher, 6, 1, topic="sensors/b")
        publish(publisher, 7, 1, topic="sensors/c")
        assert ids(reader, 1) == [7]
    finally:
        reader.close()


def test_stream_parameter_names_the_stream(url, publisher):
    publish(publisher, 0, 3)
    reader = SseReader(f"{url}/events",
                       params=[("topic", "#"), ("stream", "sensors"), ("from", "offset=1")])
    try:
        assert ids(reader, 2) == [1, 2]
    finally:
        reader.close()


def test_without_a_stream_events_have_no_id_and_last_event_id_is_ignored(url, broker):
    m = MqttClient(broker, "3.1.1", client_id=unique("pub")).connect()
    reader = SseReader(f"{url}/events", params=[("topic", "plain/#")], headers={"Last-Event-ID": "7"})
    try:
        assert reader.response.status_code == 200
        reader.wait_comment("connected")
        m.publish("plain/x", b"live", qos=1)
        ev = reader.expect()
        assert ev["data"]["payload"] == "live" and "id" not in ev
    finally:
        reader.close()


def test_curl_resumes_with_last_event_id(url, publisher):
    publish(publisher, 0, 6)
    proc = subprocess.Popen(["curl", "-sS", "-N", "-H", "Last-Event-ID: 3",
                             f"{url}/events?topic=sensors/%23"], stdout=subprocess.PIPE)
    try:
        seen = []
        deadline = time.monotonic() + TIMEOUT
        assert proc.stdout is not None
        while len(seen) < 2 and time.monotonic() < deadline:
            line = proc.stdout.readline().decode()
            if line.startswith("id: "):
                seen.append(int(line[4:]))
        assert seen == [4, 5]
    finally:
        proc.kill()
        proc.wait(5)


@pytest.mark.parametrize(
    "params,headers,reason",
    [
        ([("topic", "sensors/#"), ("from", "soon")], {}, "malformed stream position"),
        ([("topic", "sensors/#"), ("from", "offset=1000")], {}, "beyond the end"),
        ([("topic", "sensors/#"), ("from", f"timestamp={int(time.time()) + 3600}")], {}, "in the future"),
        ([("topic", "sensors/#")], {"Last-Event-ID": "abc"}, "Last-Event-ID"),
        ([("topic", "sensors/#")], {"Last-Event-ID": "999"}, "beyond the end"),
        ([("topic", "other/#"), ("from", "first")], {}, "no durable stream covers"),
        ([("topic", "#"), ("from", "first")], {}, "no durable stream covers"),
        ([("topic", "sensors/#"), ("stream", "nope")], {}, "unknown stream"),
    ],
)
def test_bad_positions_are_400_naming_the_problem(url, params, headers, reason):
    r = requests.get(f"{url}/events", params=params, headers=headers, timeout=TIMEOUT)
    assert r.status_code == 400, r.text
    assert reason in r.json()["error"], r.text


def metric(broker, name: str, labels: str) -> float:
    host, port = broker.endpoints["http"]
    text = requests.get(f"http://{host}:{port}/metrics", timeout=TIMEOUT).text
    for line in text.splitlines():
        if line.startswith(name + "{") and labels in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_replay_to_a_stalled_reader_waits_instead_of_overflowing(tmp_path):
    """The session queue holds 10: a replay that pushed everything would drop
    (queue_full); the stream reader feeds the queue only while it has room."""
    path = tmp_path / "tern.toml"
    path.write_text(CONFIG)
    b = start_broker(tmp_path, {"TERN_LIMITS__MAX_QUEUED_MESSAGES": "10"}, args=["--config", str(path)])
    try:
        total = 1000
        pub = MqttClient(b, "3.1.1", client_id=unique("pub")).connect()
        # More than the socket buffers hold, so the stalled stream backs up.
        payload = b"x" * 4096

        def publish_range(start: int, end: int) -> None:
            for i in range(start, end):
                pub.publish("sensors/a", payload, qos=1 if i == end - 1 else 0)

        publish_range(0, total)
        host, port = b.endpoints["ws"]
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.settimeout(TIMEOUT)
        stalled.connect((host, port))
        stalled.sendall(b"GET /v1/events?topic=sensors/%23&from=first HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        seen: list = []

        def read_until(last: int) -> None:
            nonlocal data
            deadline = time.monotonic() + TIMEOUT * 3
            while (not seen or seen[-1] < last) and time.monotonic() < deadline:
                chunk = stalled.recv(65536)
                assert chunk, "the stream ended"
                data += chunk
                lines = data.split(b"\n")
                data = lines.pop()
                seen.extend(int(line[4:]) for line in lines if line.startswith(b"id: "))

        try:
            assert stalled.recv(12) == b"HTTP/1.1 200"
            # Time for an unbounded replay to overflow the queue; it must not.
            time.sleep(1.0)
            assert metric(b, "tern_messages_dropped_total", 'reason="queue_full"') == 0
            read_until(total - 1)
            assert seen == list(range(total))
            # Now live, and stalled again while as much more is published: the
            # reader falls back to the store rather than overflowing the queue.
            publish_range(total, 2 * total)
            time.sleep(1.0)
            read_until(2 * total - 1)
            assert seen == list(range(2 * total))
            assert metric(b, "tern_messages_dropped_total", 'reason="queue_full"') == 0
        finally:
            stalled.close()
            pub.client.disconnect()
    finally:
        assert stop_broker(b) == 0


def test_the_acl_applies_to_every_topic_a_stream_returns(tmp_path):
    from securityutil import add_user  # noqa: PLC0415

    passwd = tmp_path / "passwd"
    add_user(passwd, "alice", "alice-S3cret!")
    add_user(passwd, "bob", "bob-pa55word")
    path = tmp_path / "tern.toml"
    path.write_text(CONFIG + f"""
[auth]
password_file = "{passwd}"

[websocket]
allow_anonymous = false

[[acl]]
user = "alice"
allow = "both"
topic = "sensors/#"

[[acl]]
user = "alice"
deny = "subscribe"
topic = "sensors/secret"
""")
    b = start_broker(tmp_path, {"TERN_LIMITS__HTTP_SSE_KEEPALIVE_SECS": "1"}, args=["--config", str(path)])
    try:
        url = base_url(b)
        alice = ("alice", "alice-S3cret!")
        for topic in ["sensors/a", "sensors/secret", "sensors/b"]:
            r = requests.post(f"{url}/topics/{topic}", data=topic.encode(), auth=alice, timeout=TIMEOUT)
            assert r.status_code == 200, r.text
        # One filter (the reader skips the denied topic), then two (the event stream does).
        for params in ([("topic", "sensors/#")], [("topic", "sensors/a"), ("topic", "sensors/+")]):
            reader = SseReader(f"{url}/events", params=params + [("from", "first")], auth=alice)
            try:
                assert reader.response.status_code == 200, reader.response.text
                got = [(int(ev["id"]), ev["data"]["topic"]) for ev in (reader.expect(), reader.expect())]
                assert got == [(0, "sensors/a"), (2, "sensors/b")], params
            finally:
                reader.close()
        r = requests.get(f"{url}/events", params={"topic": "sensors/#", "from": "first"},
                         auth=("bob", "bob-pa55word"), timeout=TIMEOUT)
        assert r.status_code == 403
    finally:
        assert stop_broker(b) == 0
