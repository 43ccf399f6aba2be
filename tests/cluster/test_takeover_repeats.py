"""No QoS 2 repeat when a session moves between nodes (#19): a persistent
session completes QoS 2 messages of a third node on tern-a, then resumes on
tern-b, whose routing of that node's messages lags behind (a backlog for
its own sessions, built while tern-b was stopped with SIGSTOP). tern-b must
not route to the resumed session what it had on tern-a already; what comes
later it gets. Two ways: tern-a lets the session go (its word says its
marks), or tern-a is killed once its store committed (tern-b reads tern-a's
marks from the store). Real paho-mqtt clients, mosquitto_pub for the
backlog, three tern nodes on one NATS with the store in JetStream.
"""

from __future__ import annotations

import subprocess

import pytest

from rawmqtt import RawMqtt
from clusterutil import await_route, mqtt_probe, resume_node, stop_node
from mqttutil import TIMEOUT, MqttClient, unique
from test_cluster_state import CLIENTS_STREAM, stream_last_seq, wait_for_writes
from test_node_death import kill9
from test_operations import metric, wait_for

# A window big enough that tern-c sends the whole backlog without waiting
# for tern-b to confirm it (tern-a gets its messages meanwhile); no node
# taken for dead while tern-b is stopped: about a minute, as each QoS 2
# publish's ack waits for tern-b's confirm until it times out (3 s).
ENV = {
    "TERN_STORAGE__BACKEND": "nats",
    "TERN_CLUSTER__WINDOW": "1000000",
    "TERN_CLUSTER__DEAD_AFTER_MS": "180000",
}
# Messages of the backlog, and tern-b's sessions it is routed to (never
# read: dropped once their queues are full, each a routing step of tern-b's
# all the same): tern-b must still be at it when the session resumes there,
# after tern-a's word or, tern-a killed, the claim's wait for it (1 s).
BACKLOG = {"lets_go": 60_000, "killed": 120_000}
STALLED = {"lets_go": 16, "killed": 24}
QOS2 = 20


@pytest.mark.parametrize("old_node", ["lets_go", "killed"])
def test_resume_on_another_node_repeats_no_qos2_message_a_lagging_node_still_holds(old_node, nats, nodes, mqtt):
    a = nodes.start("tern-a", [nats.url], ENV)
    b = nodes.start("tern-b", [nats.url], ENV)
    c = nodes.start("tern-c", [nats.url], ENV)
    client_id = unique("device")
    first = MqttClient(a, "5.0", client_id=client_id, clean=False, session_expiry=300).connect()
    second = None
    stalled = []
    try:
        before = stream_last_seq(nats, CLIENTS_STREAM)
        assert first.subscribe("rp/t", qos=2) == [2]
        wait_for_writes(nats, CLIENTS_STREAM, before + 1)
        watcher = mqtt(b)  # sees when tern-b routes the QoS 2 messages
        assert watcher.subscribe("rp/t", qos=0) == [0]
        for _ in range(STALLED[old_node]):
            raw = RawMqtt(b, unique("stalled"), clean=True)
            raw.subscribe("rp/bulk", qos=0)
            stalled.append(raw)
        publisher = mqtt(c)
        await_route(*mqtt_probe(publisher, first, "rp/t"))
        await_route(*mqtt_probe(publisher, watcher, "rp/t"))
        bulk_probe = mqtt(b)
        assert bulk_probe.subscribe("rp/bulk", qos=0) == [0]
        await_route(*mqtt_probe(publisher, bulk_probe, "rp/bulk"))
        bulk_probe.close()  # the stalled sessions keep tern-b's interest
        while first.messages.qsize():
            first.messages.get_nowait()

        # tern-b reads nothing from NATS meanwhile: the backlog and the QoS 2
        # messages wait for it, in tern-c's order.
        stop_node(b)
        lines = "\n".join(f"b{n}" for n in range(BACKLOG[old_node])) + "\n"
        subprocess.run(
            ["mosquitto_pub", "-h", c.host, "-p", str(c.mqtt_port), "-t", "rp/bulk", "-q", "0", "-l"],
            input=lines.encode(),
            check=True,
            timeout=120,
        )
        sent = [f"q-{n}".encode() for n in range(QOS2)]
        for payload in sent:
            publisher.publish("rp/t", payload, qos=2)
        got = first.expect_n(QOS2, timeout=TIMEOUT)
        assert [m.payload for m in got] == sent, "tern-a routed them at once"
        first.disconnect()  # after the PUBCOMPs: completed on tern-a
        if old_node == "killed":
            # Its commits carry its marks: once the deliveries' deletes are in.
            wait_for("tern-a committed the completions", lambda: metric(a, "tern_store_messages") == 0)
            kill9(nodes, "tern-a")

        resume_node(b)
        second = MqttClient(b, "5.0", client_id=client_id, clean=False, session_expiry=300).connect()
        assert second.session_present, "resumed on tern-b"
        # tern-b routes the QoS 2 messages after its backlog: by the time
        # the watcher has them, a repeat would be queued for the session.
        seen = watcher.expect_until("rp/t", sent[-1], timeout=120)
        assert [m.payload for m in seen if m.payload.startswith(b"q-")] == sent
        publisher.publish("rp/t", b"after", qos=2)
        after = second.expect_until("rp/t", b"after", timeout=TIMEOUT)
        repeats = [m.payload for m in after if m.payload != b"after"]
        assert repeats == [], f"QoS 2 messages completed on tern-a came again on tern-b: {repeats}"
        # The case is the one of the issue: tern-b had not routed tern-c's
        # messages as far as tern-a when it restored the session.
        assert "origins_skipped=1" in b.stderr_text(), "tern-b did not lag: nothing was tested"
    finally:
        resume_node(b)
        for raw in stalled:
            raw.drop()
        for client in (first, second):
            if client is not None:
                client.close()
