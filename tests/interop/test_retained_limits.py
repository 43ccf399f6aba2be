"""Retained sets and topic limits with paho-mqtt 2.x (an independent client) against
the real `tern` binary: a retained set 16x the session queue's byte limit arrives
whole at a new `#`-style subscriber; over-deep filters and topics are refused."""

from __future__ import annotations

import pytest

from mqttutil import MqttClient, unique
from ternproc import start_broker, stop_broker

BOTH = pytest.mark.parametrize("version", ["3.1.1", "5.0"])

COUNT = 2000
PAYLOAD = b"r" * 8192


@pytest.fixture
def small_queue_broker(tmp_path):
    """A broker whose session queues hold at most 1 MiB (16 MB of retained messages below)."""
    broker = start_broker(tmp_path, extra_env={"TERN_LIMITS__MAX_QUEUED_BYTES": "1048576"})
    clients = []
    yield broker, clients
    for client in clients:
        client.close()
    assert stop_broker(broker) == 0


@BOTH
def test_every_retained_message_reaches_a_new_subscriber_past_the_queue_limit(
    small_queue_broker, version
):
    broker, clients = small_queue_broker
    prefix = unique("fleet")
    pub = MqttClient(broker, version, client_id=unique("pub")).connect()
    clients.append(pub)
    for i in range(COUNT):
        pub.publish(f"{prefix}/{i}", PAYLOAD, qos=1, retain=True)
    sub = MqttClient(broker, version, client_id=unique("sub")).connect()
    clients.append(sub)
    assert sub.subscribe(f"{prefix}/#", 1) == [1]
    got = sub.expect_n(COUNT, timeout=60)
    assert len({m.topic for m in got}) == COUNT, "every retained topic once"
    assert all(m.retain and m.payload == PAYLOAD for m in got)
    sub.expect_nothing()


@BOTH
def test_a_filter_deeper_than_max_topic_levels_is_refused(broker, mqtt_client, version):
    c = mqtt_client(version, client_id=unique("deep")).connect()
    deep = "/".join(["a"] * 129)
    refused = 0x8F if version == "5.0" else 0x80
    assert c.subscribe(deep, 1) == [refused]
    assert c.subscribe("/".join(["a"] * 128), 1) == [1]
