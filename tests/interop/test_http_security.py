"""HTTP /v1 logins, ACL, CORS and limits with `requests` and raw sockets:
401 with WWW-Authenticate, Basic logins from the password file, 403 by the
same [[acl]] rules as MQTT and STOMP, CORS for allowed origins only, 413 over
limits.http_max_body_size, 429 over the publish rate (Retry-After) and over
the open streams, and an event stream that stops being read: its queue
overflows and the drops are counted."""

from __future__ import annotations

import socket
import time

import pytest
import requests

from httputil import TIMEOUT, SseReader, base_url
from mqttutil import MqttClient, unique
from securityutil import acl, add_user, sec, section  # noqa: F401 (sec is a fixture)
from ternproc import start_broker, stop_broker

PASSWORDS = {"alice": "alice-S3cret!", "bob": "bob-pa55word"}


@pytest.fixture
def password_file(tmp_path):
    path = tmp_path / "passwd"
    for user, password in PASSWORDS.items():
        add_user(path, user, password)
    return path


@pytest.fixture
def secured(sec, password_file):
    """A broker with users, no anonymous clients on the web port, and ACL rules."""
    broker = sec.start(
        section("auth", password_file=password_file),
        section("websocket", allow_anonymous=False),
        acl(user="alice", allow="both", topic="alice/#"),
        acl(user="alice", allow="subscribe", topic="$queue/alice-jobs"),
        acl(user="alice", allow="publish", topic="$queue/alice-jobs"),
        acl(user="bob", allow="both", topic="bob/#"),
    )
    return base_url(broker)


def test_no_login_is_401_with_www_authenticate_and_a_bad_one_too(secured):
    r = requests.post(f"{secured}/topics/alice/x", data=b"1", timeout=TIMEOUT)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Basic realm=")
    r = requests.post(f"{secured}/topics/alice/x", data=b"1", auth=("alice", "wrong"), timeout=TIMEOUT)
    assert r.status_code == 401 and "www-authenticate" in r.headers
    r = requests.post(f"{secured}/topics/alice/x", data=b"1", headers={"Authorization": "Bearer x"},
                      timeout=TIMEOUT)
    assert r.status_code == 401


def test_the_acl_decides_http_as_it_decides_mqtt_and_stomp(secured):
    alice = requests.Session()
    alice.auth = ("alice", PASSWORDS["alice"])
    assert alice.post(f"{secured}/topics/alice/x", data=b"1", timeout=TIMEOUT).status_code == 200
    r = alice.post(f"{secured}/topics/bob/x", data=b"1", timeout=TIMEOUT)
    assert r.status_code == 403 and "bob/x" in r.json()["error"]
    assert alice.post(f"{secured}/queues/alice-jobs/pull", timeout=TIMEOUT).status_code == 200
    assert alice.post(f"{secured}/queues/bob-jobs/pull", timeout=TIMEOUT).status_code == 403
    assert alice.post(f"{secured}/queues/bob-jobs/ack", json={"lease_ids": ["1"]},
                      timeout=TIMEOUT).status_code == 403
    r = alice.get(f"{secured}/events", params={"topic": "bob/#"}, timeout=TIMEOUT)
    assert r.status_code == 403
    r = alice.post(f"{secured}/request/bob/rpc", params={"timeout": 1}, data=b"?", timeout=TIMEOUT)
    assert r.status_code == 403
    lines = '{"topic":"alice/ok"}\n{"topic":"bob/no"}\n'
    out = alice.post(f"{secured}/publish", data=lines, timeout=TIMEOUT).json()
    assert [x.get("status") for x in out["results"]] == [None, 403]


def test_anonymous_is_allowed_on_loopback_by_default(broker):
    r = requests.post(f"{base_url(broker)}/topics/anyone", data=b"1", timeout=TIMEOUT)
    assert r.status_code == 200


def test_cors_answers_allowed_origins_only(sec):
    broker = sec.start('[websocket]\nallowed_origins = ["http://good.example"]\n')
    url = base_url(broker)
    r = requests.options(f"{url}/topics/a", headers={
        "Origin": "http://good.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"}, timeout=TIMEOUT)
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "http://good.example"
    assert "POST" in r.headers["access-control-allow-methods"]
    assert r.headers["access-control-allow-headers"] == "authorization, content-type"
    r = requests.post(f"{url}/topics/a", data=b"1", headers={"Origin": "http://good.example"}, timeout=TIMEOUT)
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "http://good.example"
    r = requests.post(f"{url}/topics/a", data=b"1", headers={"Origin": "http://evil.example"}, timeout=TIMEOUT)
    assert r.status_code == 403 and "access-control-allow-origin" not in r.headers


def test_a_body_over_the_limit_is_413_declared_or_streamed(tmp_path):
    broker = start_broker(tmp_path, {"TERN_LIMITS__HTTP_MAX_BODY_SIZE": "16"})
    try:
        url = base_url(broker)
        assert requests.post(f"{url}/topics/a", data=b"x" * 16, timeout=TIMEOUT).status_code == 200
        r = requests.post(f"{url}/topics/a", data=b"x" * 17, timeout=TIMEOUT)
        assert r.status_code == 413 and "http_max_body_size" in r.json()["error"]
        chunks = (b"x" * 8 for _ in range(4))  # chunked: no Content-Length
        assert requests.post(f"{url}/topics/a", data=chunks, timeout=TIMEOUT).status_code == 413
    finally:
        assert stop_broker(broker) == 0


def test_over_the_publish_rate_is_429_with_retry_after(tmp_path):
    broker = start_broker(tmp_path, {"TERN_LIMITS__MAX_PUBLISH_RATE": "2"})
    try:
        url = base_url(broker)
        statuses = []
        with requests.Session() as http:
            for _ in range(3):
                r = http.post(f"{url}/topics/a", params={"qos": 0}, data=b"1", timeout=TIMEOUT)
                statuses.append(r.status_code)
        assert statuses[:2] == [200, 200] and statuses[2] == 429, statuses
        assert int(r.headers["retry-after"]) >= 1
        assert "max_publish_rate" in r.json()["error"]
    finally:
        assert stop_broker(broker) == 0


def test_too_many_open_streams_is_429_and_a_closed_one_frees_its_slot(tmp_path):
    broker = start_broker(tmp_path, {"TERN_LIMITS__HTTP_MAX_OPEN_STREAMS": "1",
                                     "TERN_LIMITS__HTTP_SSE_KEEPALIVE_SECS": "1"})
    try:
        url = base_url(broker)
        first = SseReader(f"{url}/events", params={"topic": "a"})
        assert first.response.status_code == 200
        r = requests.get(f"{url}/events", params={"topic": "b"}, timeout=TIMEOUT)
        assert r.status_code == 429 and "http_max_open_streams" in r.json()["error"]
        r = requests.post(f"{url}/queues/q/pull", params={"wait": 5}, timeout=TIMEOUT)
        assert r.status_code == 429, "a long poll takes a slot too"
        first.close()
        # The server notices the closed stream at its next keep-alive (1 s).
        deadline = time.monotonic() + TIMEOUT
        while True:
            again = SseReader(f"{url}/events", params={"topic": "a"})
            if again.response.status_code == 200:
                again.close()
                break
            assert time.monotonic() < deadline, "the slot was never freed"
            time.sleep(0.2)
    finally:
        assert stop_broker(broker) == 0


def metric(broker, name: str, labels: str) -> float:
    host, port = broker.endpoints["http"]
    text = requests.get(f"http://{host}:{port}/metrics", timeout=TIMEOUT).text
    for line in text.splitlines():
        if line.startswith(name + "{") and labels in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_an_event_stream_that_is_not_read_overflows_and_counts_the_drops(tmp_path):
    broker = start_broker(tmp_path, {"TERN_LIMITS__MAX_QUEUED_MESSAGES": "10"})
    try:
        host, port = broker.endpoints["ws"]
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect((host, port))
        stalled.sendall(b"GET /v1/events?topic=flood HTTP/1.1\r\nHost: x\r\n\r\n")
        assert stalled.recv(12) == b"HTTP/1.1 200"  # then never read again
        before = metric(broker, "tern_messages_dropped_total", 'reason="queue_full"')
        pub = MqttClient(broker, "3.1.1", client_id=unique("flood")).connect()
        try:
            chunk = b"x" * 65536
            for _ in range(400):  # 25 MiB: more than the socket buffers hold
                pub.publish("flood", chunk, qos=0)
            deadline = time.monotonic() + TIMEOUT
            while metric(broker, "tern_messages_dropped_total", 'reason="queue_full"') <= before:
                assert time.monotonic() < deadline, "no drop counted"
                time.sleep(0.2)
            # Others are not held up by the stalled stream.
            r = requests.post(f"{base_url(broker)}/topics/other", data=b"1", timeout=TIMEOUT)
            assert r.status_code == 200
        finally:
            pub.close()
            stalled.close()
    finally:
        assert stop_broker(broker) == 0
