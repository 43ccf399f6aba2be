"""The store in JetStream (`[storage] backend = "nats"`): a persistent session
resumed on another node brings there what was stored for it — its
subscriptions, queued messages, messages in flight with their packet ids and
QoS 2 stage — and cancels its delayed will; real paho-mqtt clients, and a raw
MQTT 3.1.1 client where single packets must be seen or withheld, on two tern
nodes of one NATS.
"""

from __future__ import annotations

import json
import socket
import time

from rawmqtt import PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL, RawMqtt
from clusterutil import await_route, mqtt_probe
from mqttutil import TIMEOUT, MqttClient, unique
from test_cluster_state import CLIENTS_STREAM, stream_last_seq, wait_for_writes
from test_operations import TOKEN, http_get, metric, wait_for
from test_wills import will

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


def test_resume_on_another_node_resends_in_flight_messages_with_their_packet_ids(nats, nodes, mqtt):
    a = nodes.start("tern-a", [nats.url], NATS_STORE)
    b = nodes.start("tern-b", [nats.url], NATS_STORE)
    client_id, topic = unique("device"), unique("st") + "/inflight"
    first = RawMqtt(a, client_id, clean=False)
    first.subscribe(topic, qos=2)
    publisher = mqtt(a, "5.0")
    for payload, qos in [(b"q1", 1), (b"q2-released", 2), (b"q2-unanswered", 2)]:
        publisher.publish(topic, payload, qos=qos)
    sent = [first.read() for _ in range(3)]
    assert [(p.kind, p.payload, p.qos, p.dup) for p in sent] == [
        (PUBLISH, b"q1", 1, False),
        (PUBLISH, b"q2-released", 2, False),
        (PUBLISH, b"q2-unanswered", 2, False),
    ]
    q1, released, unanswered = (p.packet_id for p in sent)
    # The second QoS 2 message goes on to its PUBREL; nothing else is answered.
    first.ack(PUBREC, released)
    pubrel = first.read()
    assert (pubrel.kind, pubrel.packet_id) == (PUBREL, released)
    first.drop()
    # Once tern-a saw the connection gone (before, it may still send
    # queued-1 into the dead socket: in flight, then resent with DUP).
    wait_for(
        "tern-a saw the connection gone",
        lambda: any(
            "connection closed without DISCONNECT" in line and client_id in line
            for line in a.stderr_text().splitlines()
        ),
    )
    # Queued for the offline session; tern-a's commits are in order, so with
    # these PUBACKs the states above are in JetStream too.
    for payload in (b"queued-1", b"queued-2"):
        publisher.publish(topic, payload, qos=1)

    second = RawMqtt(b, client_id, clean=False)
    try:
        assert second.session_present, "the session stored by tern-a resumes on tern-b"
        resent = [second.read() for _ in range(5)]
        publishes = [(p.payload, p.qos, p.dup, p.packet_id) for p in resent if p.kind == PUBLISH]
        assert [p[:3] for p in publishes] == [
            (b"q1", 1, True),
            (b"q2-unanswered", 2, True),
            (b"queued-1", 1, False),
            (b"queued-2", 1, False),
        ], resent
        assert [p[3] for p in publishes[:2]] == [q1, unanswered], "in-flight messages keep their packet ids"
        assert [(p.kind, p.packet_id) for p in resent if p.kind != PUBLISH] == [(PUBREL, released)]
        assert len({p[3] for p in publishes} | {released}) == 5, "packet ids in use are not given again"
        # Completing every exchange leaves nothing owed.
        second.ack(PUBACK, q1)
        second.ack(PUBCOMP, released)
        second.ack(PUBREC, unanswered)
        assert (lambda p: (p.kind, p.packet_id))(second.read()) == (PUBREL, unanswered)
        second.ack(PUBCOMP, unanswered)
        for _, _, _, packet_id in publishes[2:]:
            second.ack(PUBACK, packet_id)
        # The subscription came along: a message published on tern-b now reaches it.
        mqtt(b, "5.0").publish(topic, b"after", qos=1)
        after = second.read()
        assert (after.kind, after.payload) == (PUBLISH, b"after")
        second.ack(PUBACK, after.packet_id)
        second.expect_nothing(within=0.5)
    finally:
        second.drop()
    third = RawMqtt(b, client_id, clean=False)
    try:
        assert third.session_present
        third.expect_nothing(within=1.0)
    finally:
        third.drop()


def connected_here(node, client_id: str) -> bool:
    status, body = http_get(node, "/api/clients", TOKEN)
    assert status == 200, body
    return any(c["client_id"] == client_id for c in json.loads(body))


def test_resume_on_another_node_cancels_the_delayed_will_of_a_lost_connection(nats, nodes, mqtt):
    env = {**NATS_STORE, "TERN_HTTP__ADMIN_TOKEN": TOKEN}
    a = nodes.start("tern-a", [nats.url], env)
    b = nodes.start("tern-b", [nats.url], env)
    topic = unique("will") + "/gone"
    watcher = mqtt(b, "5.0")
    watcher.subscribe(topic, qos=1)
    await_route(*mqtt_probe(mqtt(a, "5.0"), watcher, topic))
    client_id, delay = unique("device"), 4
    first = MqttClient(a, "5.0", client_id=client_id, clean=False, session_expiry=300, will=will(topic, b"old", delay))
    first.connect()
    first.drop()
    # tern-a saw the connection go (its delayed will is waiting) before the resume.
    deadline = time.monotonic() + TIMEOUT
    while connected_here(a, client_id):
        assert time.monotonic() < deadline, "tern-a never noticed the lost connection"
        time.sleep(0.05)  # polling the admin API; the listing is the signal
    second = mqtt(b, "5.0", client_id=client_id, clean=False, session_expiry=300)
    assert second.session_present, "the session held on tern-a resumes on tern-b"
    # Past the will's delay (plus slack) nothing came: the resume cancelled it.
    watcher.expect_nothing(within=delay + 2.0)
    mqtt(a, "5.0").publish(topic, b"marker", qos=1)
    assert watcher.expect().payload == b"marker"


def raw_connack(broker, client_id: bytes) -> bytes:
    """CONNECT (MQTT 3.1.1, clean session off) and the 4 bytes of the answer."""
    variable = b"\x00\x04MQTT\x04\x00\x00\x1e"  # clean session off, keep-alive 30
    body = variable + len(client_id).to_bytes(2, "big") + client_id
    with socket.create_connection((broker.host, broker.mqtt_port), timeout=TIMEOUT) as sock:
        sock.sendall(bytes([0x10, len(body)]) + body)
        connack = b""
        while len(connack) < 4:
            chunk = sock.recv(4 - len(connack))
            assert chunk, f"connection closed after {connack!r}"
            connack += chunk
    return connack


def test_a_client_id_whose_holder_cannot_be_decided_is_refused_with_the_shared_store(nats, nodes):
    """NATS gone: a node with the shared store cannot claim the id, and a
    session made on it alone would write the id's stored records (deliveries
    numbered from 1 again) beside the node that may hold it. The client is
    refused (CONNACK 3, server unavailable) and is served once NATS is back."""
    a = nodes.start("tern-a", [nats.url], NATS_STORE)
    nats.kill()
    client_id = unique("undecided").encode()
    assert raw_connack(a, client_id) == b"\x20\x02\x00\x03", "session not present, server unavailable"
    nats.start()

    def served() -> bool:
        try:
            # Accepted (return code 0); the session may be present already,
            # made by an attempt this side gave up waiting for.
            connack = raw_connack(a, client_id)
            return connack[:2] == b"\x20\x02" and connack[3] == 0
        except TimeoutError:  # JetStream still recovering: the claim waits for it
            return False

    wait_for("the id claimed once JetStream answers", served, timeout=90)
