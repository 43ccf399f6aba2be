"""A QoS 1 publish forwarded to other nodes is acknowledged only once every
node alive confirmed it: routed there and what that stored committed (issue
#19). So a node killed right after its PUBACKs loses no acknowledged message
for a persistent session on another node, and a node that does not answer
holds the publisher's acks until it does (or until it counts as dead).

Real nats-server, real tern processes (redb store each), real paho clients.
"""

from __future__ import annotations

import queue

from clusterutil import await_route, flood_qos1, mqtt_probe, resume_node, stop_node
from mqttutil import TIMEOUT, unique
from test_node_death import kill9
from test_operations import metric

PUBLISHERS = 4
PER_PUBLISHER = 500


def routed_pair(nats, nodes, mqtt, prefix: str):
    """Nodes A and B, with messages published on A reaching `prefix/#` on B."""
    a = nodes.start("tern-a", [nats.url])
    b = nodes.start("tern-b", [nats.url])
    watcher = mqtt(b)
    watcher.subscribe(f"{prefix}/#", qos=1)
    await_route(*mqtt_probe(mqtt(a), watcher, f"{prefix}/probe"))
    return a, b, watcher


def test_messages_acked_before_the_publishing_node_is_killed_reach_a_persistent_session_elsewhere(
    nats, nodes, mqtt
):
    prefix = unique("acked")
    a, b, watcher = routed_pair(nats, nodes, mqtt, prefix)
    session_id = unique("keeper")
    keeper = mqtt(b, client_id=session_id, clean=False, session_expiry=600)
    assert keeper.subscribe(f"{prefix}/#", qos=1) == [1]
    # Offline: B keeps what comes for it in its store.
    keeper.disconnect()
    # The keeper's interest is the watcher's filter: routed to B already.
    await_route(*mqtt_probe(mqtt(a), watcher, f"{prefix}/probe"))

    publishers, infos = flood_qos1(a, prefix, PUBLISHERS, PER_PUBLISHER, 500)
    # At once after the last PUBACK: whatever A still held is lost with it.
    kill9(nodes, "tern-a")
    acked = {
        f"{index}-{n}"
        for index, batch in enumerate(infos)
        for n, info in enumerate(batch)
        if info.is_published()
    }
    assert len(acked) == PUBLISHERS * PER_PUBLISHER, f"only {len(acked)} publishes acknowledged"
    for publisher in publishers:
        publisher.close()

    resumed = mqtt(b, client_id=session_id, clean=False, session_expiry=600)
    assert resumed.session_present
    # The probes sent while it was offline come too.
    missing = set(acked)
    try:
        while missing:
            missing.discard(resumed.messages.get(timeout=TIMEOUT).payload.decode())
    except queue.Empty:
        pass
    assert not missing, f"{len(missing)} acknowledged messages lost with node A"


def test_a_publishers_ack_waits_for_a_node_that_does_not_answer(nats, nodes, mqtt):
    prefix = unique("held")
    a, b, watcher = routed_pair(nats, nodes, mqtt, prefix)
    publisher = mqtt(a)
    timeouts_before = metric(a, "tern_cluster_confirm_timeouts_total")
    stop_node(b)
    try:
        info = publisher.client.publish(f"{prefix}/x", b"waits", qos=1)
        # B is alive for A (its heartbeat is recent) and routes nothing now:
        # the PUBACK waits for its confirm (1 s, well within its 3 s timeout).
        info.wait_for_publish(1.0)
        assert not info.is_published(), "acknowledged before node B confirmed it"
    finally:
        resume_node(b)
    info.wait_for_publish(TIMEOUT)
    assert info.is_published(), "no PUBACK once node B answered again"
    assert watcher.expect().payload == b"waits"
    assert metric(a, "tern_cluster_confirm_timeouts_total") == timeouts_before, "B confirmed in time"
