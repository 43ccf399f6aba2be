"""HTTP /v1 with real clients (Python `requests`, curl) beside paho-mqtt and
stomp.py: publish → MQTT and STOMP subscribers, MQTT and STOMP publishers →
pull and server-sent events, leases (expiry redelivers to a STOMP consumer,
nack, extend, unknown ids), request/reply with a paho-mqtt responder."""

from __future__ import annotations

import base64
import json
import threading
import time

import pytest
import requests

from httputil import TIMEOUT, SseReader, base_url
from mqttutil import publish_props, unique
from stomputil import stomp_client  # noqa: F401 (fixture)


@pytest.fixture
def url(broker) -> str:
    return base_url(broker)


def test_http_publish_reaches_mqtt_and_stomp_subscribers_with_properties(url, mqtt_client, stomp_client):
    m = mqtt_client("5.0", client_id=unique("sub")).connect()
    m.subscribe("sensors/#", qos=1)
    s = stomp_client()
    s.subscribe("/topic/sensors/#", "s")
    r = requests.post(
        f"{url}/topics/sensors/room%201/temp",
        params={"qos": "1", "reply-to": "replies/1", "property.site": "north"},
        headers={"Content-Type": "application/json", "Tern-Correlation-Id": "c-1",
                 "Tern-Property-Unit": "C"},
        data=b'{"t":21.5}',
        timeout=TIMEOUT,
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"matched": 2, "qos": 1}
    msg = m.expect()
    assert (msg.topic, msg.payload, msg.qos) == ("sensors/room 1/temp", b'{"t":21.5}', 1)
    props = msg.properties
    assert props.ContentType == "application/json"
    assert props.ResponseTopic == "replies/1"
    assert props.CorrelationData == b"c-1"
    assert ("site", "north") in props.UserProperty and ("unit", "C") in props.UserProperty
    frame = s.expect()
    assert frame.headers["destination"] == "/topic/sensors/room 1/temp"
    assert frame.headers["content-type"] == "application/json"
    assert frame.headers["correlation-id"] == "c-1"
    assert frame.headers["site"] == "north"
    assert frame.body == b'{"t":21.5}'


def test_batch_publishes_each_line_with_its_own_result(url, mqtt_client):
    m = mqtt_client("3.1.1", client_id=unique("sub")).connect()
    m.subscribe("batch/#", qos=1)
    lines = [
        {"topic": "batch/a", "payload": "one"},
        {"topic": "batch/+", "payload": "bad"},
        {"topic": "batch/b", "payload": base64.b64encode(b"\x00\xff").decode(), "encoding": "base64", "qos": 0},
    ]
    body = "\n".join(json.dumps(line) for line in lines) + "\nnot json\n"
    r = requests.post(f"{url}/publish", data=body, timeout=TIMEOUT)
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["accepted"], out["refused"]) == (2, 2)
    results = out["results"]
    assert results[0] == {"line": 1, "matched": 1}
    assert results[1]["status"] == 400 and "wildcard" in results[1]["error"]
    assert results[2] == {"line": 3, "matched": 1}
    assert results[3]["line"] == 4 and results[3]["status"] == 400
    got = sorted((x.topic, x.payload) for x in m.expect_n(2))
    assert got == [("batch/a", b"one"), ("batch/b", b"\x00\xff")]


def test_mqtt_and_stomp_publishers_feed_an_http_pull(url, mqtt_client, stomp_client):
    m = mqtt_client("5.0", client_id=unique("pub")).connect()
    m.publish("$queue/jobs", b"from-mqtt", qos=1, properties=publish_props(UserProperty=[("k", "v")]))
    s = stomp_client()
    s.send("/queue/jobs", b"\x01\x02binary\xff")
    deadline = time.monotonic() + TIMEOUT
    messages = []
    while len(messages) < 2 and time.monotonic() < deadline:
        r = requests.post(f"{url}/queues/jobs/pull", params={"max": 10, "wait": 2}, timeout=TIMEOUT)
        assert r.status_code == 200, r.text
        messages += r.json()["messages"]
    assert [x["payload"] for x in messages][0] == "from-mqtt"
    assert messages[0]["user_properties"] == [["k", "v"]]
    assert messages[1]["encoding"] == "base64"
    assert base64.b64decode(messages[1]["payload"]) == b"\x01\x02binary\xff"
    ids = [x["lease_id"] for x in messages]
    r = requests.post(f"{url}/queues/jobs/ack", json={"lease_ids": ids}, timeout=TIMEOUT)
    assert r.status_code == 200 and r.json()["done"] == ids
    r = requests.post(f"{url}/queues/jobs/ack", json={"lease_ids": ids[:1]}, timeout=TIMEOUT)
    assert r.status_code == 404 and r.json()["unknown"] == ids[:1]
    r = requests.post(f"{url}/queues/jobs/pull", params={"max": 10}, timeout=TIMEOUT)
    assert r.json() == {"messages": []}


def test_a_long_poll_answers_when_a_message_arrives(url, mqtt_client):
    m = mqtt_client("3.1.1", client_id=unique("pub")).connect()
    result = {}

    def poll():
        started = time.monotonic()
        r = requests.post(f"{url}/queues/later/pull", params={"wait": 20}, timeout=30)
        result["took"] = time.monotonic() - started
        result["json"] = r.json()

    t = threading.Thread(target=poll)
    t.start()
    time.sleep(0.5)  # the poll is waiting (nothing to await from outside)
    m.publish("$queue/later", b"now", qos=1)
    t.join(TIMEOUT)
    assert [x["payload"] for x in result["json"]["messages"]] == ["now"]
    assert result["took"] < 15


def test_an_expired_lease_redelivers_to_a_stomp_consumer(url, mqtt_client, stomp_client):
    m = mqtt_client("3.1.1", client_id=unique("pub")).connect()
    m.publish("$queue/work", b"job-1", qos=1)
    r = requests.post(f"{url}/queues/work/pull", params={"visibility": 1, "wait": 5}, timeout=TIMEOUT)
    (leased,) = r.json()["messages"]
    assert leased["payload"] == "job-1" and leased["visibility_timeout"] == 1
    s = stomp_client()
    s.subscribe("/queue/work", "w", ack="client-individual")
    frame = s.expect(timeout=TIMEOUT)  # after the lease expired
    assert frame.body == b"job-1"
    s.ack(frame)
    r = requests.post(f"{url}/queues/work/ack", json={"lease_id": leased["lease_id"]}, timeout=TIMEOUT)
    assert r.status_code == 404, "the expired lease is gone"


def test_nack_redelivers_at_once_or_after_the_delay_and_extend_keeps_the_lease(url, mqtt_client):
    m = mqtt_client("3.1.1", client_id=unique("pub")).connect()
    m.publish("$queue/n", b"a", qos=1)
    pull = lambda **p: requests.post(f"{url}/queues/n/pull", params=p, timeout=TIMEOUT).json()["messages"]  # noqa: E731
    (first,) = pull(wait=5)
    r = requests.post(f"{url}/queues/n/nack", json={"lease_ids": [first["lease_id"]]}, timeout=TIMEOUT)
    assert r.status_code == 200
    (again,) = pull()
    assert again["payload"] == "a" and again["lease_id"] != first["lease_id"]
    r = requests.post(f"{url}/queues/n/nack", json={"lease_ids": [again["lease_id"]], "delay": 2}, timeout=TIMEOUT)
    assert r.status_code == 200
    assert pull() == [], "held back for its delay"
    (late,) = pull(wait=10)
    assert late["payload"] == "a"
    r = requests.post(f"{url}/queues/n/extend", json={"lease_ids": [late["lease_id"]], "visibility": 60},
                      timeout=TIMEOUT)
    assert r.status_code == 200 and r.json()["done"] == [late["lease_id"]]
    r = requests.post(f"{url}/queues/n/extend", json={"lease_ids": ["ffff"]}, timeout=TIMEOUT)
    assert r.status_code == 404


def test_mqtt_and_stomp_publishers_reach_server_sent_events(url, mqtt_client, stomp_client):
    m = mqtt_client("5.0", client_id=unique("pub")).connect()
    m.publish("live/retained", b"kept", qos=1, retain=True)
    events = SseReader(f"{url}/events", params=[("topic", "live/#"), ("topic", "other/+")])
    assert events.response.status_code == 200
    assert events.response.headers["content-type"] == "text/event-stream"
    try:
        first = events.expect()
        assert first["data"]["topic"] == "live/retained" and first["data"]["retain"] is True
        m.publish("live/a", b"\xff\x00", qos=0, properties=publish_props(ContentType="application/octet-stream"))
        ev = events.expect()
        assert ev["event"] == "message" and "id" not in ev  # no stream covers live/#
        assert ev["data"]["encoding"] == "base64" and base64.b64decode(ev["data"]["payload"]) == b"\xff\x00"
        assert ev["data"]["content_type"] == "application/octet-stream"
        stomp_client().send("/topic/other/x", b"from stomp", {"color": "red"})
        ev = events.expect()
        assert ev["data"]["topic"] == "other/x" and ev["data"]["payload"] == "from stomp"
        assert ["color", "red"] in ev["data"]["user_properties"]
    finally:
        events.close()


def test_request_reply_with_a_paho_mqtt5_responder(url, mqtt_client):
    responder = mqtt_client("5.0", client_id=unique("responder")).connect()
    responder.subscribe("rpc/echo", qos=1)
    result = {}

    def request():
        result["r"] = requests.post(f"{url}/request/rpc/echo", params={"timeout": 10},
                                    headers={"Content-Type": "text/plain"}, data=b"ping", timeout=20)

    t = threading.Thread(target=request)
    t.start()
    req = responder.expect()
    assert req.payload == b"ping"
    reply_to = req.properties.ResponseTopic
    assert reply_to.startswith("tern/reply/")
    responder.publish(reply_to, b"pong", qos=1, properties=publish_props(
        CorrelationData=req.properties.CorrelationData, ContentType="text/plain",
        UserProperty=[("served-by", "paho")]))
    t.join(TIMEOUT)
    r = result["r"]
    assert r.status_code == 200, r.text
    assert r.content == b"pong"
    assert r.headers["content-type"] == "text/plain"
    assert r.headers["tern-correlation-id"] == req.properties.CorrelationData.decode()
    assert r.headers["tern-property-served-by"] == "paho"


def test_request_without_a_reply_times_out_with_504(url):
    r = requests.post(f"{url}/request/nobody/home", params={"timeout": 1}, data=b"?", timeout=TIMEOUT)
    assert r.status_code == 504 and "no reply" in r.json()["error"]


def test_bad_input_is_a_client_error_naming_the_rule(url):
    cases = [
        ("post", "/topics/a/%2B", 400, "wildcard"),
        ("post", "/topics/a/%23", 400, "wildcard"),
        ("post", "/topics/%FF", 400, "UTF-8"),
        ("post", "/topics/a?qos=7", 400, "qos"),
        ("post", "/topics/a?bogus=1", 400, "unknown query parameter"),
        ("get", "/topics/a", 405, "POST"),
        ("post", "/events?topic=a", 405, "GET"),
        ("get", "/events", 400, "topic"),
        ("get", "/events?topic=a/%23/b", 400, "filter"),
        ("get", "/events?topic=%24queue/q", 400, "queue"),
        ("get", "/events?topic=a&from=5", 400, "from="),
        ("post", "/queues/q/ack", 400, "lease_ids"),
        ("post", "/queues/q/frobnicate", 404, "no endpoint"),
        ("get", "/nothing", 404, "no endpoint"),
    ]
    for method, path, status, text in cases:
        r = requests.request(method, url + path, timeout=TIMEOUT)
        assert r.status_code == status, (path, r.status_code, r.text)
        assert text in r.json()["error"], (path, r.text)


def test_metrics_count_http_as_its_own_protocol(broker, url):
    r = requests.post(f"{url}/topics/counted", params={"qos": 0}, data=b"12345", timeout=TIMEOUT)
    assert r.status_code == 200
    host, port = broker.endpoints["http"]
    text = requests.get(f"http://{host}:{port}/metrics", timeout=TIMEOUT).text
    line = next(x for x in text.splitlines()
                if x.startswith("tern_messages_received_total") and 'protocol="http"' in x and 'qos="0"' in x)
    assert line.endswith(" 1"), line


def test_a_leased_message_survives_a_restart_until_acked(tmp_path):
    from ternproc import start_broker, stop_broker  # noqa: PLC0415

    first = start_broker(tmp_path)
    try:
        url = base_url(first)
        r = requests.post(f"{url}/topics/$queue/durable", params={"qos": 1}, data=b"keep me", timeout=TIMEOUT)
        assert r.status_code == 200 and r.json()["matched"] == 1
        (leased,) = requests.post(f"{url}/queues/durable/pull", params={"visibility": 600},
                                  timeout=TIMEOUT).json()["messages"]
        assert leased["payload"] == "keep me"
    finally:
        assert stop_broker(first) == 0
    # The consumer never acked: after the restart the message is there again.
    second = start_broker(tmp_path)
    try:
        url = base_url(second)
        r = requests.post(f"{url}/queues/durable/pull", params={"wait": 5}, timeout=TIMEOUT)
        (again,) = r.json()["messages"]
        assert again["payload"] == "keep me"
        r = requests.post(f"{url}/queues/durable/ack", json={"lease_ids": [again["lease_id"]]}, timeout=TIMEOUT)
        assert r.status_code == 200
    finally:
        assert stop_broker(second) == 0
    third = start_broker(tmp_path)
    try:
        r = requests.post(f"{base_url(third)}/queues/durable/pull", timeout=TIMEOUT)
        assert r.json() == {"messages": []}, "acked: gone for good"
    finally:
        assert stop_broker(third) == 0
