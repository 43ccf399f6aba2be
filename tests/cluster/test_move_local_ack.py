"""A QoS 1 message of a client on the node a session moves to, captured for
that session while it moves (#19), is acknowledged only once the capture was
handed over: when the attach fails, no store holds the message, so the
publisher gets no PUBACK (its connection is closed) and sends it again; when
it succeeds, the PUBACK comes and the session has the message once.

alice's persistent session is held (offline) on tern-a; a client logging in
as bob resumes its client id on tern-b, which claims the id and captures what
it routes for the session, then finds the session alice's and refuses bob
(CONNACK 0x87): the capture fails (alice herself resuming it there: it is
handed over). tern-a is stopped (SIGSTOP) meanwhile, so
tern-b waits for tern-a's word after its claim, and alice's publisher on
tern-b sends then: captured. tern-a is let go on then (its word ends the
wait), before the publisher's outcome is read, so its confirm of the
message would let a PUBACK through.
Real paho-mqtt clients, two tern nodes on one NATS with the store in JetStream.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import paho.mqtt.client as mqtt
import pytest

from clusterutil import await_route, mqtt_probe, resume_node, stop_node
from mqttutil import TIMEOUT, MqttClient, unique
from securityutil import add_user
from ternproc import Broker
from test_cluster_state import CLIENTS_STREAM, stream_last_seq, wait_for_writes

PASSWORDS = {"alice": "alice-S3cret!", "bob": "bob-pa55word"}


def login(broker, user: str, **kwargs) -> MqttClient:
    client = MqttClient(broker, "5.0", **kwargs)
    client.client.username_pw_set(user, PASSWORDS[user])
    return client


@dataclass
class Moved:
    """A session moved from tern-a to tern-b while a client of tern-b published."""

    b: Broker
    persistent: dict
    resumer: MqttClient
    publisher: MqttClient
    held: mqtt.MQTTMessageInfo


@pytest.fixture
def move(nats, nodes, tmp_path):
    """Runs the move (see the module's doc) with the session resumed by a user."""
    password_file = tmp_path / "passwd"
    for user, password in PASSWORDS.items():
        add_user(password_file, user, password)
    env = {
        "TERN_STORAGE__BACKEND": "nats",
        # No node taken for dead while tern-a is stopped.
        "TERN_CLUSTER__DEAD_AFTER_MS": "60000",
        "TERN_AUTH__PASSWORD_FILE": str(password_file),
    }
    a = nodes.start("tern-a", [nats.url], env)
    b = nodes.start("tern-b", [nats.url], env)
    persistent = {"client_id": unique("mover"), "clean": False, "session_expiry": 300}
    clients = []

    def run(user: str) -> Moved:
        owner = login(a, "alice", **persistent).connect()
        resumer = login(b, user, **persistent)
        publisher = login(b, "alice", client_id=unique("pub")).connect()
        clients.extend([owner, resumer, publisher])
        before = stream_last_seq(nats, CLIENTS_STREAM)
        assert owner.subscribe("mv/t", qos=1) == [1]
        wait_for_writes(nats, CLIENTS_STREAM, before + 1)
        await_route(*mqtt_probe(publisher, owner, "mv/t"))
        owner.disconnect()  # the session stays on tern-a, offline
        # tern-a stopped first: once its claim is written, tern-b waits for
        # tern-a's word (a second) with the capture standing.
        stop_node(a)
        try:
            claims = stream_last_seq(nats, CLIENTS_STREAM)
            connecting = threading.Thread(target=lambda: _connect(resumer), daemon=True)
            connecting.start()
            deadline = time.monotonic() + TIMEOUT
            while stream_last_seq(nats, CLIENTS_STREAM) <= claims:
                assert time.monotonic() < deadline, "tern-b's claim never written"
            held = publisher.client.publish("mv/t", b"held", qos=1)
            # tern-a listens and did not answer the claim's request: tern-b
            # waits for its word (up to 10 s), which comes once it runs.
            resume_node(a)
            connecting.join(TIMEOUT)
            assert resumer.connected.is_set(), "no CONNACK from tern-b"
        finally:
            resume_node(a)
        return Moved(b, persistent, resumer, publisher, held)

    try:
        yield run
    finally:
        resume_node(a)
        for client in clients:
            client.close()


def test_a_local_qos1_message_captured_for_a_session_whose_attach_failed_is_not_acknowledged(move):
    moved = move("bob")
    assert moved.resumer.connack_reason.value == 0x87, "bob may not resume alice's session"
    assert moved.publisher.disconnected.wait(TIMEOUT), "the publisher's connection was not closed"
    assert not moved.held.is_published(), "acknowledged, though stored nowhere"
    assert "messages routed for it meanwhile dropped" in moved.b.stderr_text()

    # The publisher sends it again; alice finds it in her session, on tern-b now.
    again = login(moved.b, "alice", client_id=unique("pub")).connect()
    try:
        again.publish("mv/t", b"held", qos=1)
        owner = login(moved.b, "alice", **moved.persistent).connect()
        assert owner.session_present, "alice's session, restored on tern-b"
        got = owner.expect(timeout=TIMEOUT)
        assert (got.topic, got.payload) == ("mv/t", b"held")
        owner.close()
    finally:
        again.close()


def test_a_local_qos1_message_captured_for_a_session_handed_over_is_acknowledged_and_delivered_once(move):
    moved = move("alice")
    assert not moved.resumer.connack_reason.is_failure, "alice resumes her session"
    assert moved.resumer.session_present, "resumed on tern-b"
    moved.held.wait_for_publish(TIMEOUT)
    assert moved.held.is_published(), "acknowledged once handed over"
    moved.publisher.publish("mv/t", b"after", qos=1)
    got = [m.payload for m in moved.resumer.expect_until("mv/t", b"after", timeout=TIMEOUT)]
    assert got == [b"held", b"after"], "the captured message, once, in order"
    assert "messages routed while it moved handed over" in moved.b.stderr_text()


def _connect(client: MqttClient) -> None:
    """Connects `client`; a refusing CONNACK is read by the test."""
    try:
        client.connect()
    except AssertionError:
        pass
