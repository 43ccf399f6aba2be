"""Delayed wills (MQTT 5 will delay) of a session taken over by a connection
on another node, with real paho-mqtt clients.

The old node ends its live connection (DISCONNECT 0x8E) and must settle the
will as the cluster decided: a resumed session cancels it (the client is
back, on the other node), a clean start ended the session, so it goes now
rather than after its delay.
"""

from __future__ import annotations

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from clusterutil import await_route, mqtt_probe
from mqttutil import TIMEOUT, MqttClient, unique

SESSION_TAKEN_OVER = 0x8E


def will(topic: str, payload: bytes, delay: int) -> dict:
    properties = Properties(PacketTypes.WILLMESSAGE)
    properties.WillDelayInterval = delay
    return {"topic": topic, "payload": payload, "qos": 1, "retain": False, "properties": properties}


def test_a_resumed_session_cancels_the_delayed_will_on_the_old_node(nats, nodes, mqtt):
    a = nodes.start("tern-a", [nats.url])
    b = nodes.start("tern-b", [nats.url])
    topic = unique("will") + "/gone"
    watcher = mqtt(a, "5.0")
    watcher.subscribe(topic, qos=1)
    client_id = unique("device")
    delay = 2
    first = MqttClient(a, "5.0", client_id=client_id, clean=False, session_expiry=300, will=will(topic, b"old", delay))
    second = None
    try:
        first.connect()
        second = MqttClient(b, "5.0", client_id=client_id, clean=False, session_expiry=300).connect()
        assert second.session_present, "the session held on tern-a resumes on tern-b"
        assert first.disconnected.wait(TIMEOUT), "tern-a never closed the first connection"
        assert first.disconnect_reason == SESSION_TAKEN_OVER, first.disconnect_reason
        # Past the will's delay (plus slack) nothing came: the will was cancelled.
        watcher.expect_nothing(within=delay + 2.0)
        # The watcher hears this topic from both nodes: a marker comes next.
        marker = mqtt(b, "5.0")
        marker.publish(topic, b"marker", qos=1)
        assert watcher.expect().payload == b"marker"
    finally:
        for client in (first, second):
            if client is not None:
                client.close()


def test_a_clean_start_takeover_sends_the_delayed_will_at_once(nats, nodes, mqtt):
    a = nodes.start("tern-a", [nats.url])
    b = nodes.start("tern-b", [nats.url])
    topic = unique("will") + "/gone"
    watcher = mqtt(b, "5.0")
    watcher.subscribe(topic, qos=1)
    await_route(*mqtt_probe(mqtt(a, "5.0"), watcher, topic))
    client_id = unique("device")
    # Far longer than the test waits: only the session's end can send it.
    delay = 600
    first = MqttClient(a, "5.0", client_id=client_id, clean=False, session_expiry=3600, will=will(topic, b"old", delay))
    second = None
    try:
        first.connect()
        second = MqttClient(b, "5.0", client_id=client_id, clean=True, session_expiry=300).connect()
        assert not second.session_present
        assert first.disconnected.wait(TIMEOUT)
        assert first.disconnect_reason == SESSION_TAKEN_OVER, first.disconnect_reason
        message = watcher.expect(TIMEOUT)
        assert (message.topic, message.payload) == (topic, b"old")
    finally:
        for client in (first, second):
            if client is not None:
                client.close()
