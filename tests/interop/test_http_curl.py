"""Every HTTP /v1 endpoint driven by curl (as the README shows it), and the
OpenAPI document checked by openapi-spec-validator and against the routes."""

from __future__ import annotations

import json
import subprocess
import threading

import pytest
import requests

from httputil import TIMEOUT, base_url
from mqttutil import publish_props, unique


def curl(*args: str, input: bytes | None = None) -> tuple[int, bytes]:
    """Runs curl; returns (HTTP status, body)."""
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "20", "-w", "\n%{http_code}", *args],
        input=input, capture_output=True, timeout=30, check=True,
    ).stdout
    body, _, status = out.rpartition(b"\n")
    return int(status), body


@pytest.fixture
def url(broker) -> str:
    return base_url(broker)


def test_curl_publish_and_batch(url, mqtt_client):
    m = mqtt_client("5.0", client_id=unique("sub")).connect()
    m.subscribe("sensors/#", qos=1)
    status, body = curl("-X", "POST", "-H", "Content-Type: application/json",
                        "--data-binary", '{"t":21.5}', f"{url}/topics/sensors/room1/temp?qos=1&retain=true")
    assert status == 200 and json.loads(body) == {"matched": 1, "qos": 1}
    assert m.expect().payload == b'{"t":21.5}'
    batch = b'{"topic":"sensors/a","payload":"1"}\n{"topic":"sensors/b","payload":"2","qos":0}\n'
    status, body = curl("-X", "POST", "-H", "Content-Type: application/x-ndjson",
                        "--data-binary", "@-", f"{url}/publish", input=batch)
    assert status == 200 and json.loads(body)["accepted"] == 2
    assert sorted(x.payload for x in m.expect_n(2)) == [b"1", b"2"]


def test_curl_pull_ack_nack_extend(url):
    for n in range(3):
        assert curl("-X", "POST", "--data-binary", f"job-{n}", f"{url}/topics/$queue/jobs")[0] == 200
    status, body = curl("-X", "POST", f"{url}/queues/jobs/pull?max=3&wait=5&visibility=30")
    assert status == 200
    leases = [x["lease_id"] for x in json.loads(body)["messages"]]
    assert len(leases) == 3
    assert curl("-X", "POST", "-d", json.dumps({"lease_ids": leases[:1]}), f"{url}/queues/jobs/ack")[0] == 200
    assert curl("-X", "POST", "-d", json.dumps({"lease_ids": leases[1:2], "visibility": 60}),
                f"{url}/queues/jobs/extend")[0] == 200
    assert curl("-X", "POST", "-d", json.dumps({"lease_ids": leases[2:], "delay": 0}),
                f"{url}/queues/jobs/nack")[0] == 200
    status, body = curl("-X", "POST", f"{url}/queues/jobs/pull?max=3")
    assert [x["payload"] for x in json.loads(body)["messages"]] == ["job-2"]
    status, body = curl("-X", "POST", "-d", '{"lease_ids":["abc"]}', f"{url}/queues/jobs/ack")
    assert status == 404 and json.loads(body)["unknown"] == ["abc"]


def test_curl_events(url, mqtt_client):
    m = mqtt_client("3.1.1", client_id=unique("pub")).connect()
    m.publish("alerts/fire", b"now", qos=1, retain=True)
    # -N: no buffering; curl stops after max-time, with what the stream sent.
    out = subprocess.run(["curl", "-sS", "-N", "--max-time", "2", f"{url}/events?topic=alerts/%23"],
                         capture_output=True, timeout=30).stdout.decode()
    assert "event: message" in out, out
    data = next(line[len("data: "):] for line in out.splitlines() if line.startswith("data: "))
    assert json.loads(data)["payload"] == "now"


def test_curl_request_reply(url, mqtt_client):
    responder = mqtt_client("5.0", client_id=unique("responder")).connect()
    responder.subscribe("rpc/time", qos=1)
    result = {}
    t = threading.Thread(target=lambda: result.update(out=curl(
        "-X", "POST", "--data-binary", "what time?", f"{url}/request/rpc/time?timeout=10")))
    t.start()
    req = responder.expect()
    responder.publish(req.properties.ResponseTopic, b"noon", qos=1,
                      properties=publish_props(CorrelationData=req.properties.CorrelationData))
    t.join(TIMEOUT)
    assert result["out"] == (200, b"noon")


def test_openapi_is_valid_and_covers_every_endpoint(url):
    from openapi_spec_validator import validate  # noqa: PLC0415

    status, body = curl(f"{url}/openapi.json")
    assert status == 200
    spec = json.loads(body)
    validate(spec)
    assert spec["openapi"].startswith("3.1")
    paths = spec["paths"]
    for path, method in [
        ("/v1/topics/{topic}", "post"), ("/v1/publish", "post"), ("/v1/queues/{queue}/pull", "post"),
        ("/v1/queues/{queue}/ack", "post"), ("/v1/queues/{queue}/nack", "post"),
        ("/v1/queues/{queue}/extend", "post"), ("/v1/events", "get"), ("/v1/request/{topic}", "post"),
        ("/v1/openapi.json", "get"),
    ]:
        assert method in paths[path], path
    statuses = {code for p in paths.values() for op in p.values() for code in op["responses"]}
    assert {"200", "400", "401", "403", "404", "405", "413", "429", "503", "504"} <= statuses
    responses = spec["components"]["responses"]
    assert "WWW-Authenticate" in responses["Unauthorized"]["headers"]
    assert "Retry-After" in responses["TooMany"]["headers"]
    # Every documented path answers (a 4xx for a bad request, never a 404 for the route).
    for path, ops in paths.items():
        concrete = path.replace("{topic}", "a/b").replace("{queue}", "q")
        for method in ops:
            r = requests.request(method, url[: -len("/v1")] + concrete, timeout=TIMEOUT,
                                 params={"timeout": 1} if "request" in path else None)
            assert r.status_code != 404, (path, r.status_code, r.text)
