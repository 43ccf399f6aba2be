"""The store in JetStream (`[storage] backend = "nats"`): a persistent session
resumed on another node brings the messages stored for it there, with real
paho-mqtt clients on two tern nodes of one NATS.
"""

from __future__ import annotations

from mqttutil import TIMEOUT, MqttClient, unique
from test_cluster_state import CLIENTS_STREAM, stream_last_seq, wait_for_writes

NATS_STORE = {"TERN_STORAGE__BACKEND": "nats"}


def test_resume_on_another_node_delivers_what_was_stored_for_the_session(nats, nodes):
    a = nodes.start("tern-a", [nats.url], NATS_STORE)
    b = nodes.start("tern-b", [nats.url], NATS_STORE)
    client_id = unique("device")
    first = MqttClient(a, "5.0", client_id=client_id, clean=False, session_expiry=300).connect()
    second = publisher = None
    try:
        before = stream_last_seq(nats, CLIENTS_STREAM)
        assert first.subscribe("st/resume/+", qos=1) == [1]
        wait_for_writes(nats, CLIENTS_STREAM, before + 1)
        first.disconnect()

        # Stored on tern-a for the offline session: each PUBACK after JetStream acked.
        publisher = MqttClient(a, "5.0", client_id=unique("pub")).connect()
        sent = [f"m-{i}".encode() for i in range(20)]
        for payload in sent:
            publisher.publish("st/resume/1", payload, qos=1)

        second = MqttClient(b, "5.0", client_id=client_id, clean=False, session_expiry=300).connect()
        assert second.session_present, "the session stored by tern-a resumes on tern-b"
        got = second.expect_n(len(sent), timeout=TIMEOUT)
        assert [m.payload for m in got] == sent, "every stored message, in order"
        assert all(m.qos == 1 for m in got)
        second.expect_nothing()
    finally:
        for client in (first, second, publisher):
            if client is not None:
                client.close()
