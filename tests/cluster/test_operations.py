"""Operating a cluster: metrics, health, the node list, and faults (NATS down
at run time, shared groups and queues after a NATS restart, one NATS server
of three killed)."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request

import pytest

from clusterutil import await_route, mqtt_probe
from mqttutil import unique

TOKEN = "cluster-admin"
WAIT = 20.0


def http_get(broker, path: str, token: str | None = None):
    host, port = broker.endpoints["http"]
    request = urllib.request.Request(f"http://{host}:{port}{path}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metric(broker, name: str) -> float:
    _, body = http_get(broker, "/metrics")
    found = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", body, re.M)
    assert found, f"{name} not in /metrics"
    return float(found.group(1))


def wait_for(what: str, check, timeout: float = WAIT):
    """Polls `check` (a scrape, a log) until it is truthy; bounded."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        time.sleep(0.1)  # polling a scrape or a log file; the value is the signal


@pytest.fixture
def pair(nats, nodes):
    env = {"TERN_HTTP__ADMIN_TOKEN": TOKEN}
    return nodes.start("tern-a", [nats.url], env), nodes.start("tern-b", [nats.url], env)


def test_many_subscribers_of_one_filter_make_one_nats_interest(pair, mqtt):
    _, b = pair
    base = metric(b, "tern_cluster_subscriptions")
    clients = [mqtt(b, "3.1.1") for _ in range(30)]
    for client in clients:
        client.subscribe("sensors/#", qos=1)
    # `sensors/#` is two subjects: tern.m.sensors and tern.m.sensors.>
    wait_for("two subscriptions", lambda: metric(b, "tern_cluster_subscriptions") == base + 2)
    for client in clients[:-1]:
        client.unsubscribe("sensors/#")
    assert metric(b, "tern_cluster_subscriptions") == base + 2, "one session still wants it"
    clients[-1].unsubscribe("sensors/#")
    wait_for("released", lambda: metric(b, "tern_cluster_subscriptions") == base)


def test_nodes_metrics_and_node_list(pair, mqtt):
    a, b = pair
    wait_for("both nodes seen", lambda: metric(a, "tern_cluster_nodes") == 2 and metric(b, "tern_cluster_nodes") == 2)
    status, body = http_get(a, "/api/nodes", TOKEN)
    assert status == 200, body
    listed = json.loads(body)
    assert listed["node"] == "tern-a"
    assert [n["node"] for n in listed["nodes"]] == ["tern-a", "tern-b"]
    assert [n["this_node"] for n in listed["nodes"]] == [True, False]
    prefix = unique("m")
    sub = mqtt(b)
    sub.subscribe(f"{prefix}/#", qos=1)
    pub = mqtt(a)
    await_route(*mqtt_probe(pub, sub, f"{prefix}/p"))
    assert metric(a, "tern_cluster_messages_forwarded_total") >= 1
    assert metric(b, "tern_cluster_messages_received_total") >= 1
    assert metric(a, "tern_cluster_nats_connected") == 1
    wait_for("an RTT measured", lambda: metric(a, "tern_cluster_nats_rtt_seconds") > 0)
    assert http_get(a, "/healthz") == (200, "ok\n")


def test_nats_down_local_traffic_flows_and_cross_node_traffic_resumes(pair, nats, mqtt):
    a, b = pair
    prefix = unique("f")
    local = mqtt(a)
    local.subscribe(f"{prefix}/during", qos=1)
    remote = mqtt(b)
    remote.subscribe(f"{prefix}/#", qos=1)
    pub = mqtt(a)
    await_route(*mqtt_probe(pub, remote, f"{prefix}/p"))

    nats.stop()
    wait_for("NATS loss noticed", lambda: "NATS connection lost" in a.stderr_text())
    status, body = http_get(a, "/healthz")
    assert status == 200 and body.startswith("degraded"), body
    assert metric(a, "tern_cluster_nats_connected") == 0
    # Local traffic under the outage: every message reaches the local subscriber.
    for i in range(50):
        pub.publish(f"{prefix}/during", f"d{i}".encode(), qos=1)
    got = [m.payload.decode() for m in local.expect_n(50)]
    assert got == [f"d{i}" for i in range(50)]

    nats.start()
    wait_for("reconnected", lambda: metric(a, "tern_cluster_nats_connected") == 1 and metric(b, "tern_cluster_nats_connected") == 1)
    await_route(*mqtt_probe(pub, remote, f"{prefix}/p2"))
    pub.publish(f"{prefix}/after", b"after", qos=1)
    while remote.expect().payload.decode() != "after":
        pass  # what was published during the outage may or may not cross; "after" must
    assert http_get(a, "/healthz") == (200, "ok\n")
    assert metric(a, "tern_cluster_nats_reconnects_total") >= 1
    # Said once, not once per message published during the outage.
    assert a.stderr_text().count("NATS connection lost") == 1


def test_one_nats_server_of_three_killed_the_nodes_keep_working(nats_cluster, nodes, mqtt):
    urls = [s.url for s in nats_cluster]
    a = nodes.start("tern-a", urls)
    b = nodes.start("tern-b", urls[1:] + urls[:1])
    prefix = unique("k")
    sub = mqtt(b)
    sub.subscribe(f"{prefix}/#", qos=1)
    pub = mqtt(a)
    await_route(*mqtt_probe(pub, sub, f"{prefix}/p"))
    # Kill the server each node is on, one after the other, is too much for a
    # 3-server JetStream cluster; kill one, whichever a node uses.
    victim = _server_of(nats_cluster, "tern:tern-a") or nats_cluster[0]
    victim.kill()
    await_route(*mqtt_probe(pub, sub, f"{prefix}/p2"), timeout=30)
    for i in range(20):
        pub.publish(f"{prefix}/x", f"x{i}".encode(), qos=1)
    got = [m.payload.decode() for m in sub.expect_n(20)]
    assert got == [f"x{i}" for i in range(20)]


def _server_of(servers, connection_name: str):
    for server in servers:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{server.monitor_port}/connz", timeout=5) as r:
                names = {c.get("name") for c in json.load(r).get("connections", [])}
        except OSError:
            continue
        if connection_name in names:
            return server
    return None


def test_admin_api_tells_which_node_holds_a_client_id(pair, mqtt):
    a, b = pair
    client_id = unique("where")
    mqtt(b, "5.0", client_id=client_id)
    path = f"/api/cluster/clients/{client_id}"
    status, body = http_get(a, path, TOKEN)
    assert status == 200, body
    assert json.loads(body) == {"client_id": client_id, "node": "tern-b", "this_node": False}
    status, body = http_get(b, path, TOKEN)
    assert (status, json.loads(body)["this_node"]) == (200, True)
    # A connection with the same id on node A takes the session over.
    mqtt(a, "5.0", client_id=client_id)
    status, body = http_get(b, path, TOKEN)
    assert (status, json.loads(body)["node"]) == (200, "tern-a")
    status, body = http_get(a, f"/api/cluster/clients/{unique('nobody')}", TOKEN)
    assert status == 404, body
    status, body = http_get(a, "/api/clients", TOKEN)
    listed = {c["client_id"]: c["node"] for c in json.loads(body)}
    assert listed.get(client_id) == "tern-a"


def group_and_queue(a, b, mqtt):
    """A shared group member and a queue consumer on b, a publisher on a: a
    function that waits until a message reaches each of them."""
    from test_queues import await_consumer, next_mqtt  # noqa: PLC0415
    from test_shared import Members, await_group  # noqa: PLC0415

    prefix, q = unique("r"), unique("jobs")
    members = Members()
    members.mqtt["b"] = mqtt(b)
    assert members.mqtt["b"].subscribe(f"$share/g/{prefix}/#", qos=1) == [1]
    consumer = mqtt(b)
    assert consumer.subscribe(f"$queue/{q}", qos=1) == [1]
    pub = mqtt(a)

    def both_flow(timeout: float = WAIT):
        await_group(lambda text: pub.publish(f"{prefix}/p", text.encode(), qos=1), members, timeout)
        await_consumer(lambda text: pub.publish(f"$queue/{q}", text.encode(), qos=1),
                       lambda wait: next_mqtt(consumer, wait), timeout)

    return both_flow


def test_shared_groups_and_queues_work_again_after_nats_restarts(nats, nodes, mqtt):
    a = nodes.start("tern-a", [nats.url])
    b = nodes.start("tern-b", [nats.url])
    both_flow = group_and_queue(a, b, mqtt)
    both_flow()
    nats.stop()
    wait_for("NATS loss noticed", lambda: "NATS connection lost" in b.stderr_text())
    nats.start()
    wait_for("reconnected", lambda: metric(a, "tern_cluster_nats_connected") == 1
             and metric(b, "tern_cluster_nats_connected") == 1)
    both_flow(timeout=30)


def test_one_nats_server_of_three_killed_groups_and_queues_keep_working(nats_cluster, nodes, mqtt):
    urls = [s.url for s in nats_cluster]
    env = {"TERN_CLUSTER__REPLICAS": "3"}
    a = nodes.start("tern-a", urls, env)
    b = nodes.start("tern-b", urls[1:] + urls[:1], env)
    both_flow = group_and_queue(a, b, mqtt)
    both_flow()
    victim = _server_of(nats_cluster, "tern:tern-b") or nats_cluster[0]
    victim.kill()
    both_flow(timeout=30)
