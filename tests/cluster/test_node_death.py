"""A tern node killed with SIGKILL (`[storage] backend = "nats"`): the
survivors notice it through its liveness key, publish the wills of its
clients exactly once, let its sessions resume elsewhere, and a node restarted
under the same name does not take back a session that moved.

Real nats-server, real tern processes, real paho-mqtt clients. Liveness is
set short (a beat every 200 ms, dead after 1.5 s) so the tests wait little.
"""

from __future__ import annotations

import json
import queue
import time

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from clusterutil import await_route, mqtt_probe
from mqttutil import TIMEOUT, MqttClient, unique
from test_operations import http_get, metric, wait_for

TOKEN = "cluster-admin"
DEAD_AFTER = 1.5
ENV = {
    "TERN_STORAGE__BACKEND": "nats",
    "TERN_CLUSTER__LIVENESS_INTERVAL_MS": "200",
    "TERN_CLUSTER__DEAD_AFTER_MS": str(int(DEAD_AFTER * 1000)),
    "TERN_HTTP__ADMIN_TOKEN": TOKEN,
}
TAKEN_OVER = "client ids of a dead node taken over"


def will(topic: str, payload: bytes, delay: int = 0) -> dict:
    properties = Properties(PacketTypes.WILLMESSAGE)
    if delay:
        properties.WillDelayInterval = delay
    return {"topic": topic, "payload": payload, "qos": 1, "retain": False, "properties": properties}


def kill9(nodes, name: str) -> None:
    """SIGKILL, as a power loss: no goodbye to NATS, nothing flushed."""
    broker = nodes.running.pop(name)
    broker.proc.kill()
    broker.proc.wait(10)


def start(nodes, nats, *names):
    return [nodes.start(name, [nats.url], ENV) for name in names]


def watch_both(mqtt, x, y, prefix: str) -> list:
    """A subscriber of `prefix/#` on each of `x` and `y` that messages
    published on the other node reach (probes, drained)."""
    watchers = [mqtt(x), mqtt(y)]
    for watcher in watchers:
        assert watcher.subscribe(f"{prefix}/#", qos=1) == [1]
    publishers = {"x": mqtt(x), "y": mqtt(y)}
    remote = [b"y", b"x"]  # what watcher 0 (on x) and 1 (on y) wait for
    deadline = time.monotonic() + TIMEOUT
    seen = [False, False]
    while not all(seen):
        assert time.monotonic() < deadline, "no probe crossed between the nodes"
        for name, publisher in publishers.items():
            publisher.publish(f"{prefix}/probe", name.encode(), qos=1)
        for i, watcher in enumerate(watchers):
            try:
                while True:
                    if watcher.messages.get(timeout=0.2).payload == remote[i]:
                        seen[i] = True
            except queue.Empty:
                pass
    for watcher in watchers:
        watcher.expect_nothing(within=0.5)  # drained of probes
    return watchers


def taken_over(*brokers) -> bool:
    return any(TAKEN_OVER in b.stderr_text() for b in brokers)


def test_wills_of_a_killed_nodes_clients_are_published_exactly_once(nats, nodes, mqtt):
    a, b, c = start(nodes, nats, "tern-a", "tern-b", "tern-c")
    prefix = unique("will")
    topic = prefix + "/gone"
    watchers = watch_both(mqtt, b, c, prefix)
    # A persistent session and a clean one, both live on tern-a when it dies.
    persistent = MqttClient(a, "5.0", client_id=unique("dev"), clean=False, session_expiry=300, will=will(topic, b"persistent"))
    clean = MqttClient(a, "5.0", client_id=unique("dev"), will=will(topic, b"clean"))
    for client in (persistent, clean):
        client.connect()
    wait_for("tern-a alive on tern-b", lambda: metric(b, "tern_cluster_nodes") == 3)

    kill9(nodes, "tern-a")
    for client in (persistent, clean):
        client.close()

    for watcher in watchers:
        got = watcher.expect_n(2, timeout=TIMEOUT)
        assert sorted(m.payload for m in got) == [b"clean", b"persistent"]
    # Every survivor tried to take tern-a's clients over; a second copy of
    # either will would have come by now.
    wait_for("take-over done", lambda: TAKEN_OVER in b.stderr_text() and TAKEN_OVER in c.stderr_text())
    for watcher in watchers:
        watcher.expect_nothing(within=2.0)

    # What operators see: tern-a dead, one line per event.
    assert metric(b, "tern_cluster_nodes_dead") == 1
    assert metric(b, "tern_cluster_node_deaths_total") == 1
    status, body = http_get(b, "/api/nodes", TOKEN)
    assert status == 200, body
    listed = json.loads(body)
    assert listed["dead"] == ["tern-a"]
    assert [n["node"] for n in listed["nodes"]] == ["tern-b", "tern-c"]
    assert b.stderr_text().count("cluster: node dead") == 1


def test_a_delayed_will_is_cancelled_by_a_resume_on_another_node(nats, nodes, mqtt):
    a, b, c = start(nodes, nats, "tern-a", "tern-b", "tern-c")
    prefix = unique("will")
    topic = prefix + "/gone"
    watcher, _ = watch_both(mqtt, b, c, prefix)
    client_id = unique("dev")
    delay = 6
    first = MqttClient(a, "5.0", client_id=client_id, clean=False, session_expiry=300, will=will(topic, b"old", delay))
    first.connect()
    inbox = unique("in") + "/t"
    assert first.subscribe(inbox, qos=1) == [1]
    kill9(nodes, "tern-a")
    first.close()
    # A survivor adopts the session, the will's delay running there.
    wait_for("tern-a's clients taken over", lambda: taken_over(b, c))

    second = MqttClient(c, "5.0", client_id=client_id, clean=False, session_expiry=300)
    try:
        second.connect()
        assert second.session_present, "tern-a's session resumes on tern-c"
        # Its subscription came with it.
        await_route(*mqtt_probe(mqtt(b), second, inbox))
        # Past the delay (plus slack) nothing came: the resume cancelled the will.
        watcher.expect_nothing(within=delay + 2.0)
        marker = mqtt(c)
        marker.publish(topic, b"marker", qos=1)
        assert watcher.expect().payload == b"marker"
    finally:
        second.close()


def test_a_restarted_node_does_not_take_back_a_session_that_moved(nats, nodes, mqtt):
    a, b = start(nodes, nats, "tern-a", "tern-b")
    topic = unique("moved") + "/t"
    client_id = unique("dev")
    first = MqttClient(a, "5.0", client_id=client_id, clean=False, session_expiry=300)
    first.connect()
    assert first.subscribe(topic, qos=1) == [1]
    kill9(nodes, "tern-a")
    first.close()
    wait_for("tern-a taken for dead", lambda: "cluster: node dead" in b.stderr_text())

    second = MqttClient(b, "5.0", client_id=client_id, clean=False, session_expiry=300)
    try:
        second.connect()
        assert second.session_present
        (a,) = start(nodes, nats, "tern-a")
        wait_for("tern-a back", lambda: "cluster: node alive again" in b.stderr_text())
        status, body = http_get(a, f"/api/cluster/clients/{client_id}", TOKEN)
        assert status == 200, body
        assert json.loads(body)["node"] == "tern-b", body
        assert "sessions=0" in a.stderr_text(), "tern-a loaded no session"
        # The restarted node serves new connections; its publishes reach the
        # moved session once, and the session was not taken from tern-b.
        await_route(*mqtt_probe(mqtt(a), second, topic))
        second.expect_nothing(within=1.0)
        assert not second.disconnected.is_set(), "tern-b still serves the session"
    finally:
        second.close()


def test_a_clean_start_elsewhere_sends_a_killed_nodes_will_once(nats, nodes, mqtt):
    a, b, c = start(nodes, nats, "tern-a", "tern-b", "tern-c")
    prefix = unique("will")
    topic = prefix + "/gone"
    watchers = watch_both(mqtt, b, c, prefix)
    client_id = unique("dev")
    # Far longer than the test waits: only the session's end can send it.
    first = MqttClient(a, "5.0", client_id=client_id, clean=False, session_expiry=300, will=will(topic, b"old", 600))
    first.connect()
    kill9(nodes, "tern-a")
    first.close()
    # Back at once, before the death is noticed, starting clean on tern-c.
    second = MqttClient(c, "5.0", client_id=client_id, clean=True)
    try:
        second.connect()
        assert not second.session_present
        for watcher in watchers:
            assert watcher.expect(TIMEOUT).payload == b"old"
        wait_for("take-over done", lambda: TAKEN_OVER in b.stderr_text() and TAKEN_OVER in c.stderr_text())
        for watcher in watchers:
            watcher.expect_nothing(within=1.0)
    finally:
        second.close()


def test_a_clean_start_takeover_from_a_live_node_sends_the_will_once(nats, nodes, mqtt):
    a, b = start(nodes, nats, "tern-a", "tern-b")
    prefix = unique("will")
    topic = prefix + "/gone"
    watchers = watch_both(mqtt, a, b, prefix)
    client_id = unique("dev")
    first = MqttClient(a, "5.0", client_id=client_id, clean=False, session_expiry=300, will=will(topic, b"old", 600))
    second = None
    try:
        first.connect()
        second = MqttClient(b, "5.0", client_id=client_id, clean=True).connect()
        assert first.disconnected.wait(TIMEOUT)
        for watcher in watchers:
            assert watcher.expect(TIMEOUT).payload == b"old"
        for watcher in watchers:
            watcher.expect_nothing(within=1.5)
    finally:
        for client in (first, second):
            if client is not None:
                client.close()
