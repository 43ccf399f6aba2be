"""Issue 26: a deny rule carves its topics out of a wildcard subscription instead
of refusing it. On `allow both #` + `deny subscribe test/nosubscribe` for everyone,
`#` is granted and receives everything but test/nosubscribe, live or retained,
with paho-mqtt (3.1.1 and 5.0), mosquitto_sub and stomp.py (`/topic/#`); the
topic itself is refused (SUBACK 0x80 / 0x87, STOMP ERROR)."""

from __future__ import annotations

import subprocess

import pytest

from securityutil import acl, sec, stomp_refused  # noqa: F401 - sec is a fixture

FORBIDDEN = "test/nosubscribe"


def start(sec):
    broker = sec.start(
        acl(all=True, allow="both", topic="#"),
        acl(all=True, deny="subscribe", topic=FORBIDDEN),
    )
    publisher = sec.mqtt(broker, "5.0").connect()
    publisher.publish(FORBIDDEN, b"retained-secret", qos=1, retain=True)
    publisher.publish("a/b", b"retained-open", qos=1, retain=True)
    return broker, publisher


@pytest.mark.parametrize("version,refused", [("3.1.1", 0x80), ("5.0", 0x87)])
def test_paho_hash_gets_everything_but_the_denied_topic(sec, version, refused):
    broker, publisher = start(sec)
    client = sec.mqtt(broker, version).connect()
    assert client.subscribe("#", qos=1) == [1], "# is granted"
    assert client.subscribe("test/+", qos=1) == [1], "so is any filter that only overlaps the deny"
    assert client.subscribe(FORBIDDEN, qos=1) == [refused]

    publisher.publish(FORBIDDEN, b"live-secret", qos=1)
    publisher.publish("test/other", b"live-open", qos=1)
    publisher.publish("a/b", b"marker", qos=1)
    got = [(m.topic, m.payload) for m in client.expect_until("a/b", b"marker")]
    # Retained on subscribe (for # and again for test/+), then live, merged per session.
    assert ("a/b", b"retained-open") in got
    assert ("test/other", b"live-open") in got
    assert not [m for m in got if m[0] == FORBIDDEN], f"{FORBIDDEN} leaked: {got}"
    client.expect_nothing()


def test_paho_shared_subscription_never_gets_the_denied_topic(sec):
    broker, publisher = start(sec)
    worker = sec.mqtt(broker, "5.0").connect()
    assert worker.subscribe("$share/g/#", qos=1) == [1]
    assert worker.subscribe(f"$share/g/{FORBIDDEN}", qos=1) == [0x87]
    publisher.publish(FORBIDDEN, b"live-secret", qos=1)
    publisher.publish("a/b", b"marker", qos=1)
    got = [(m.topic, m.payload) for m in worker.expect_until("a/b", b"marker")]
    assert got == [("a/b", b"marker")]


def test_mosquitto_sub_hash_gets_everything_but_the_denied_topic(sec):
    broker, publisher = start(sec)
    proc = subprocess.Popen(
        ["stdbuf", "-oL", "mosquitto_sub", "-h", broker.host, "-p", str(broker.mqtt_port),
         "-t", "#", "-q", "1", "-v", "-d", "-C", "3", "-W", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
    )
    try:
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if "received SUBACK" in line:
                break
        else:
            pytest.fail(f"mosquitto_sub got no SUBACK: {lines}")
        publisher.publish(FORBIDDEN, b"live-secret", qos=1)
        publisher.publish("test/other", b"live-open", qos=1)
        publisher.publish("a/b", b"marker", qos=1)
        # Read on through the same buffered file (mosquitto_sub exits after -C 3
        # messages, or -W 20 seconds): communicate() would skip what it buffered.
        lines += [line.rstrip("\n") for line in proc.stdout]
        assert proc.wait(30) == 0, f"mosquitto_sub exited {proc.returncode}: {lines}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    messages = [line for line in lines if not line.startswith(("Client ", "Subscribed "))]
    assert messages == ["a/b retained-open", "test/other live-open", "a/b marker"], "\n".join(lines)


def test_stomp_topic_hash_gets_everything_but_the_denied_topic(sec):
    broker, publisher = start(sec)
    stomp = sec.stomp(broker).connect()
    stomp.subscribe("/topic/#", id="all")  # waits for its RECEIPT: granted
    frame = stomp.expect()
    assert (frame.headers["destination"], frame.body) == ("/topic/a/b", b"retained-open")
    publisher.publish(FORBIDDEN, b"live-secret", qos=1)
    publisher.publish("a/b", b"marker", qos=1)
    frame = stomp.expect()
    assert (frame.headers["destination"], frame.body) == ("/topic/a/b", b"marker")
    stomp.expect_nothing()
    refused = sec.stomp(broker).connect()
    stomp_refused(refused, "SUBSCRIBE", f"/topic/{FORBIDDEN}")
