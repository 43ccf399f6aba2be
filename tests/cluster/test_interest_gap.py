"""The interest gap (issue #19): a node killed while holding an offline
persistent session drops out of the nodes alive (heartbeat, 6 s) before the
survivors notice its death and take its sessions over. With
`cluster.strict_acks`, a QoS 1 publish on a survivor in between is not
acknowledged (the dead node stays "unsettled" until every survivor says it
took it over), so every PUBACKed message reaches the session when it
resumes on the survivor.

Real nats-server, real tern processes (NATS store), real paho clients.
`dead_after` is set above the heartbeat timeout so the gap is seconds wide.
"""

from __future__ import annotations

import queue
import threading

from clusterutil import await_route, mqtt_probe
from mqttutil import TIMEOUT, MqttClient, unique
from test_node_death import TAKEN_OVER, kill9
from test_operations import metric, wait_for

ENV = {
    "TERN_STORAGE__BACKEND": "nats",
    "TERN_CLUSTER__STRICT_ACKS": "true",
    "TERN_CLUSTER__LIVENESS_INTERVAL_MS": "1000",
    # The heartbeat goes stale after 6 s; the death is noticed 6 s or more later.
    "TERN_CLUSTER__DEAD_AFTER_MS": "12000",
}


def publish_until(node, topic: str, stop: threading.Event, acked: set) -> None:
    """QoS 1 messages "0", "1", ... on `topic`, one at a time, until `stop`,
    each number acknowledged added to `acked`; after a connection closed (an
    ack refused) the next goes on a new one, nothing is sent again."""
    client = MqttClient(node, "5.0", client_id=unique("pub")).connect()
    n = 0
    while not stop.is_set():
        if client.disconnected.is_set():
            client.close()
            client = MqttClient(node, "5.0", client_id=unique("pub")).connect()
        info = client.client.publish(topic, str(n).encode(), qos=1)
        try:
            info.wait_for_publish(5.0)
        except (RuntimeError, ValueError):
            pass  # not connected: its ack never comes
        if published(info):
            acked.add(n)
        n += 1
    client.close()


def published(info) -> bool:
    """PUBACK came (paho raises for a publish made while disconnected:
    not counted, whatever became of it)."""
    try:
        return info.is_published()
    except (RuntimeError, ValueError):
        return False


def offline_session(node, topic: str, while_online=None) -> str:
    """A persistent session on `node` subscribed to `topic`, left offline
    (`node` holds what comes for it); its client id."""
    session_id = unique("keeper")
    keeper = MqttClient(node, "5.0", client_id=session_id, clean=False, session_expiry=600)
    keeper.connect()
    assert keeper.subscribe(topic, qos=1) == [1]
    if while_online is not None:
        while_online(keeper)
    keeper.disconnect()
    return session_id


def assert_every_acked_message_resumes(mqtt, node, session_id: str, acked: set) -> None:
    """The session resumed on `node` gets every acknowledged number."""
    resumed = mqtt(node, client_id=session_id, clean=False, session_expiry=600)
    assert resumed.session_present
    missing = {str(n) for n in acked}
    try:
        while missing:
            missing.discard(resumed.messages.get(timeout=TIMEOUT).payload.decode())
    except queue.Empty:
        pass
    assert not missing, (
        f"{len(missing)} of {len(acked)} acknowledged messages lost: "
        f"{sorted(missing, key=int)[:20]}"
    )


def acks_until_taken_over(node, topic: str, acked: set, timeout: float, meanwhile=None) -> None:
    """Publishes on `node` (numbers acknowledged into `acked`) until it took
    a dead node over and 20 more were acknowledged; acks refused meanwhile.
    `meanwhile` runs once publishing started (say, the kill)."""
    stop = threading.Event()
    publisher = threading.Thread(target=publish_until, args=(node, topic, stop, acked))
    publisher.start()
    try:
        if meanwhile is not None:
            meanwhile()
        wait_for("the dead node taken over", lambda: TAKEN_OVER in node.stderr_text(), timeout=timeout)
        before = len(acked)
        wait_for("acks once the session is here", lambda: len(acked) >= before + 20, timeout=30)
    finally:
        stop.set()
        publisher.join(TIMEOUT * 3)
    # Acks refused meanwhile closed the publisher's connections.
    assert "other cluster nodes did not confirm the message in time" in node.stderr_text()


def test_no_message_is_acked_while_a_dead_nodes_session_is_on_no_node(nats, nodes, mqtt):
    a = nodes.start("tern-a", [nats.url], ENV)
    b = nodes.start("tern-b", [nats.url], ENV)
    topic = unique("gap") + "/t"
    session_id = offline_session(a, topic, lambda keeper: await_route(*mqtt_probe(mqtt(b), keeper, topic)))
    # tern-b waits for the confirms of the nodes it heard (heartbeats, 2 s).
    wait_for("tern-a heard by tern-b", lambda: metric(b, "tern_cluster_nodes") == 2)

    acked: set = set()

    def kill_after_some_acks():
        wait_for("acks before the kill", lambda: len(acked) >= 5)
        kill9(nodes, "tern-a")

    acks_until_taken_over(b, topic, acked, timeout=30, meanwhile=kill_after_some_acks)

    assert_every_acked_message_resumes(mqtt, b, session_id, acked)


def test_a_node_started_after_another_died_waits_for_it_until_taken_over(nats, nodes, mqtt):
    """A node learns the others from their liveness keys at once, their
    heartbeats only within 2 s. Started right after tern-a was killed, tern-b
    never hears tern-a's heartbeat: it must still wait for tern-a (known
    from its key) until it took tern-a over, not acknowledge with nobody to
    confirm (every message acked in between was lost for tern-a's session)."""
    a = nodes.start("tern-a", [nats.url], ENV)
    topic = unique("late") + "/t"
    session_id = offline_session(a, topic)
    kill9(nodes, "tern-a")
    b = nodes.start("tern-b", [nats.url], ENV)

    acked: set = set()
    acks_until_taken_over(b, topic, acked, timeout=40)

    assert_every_acked_message_resumes(mqtt, b, session_id, acked)
