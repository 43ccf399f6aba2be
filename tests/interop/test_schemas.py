"""Schemas on publish (#22) with real clients: paho-mqtt 5.0 (PUBACK 0x99 with a
reason string), paho-mqtt 3.1.1 (dropped, counted in /metrics), stomp.py
(ERROR with receipt-id), HTTP (422 with the violations; an NDJSON batch line's
result); JSON payloads and Avro payloads written by fastavro, with and without
the Confluent header; each on_invalid action (reject, dead-letter, log) from
each protocol; SIGHUP reload of a changed schema file; the admin API (add a
version, list, show, delete) and its versions kept across a restart.

The config file and its schema files live in their own directory (not the
broker's working directory): `file` is relative to the config file.
"""

from __future__ import annotations

import io
import json
import re
import signal
import struct
import threading
import time

import fastavro
import paho.mqtt.client as mqtt
import pytest
import requests

from httputil import base_url
from mqttutil import MqttClient, unique
from stomputil import StompClient
from ternproc import clean_env, start_broker, stop_broker

TIMEOUT = 10.0
TOKEN = "t0ken"

TEMPERATURE = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["temp"],
    "properties": {"temp": {"type": "number"}},
}

READING = {
    "type": "record",
    "name": "Reading",
    "fields": [{"name": "id", "type": "string"}, {"name": "temp", "type": "double"}],
}

CONFIG = f"""
[http]
admin_token = "{TOKEN}"

[[acl]]
all = true
allow = "both"
topic = "#"

[[acl]]
all = true
allow = "subscribe"
topic = "$dlq/#"

[[schema]]
name = "temperature"
topics = ["reject/#"]
kind = "json-schema"
file = "schemas/temperature.json"
on_invalid = "reject"

[[schema]]
name = "dead"
topics = ["dead/#"]
kind = "json-schema"
file = "schemas/temperature.json"
on_invalid = "dead-letter"

[[schema]]
name = "logged"
topics = ["logged/#"]
kind = "json-schema"
file = "schemas/temperature.json"
on_invalid = "log"

[[schema]]
name = "reading"
topics = ["avro/#"]
kind = "avro"
file = "schemas/reading.avsc"
on_invalid = "reject"
"""

VALID = b'{"temp": 21.5}'
INVALID = b'{"temp": "hot"}'


def write_config(tmp_path):
    conf = tmp_path / "conf"
    (conf / "schemas").mkdir(parents=True, exist_ok=True)
    (conf / "schemas" / "temperature.json").write_text(json.dumps(TEMPERATURE))
    (conf / "schemas" / "reading.avsc").write_text(json.dumps(READING))
    path = conf / "tern.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def sbroker(request, tmp_path):
    path = write_config(tmp_path)
    b = start_broker(tmp_path, args=["--config", str(path)])
    request.node._tern_broker = b
    yield b
    assert stop_broker(b) == 0


def metric(broker, schema: str, result: str) -> int:
    host, port = broker.endpoints["http"]
    text = requests.get(f"http://{host}:{port}/metrics", timeout=TIMEOUT).text
    m = re.search(
        rf'^tern_schema_messages_total\{{schema="{schema}",result="{result}"\}} (\d+)$', text, re.M
    )
    return int(m.group(1)) if m else 0


def admin(broker, method: str, path: str, body=None):
    host, port = broker.endpoints["http"]
    r = requests.request(
        method, f"http://{host}:{port}{path}", json=body, timeout=TIMEOUT,
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    return r.status_code, r.json()


class Acks:
    """paho's on_publish turned into a wait for one message's reason code and properties."""

    def __init__(self, client: MqttClient):
        self.done: dict = {}
        self.cond = threading.Condition()
        client.client.on_publish = self._on_publish

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self.cond:
            self.done[mid] = (reason_code, properties)
            self.cond.notify_all()

    def publish(self, client: MqttClient, topic: str, payload: bytes, qos: int = 1):
        info = client.client.publish(topic, payload, qos=qos)
        with self.cond:
            assert self.cond.wait_for(lambda: info.mid in self.done, TIMEOUT), "no PUBACK"
            return self.done[info.mid]


def avro(record: dict, schema=READING) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return out.getvalue()


def confluent(datum: bytes, schema_id: int = 42) -> bytes:
    return b"\x00" + struct.pack(">I", schema_id) + datum


# -- reject -------------------------------------------------------------------------


def test_mqtt5_invalid_payload_gets_0x99_with_the_path_and_rule(sbroker):
    sub = MqttClient(sbroker, "5.0", client_id=unique("sub")).connect()
    sub.subscribe("reject/#", qos=1)
    pub = MqttClient(sbroker, "5.0", client_id=unique("pub")).connect()
    acks = Acks(pub)
    # QoS 1 only: paho reports a QoS 2 flow by its PUBCOMP, and goes on with
    # PUBREL after a refusing PUBREC (the PUBREC 0x99 is checked in tests/schemas.rs).
    code, props = acks.publish(pub, "reject/room1", INVALID, qos=1)
    assert int(code.value) == 0x99, code
    reason = props.ReasonString
    assert "temperature" in reason and "/temp" in reason and "/properties/temp/type" in reason, reason
    code, _ = acks.publish(pub, "reject/room1", VALID)
    assert int(code.value) == 0
    assert sub.expect().payload == VALID
    sub.expect_nothing()
    assert metric(sbroker, "temperature", "rejected") == 1
    assert metric(sbroker, "temperature", "valid") == 1
    pub.close()
    sub.close()


def test_mqtt311_invalid_payload_is_dropped_acknowledged_and_counted(sbroker):
    sub = MqttClient(sbroker, "3.1.1", client_id=unique("sub")).connect()
    sub.subscribe("reject/#", qos=1)
    pub = MqttClient(sbroker, "3.1.1", client_id=unique("pub")).connect()
    pub.publish("reject/a", INVALID, qos=1)
    pub.publish("reject/a", INVALID, qos=2)
    pub.publish("reject/a", VALID, qos=1)
    # Only the valid one, which was published after the others, arrives.
    assert sub.expect().payload == VALID
    sub.expect_nothing()
    assert metric(sbroker, "temperature", "rejected") == 2
    assert not pub.disconnected.is_set()
    pub.close()
    sub.close()


def test_stomp_invalid_send_gets_an_error_with_receipt_id(sbroker):
    client = StompClient(sbroker, "1.2").connect()
    client.conn.send("/topic/reject/a", INVALID, headers={"receipt": "bad-1"})
    error = client.expect_error()
    assert error.headers.get("receipt-id") == "bad-1", error.headers
    assert "temperature" in error.headers["message"] and "/temp" in error.headers["message"]
    assert metric(sbroker, "temperature", "rejected") == 1
    client.close()


def test_http_invalid_publish_is_422_with_the_violations(sbroker):
    url = base_url(sbroker)
    r = requests.post(f"{url}/topics/reject/a", data=INVALID, timeout=TIMEOUT)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["schema"] == "temperature"
    assert body["violations"][0]["path"] == "/temp"
    assert body["violations"][0]["rule"] == "/properties/temp/type"
    ok = requests.post(f"{url}/topics/reject/a", data=VALID, timeout=TIMEOUT)
    assert ok.status_code == 200, ok.text
    lines = "\n".join(
        json.dumps({"topic": "reject/a", "payload": p.decode()}) for p in (VALID, INVALID)
    )
    batch = requests.post(f"{url}/publish", data=lines, timeout=TIMEOUT).json()
    assert batch["accepted"] == 1 and batch["refused"] == 1, batch
    assert batch["results"][1]["status"] == 422
    assert batch["results"][1]["violations"][0]["path"] == "/temp"


def test_avro_payloads_from_fastavro_with_and_without_the_confluent_header(sbroker):
    sub = MqttClient(sbroker, "5.0", client_id=unique("sub")).connect()
    sub.subscribe("avro/#", qos=1)
    pub = MqttClient(sbroker, "5.0", client_id=unique("pub")).connect()
    acks = Acks(pub)
    datum = avro({"id": "s1", "temp": 21.5})
    for payload in (datum, confluent(datum)):
        code, _ = acks.publish(pub, "avro/s1", payload)
        assert int(code.value) == 0, code
        assert sub.expect().payload == payload
    other = avro({"id": "s1"}, {"type": "record", "name": "Id", "fields": [{"name": "id", "type": "string"}]})
    for payload in (other, confluent(other), datum + b"\x01"):
        code, props = acks.publish(pub, "avro/s1", payload)
        assert int(code.value) == 0x99, code
        assert "reading" in props.ReasonString
    sub.expect_nothing()
    assert metric(sbroker, "reading", "valid") == 2
    assert metric(sbroker, "reading", "rejected") == 3
    pub.close()
    sub.close()


# -- dead-letter and log, from each protocol ---------------------------------------------


def publish_from(broker, protocol: str, topic: str, payload: bytes) -> None:
    """Publishes one message from `protocol`, waiting for its acknowledgement."""
    if protocol in ("5.0", "3.1.1"):
        client = MqttClient(broker, protocol, client_id=unique("pub")).connect()
        client.publish(topic, payload, qos=1)
        client.close()
    elif protocol == "stomp":
        client = StompClient(broker, "1.2").connect()
        client.send(f"/topic/{topic}", payload)
        client.close()
    else:
        r = requests.post(f"{base_url(broker)}/topics/{topic}?qos=1", data=payload, timeout=TIMEOUT)
        assert r.status_code == 200, r.text


PROTOCOLS = ["5.0", "3.1.1", "stomp", "http"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_dead_letter_goes_to_dlq_with_the_reason(sbroker, protocol):
    plain = MqttClient(sbroker, "5.0", client_id=unique("plain")).connect()
    plain.subscribe("#", qos=1)
    dlq = MqttClient(sbroker, "5.0", client_id=unique("dlq")).connect()
    dlq.subscribe("$dlq/#", qos=1)
    stomp_dlq = StompClient(sbroker, "1.2").connect()
    stomp_dlq.subscribe("/topic/$dlq/dead/#", "d")
    publish_from(sbroker, protocol, "dead/room1", INVALID)
    letter = dlq.expect()
    assert letter.topic == "$dlq/dead/room1"
    assert letter.payload == INVALID
    reasons = dict(letter.properties.UserProperty)
    assert "dead" in reasons["tern-schema-error"] and "/temp" in reasons["tern-schema-error"]
    frame = stomp_dlq.expect()
    assert frame.body == INVALID
    assert "/temp" in frame.headers["tern-schema-error"]
    # `#` does not match `$dlq/…`, and the original topic got nothing.
    publish_from(sbroker, protocol, "dead/room1", VALID)
    got = plain.expect()
    assert (got.topic, got.payload) == ("dead/room1", VALID)
    plain.expect_nothing()
    assert metric(sbroker, "dead", "dead_lettered") == 1
    for c in (plain, dlq, stomp_dlq):
        c.close()


def test_dlq_is_not_granted_without_a_rule_naming_it(broker):
    client = MqttClient(broker, "5.0", client_id=unique("sub")).connect()
    assert client.subscribe("$dlq/#", qos=1) == [0x87]
    client.close()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_log_lets_an_invalid_message_through_and_counts_it(sbroker, protocol):
    sub = MqttClient(sbroker, "5.0", client_id=unique("sub")).connect()
    sub.subscribe("logged/#", qos=1)
    publish_from(sbroker, protocol, "logged/a", INVALID)
    assert sub.expect().payload == INVALID
    assert metric(sbroker, "logged", "logged") == 1
    sub.close()


# -- reload and the admin API ------------------------------------------------------------


def wait_log(broker, pattern: str, after: int = 0):
    deadline = time.monotonic() + TIMEOUT
    rx = re.compile(pattern)
    while True:
        text = broker.stderr_text()
        if rx.search(text, after):
            return
        assert time.monotonic() < deadline, f"no /{pattern}/ in the log"
        time.sleep(0.05)


def test_sighup_reloads_a_changed_schema_file(tmp_path, request):
    path = write_config(tmp_path)
    b = start_broker(tmp_path, args=["--config", str(path)])
    request.node._tern_broker = b
    try:
        url = base_url(b)
        assert requests.post(f"{url}/topics/reject/a", data=VALID, timeout=TIMEOUT).status_code == 200
        changed = dict(TEMPERATURE, properties={"temp": {"type": "string"}})
        (path.parent / "schemas" / "temperature.json").write_text(json.dumps(changed))
        before = len(b.stderr_text())
        b.proc.send_signal(signal.SIGHUP)
        wait_log(b, r"schemas reloaded", after=before)
        assert requests.post(f"{url}/topics/reject/a", data=VALID, timeout=TIMEOUT).status_code == 422
        assert requests.post(f"{url}/topics/reject/a", data=INVALID, timeout=TIMEOUT).status_code == 200
        # A file that no longer compiles keeps the running schemas.
        (path.parent / "schemas" / "temperature.json").write_text("{")
        before = len(b.stderr_text())
        b.proc.send_signal(signal.SIGHUP)
        wait_log(b, r"config reload failed", after=before)
        assert requests.post(f"{url}/topics/reject/a", data=VALID, timeout=TIMEOUT).status_code == 422
    finally:
        assert stop_broker(b) == 0


def test_admin_api_versions_list_show_delete_and_survive_a_restart(tmp_path, request):
    path = write_config(tmp_path)
    b = start_broker(tmp_path, args=["--config", str(path)])
    request.node._tern_broker = b
    version = {"kind": "json-schema", "topics": ["api/#"], "on_invalid": "reject",
               "definition": TEMPERATURE}
    try:
        status, body = admin(b, "POST", "/api/schemas/api-temp/versions", version)
        assert (status, body) == (201, {"name": "api-temp", "version": 1}), body
        strict = dict(TEMPERATURE, properties={"temp": {"type": "integer"}})
        status, body = admin(b, "POST", "/api/schemas/api-temp/versions", dict(version, definition=strict))
        assert (status, body["version"]) == (201, 2), body
        url = base_url(b)
        assert requests.post(f"{url}/topics/api/x", data=VALID, timeout=TIMEOUT).status_code == 422
        assert requests.post(f"{url}/topics/api/x", data=b'{"temp": 21}', timeout=TIMEOUT).status_code == 200
        status, listed = admin(b, "GET", "/api/schemas")
        names = {s["name"]: s for s in listed}
        assert names["api-temp"]["source"] == "api" and names["api-temp"]["version"] == 2
        assert names["temperature"]["source"] == "config"
        status, shown = admin(b, "GET", "/api/schemas/api-temp")
        assert [v["version"] for v in shown["versions"]] == [1, 2]
        status, first = admin(b, "GET", "/api/schemas/api-temp/versions/1")
        assert json.loads(first["definition"]) == TEMPERATURE
        # Config schemas are changed in the file; a bad definition is refused.
        assert admin(b, "POST", "/api/schemas/temperature/versions", version)[0] == 409
        assert admin(b, "POST", "/api/schemas/x/versions", dict(version, definition="{"))[0] == 400
    finally:
        assert stop_broker(b) == 0
    b = start_broker(tmp_path, args=["--config", str(path)])
    request.node._tern_broker = b
    try:
        status, shown = admin(b, "GET", "/api/schemas/api-temp")
        assert status == 200 and shown["version"] == 2, shown
        url = base_url(b)
        assert requests.post(f"{url}/topics/api/x", data=VALID, timeout=TIMEOUT).status_code == 422
        assert admin(b, "DELETE", "/api/schemas/api-temp") == (200, {"deleted": "api-temp"})
        assert admin(b, "GET", "/api/schemas/api-temp")[0] == 404
        assert requests.post(f"{url}/topics/api/x", data=VALID, timeout=TIMEOUT).status_code == 200
    finally:
        assert stop_broker(b) == 0
    b = start_broker(tmp_path, args=["--config", str(path)])
    request.node._tern_broker = b
    try:
        assert admin(b, "GET", "/api/schemas/api-temp")[0] == 404
    finally:
        assert stop_broker(b) == 0


def test_a_schema_that_does_not_compile_stops_the_start_naming_the_key(tmp_path, tern_binary):
    import subprocess

    path = write_config(tmp_path)
    (path.parent / "schemas" / "reading.avsc").write_text('{"type": "nope"}')
    out = subprocess.run([str(tern_binary), "check-config", "--config", str(path)],
                         capture_output=True, text=True, timeout=TIMEOUT, env=clean_env(),
                         stdin=subprocess.DEVNULL)
    assert out.returncode != 0
    assert "schema" in out.stderr and "reading" in out.stderr and "file" in out.stderr, out.stderr
