"""Nothing lost, nothing repeated, when a session moves between two LIVE
nodes (#19): a persistent session held (offline) on tern-a is resumed by its
client on tern-b. tern-a routes nothing more to it once it lets it go;
tern-b must have what is published from then on, even before it has the
session. tern-b is stopped (SIGSTOP) right after its claim is written, so
tern-a lets go and the publisher on tern-c sends while tern-b cannot have
attached the session yet: the window of the issue, made wide. Real
paho-mqtt clients, three tern nodes on one NATS with the store in JetStream.
"""

from __future__ import annotations

import threading
import time

from clusterutil import await_route, mqtt_probe, resume_node, stop_node
from mqttutil import TIMEOUT, MqttClient, unique
from test_cluster_state import CLIENTS_STREAM, stream_last_seq, wait_for_writes
from test_operations import wait_for

# No node taken for dead while tern-b is stopped.
ENV = {
    "TERN_STORAGE__BACKEND": "nats",
    "TERN_CLUSTER__DEAD_AFTER_MS": "60000",
}
N = 20


def test_a_session_moving_between_live_nodes_gets_what_was_published_meanwhile_once(nats, nodes, mqtt):
    a = nodes.start("tern-a", [nats.url], ENV)
    b = nodes.start("tern-b", [nats.url], ENV)
    c = nodes.start("tern-c", [nats.url], ENV)
    client_id = unique("mover")
    first = MqttClient(a, "5.0", client_id=client_id, clean=False, session_expiry=300).connect()
    second = MqttClient(b, "5.0", client_id=client_id, clean=False, session_expiry=300)
    try:
        before = stream_last_seq(nats, CLIENTS_STREAM)
        assert first.subscribe("mv/t", qos=1) == [1]
        wait_for_writes(nats, CLIENTS_STREAM, before + 1)
        publisher = mqtt(c)
        await_route(*mqtt_probe(publisher, first, "mv/t"))
        while first.messages.qsize():
            first.messages.get_nowait()
        first.disconnect()  # the session stays on tern-a, offline
        queued = [f"queued-{n}".encode() for n in range(N)]
        for payload in queued:
            publisher.publish("mv/t", payload, qos=1)

        # The client comes back on tern-b; tern-b is stopped once its claim is in.
        claims = stream_last_seq(nats, CLIENTS_STREAM)
        connecting = threading.Thread(target=second.connect, daemon=True)
        connecting.start()
        # Polled without a pause: tern-b goes on at once (tern-a's word comes
        # once its commit is in).
        deadline = time.monotonic() + TIMEOUT
        while stream_last_seq(nats, CLIENTS_STREAM) <= claims:
            assert time.monotonic() < deadline, "tern-b's claim never written"
        stop_node(b)
        attached_before_stop = second.connected.is_set()
        wait_for(
            "tern-a let the session go",
            lambda: "session taken over on another node" in a.stderr_text(),
        )
        # tern-a routes these to no session now; tern-b reads nothing yet.
        during = [f"during-{n}".encode() for n in range(N)]
        sent = [publisher.client.publish("mv/t", payload, qos=1) for payload in during]
        resume_node(b)
        connecting.join(TIMEOUT)
        assert second.connected.is_set(), "no CONNACK from tern-b"
        assert second.session_present, "resumed on tern-b"
        assert not attached_before_stop, "tern-b attached before it was stopped: nothing was tested"
        for info in sent:
            info.wait_for_publish(TIMEOUT)
            assert info.is_published()
        publisher.publish("mv/t", b"after", qos=1)
        got = [m.payload for m in second.expect_until("mv/t", b"after", timeout=TIMEOUT)]
        lost = [p for p in queued + during if p not in got]
        repeated = sorted({p for p in got if got.count(p) > 1})
        assert lost == [], f"published while the session moved, never delivered: {lost}"
        assert repeated == [], f"delivered twice: {repeated}"
        assert got == queued + during + [b"after"], "in publishing order"
        assert "messages routed while it moved handed over" in b.stderr_text()
    finally:
        resume_node(b)
        first.close()
        second.close()
