"""Bridges (`[[bridge]]`) against real remotes: Debian's `mosquitto` and another
tern, on loopback ports chosen here. Out, in and both with prefixes, QoS 0/1/2,
retained set and clear, loop prevention, and store-and-forward across a link
down and a kill -9 of tern.

Every wait is on a message, an ack or a log line, with a timeout.
"""

from __future__ import annotations

import queue
import signal
import subprocess
import time
from types import SimpleNamespace

import pytest
import requests

from bridgeutil import (
    BridgeFlagRefuser,
    bridge_table,
    mosquitto,
    start_tern_with,
    toml_string,
    wait_log,
    waiting_subscriber,
)
from mqttutil import MqttClient, unique
from ports import free_port
from ternproc import start_broker, stop_broker, tern_bin

CONNECTED = "bridge connected"


@pytest.fixture
def remote(tmp_path):
    m = mosquitto(tmp_path).start()
    yield m
    m.stop()


def started(tmp_path, remote, topics, protocol="mqttv5", extra=""):
    tern = start_tern_with(
        tmp_path / "tern", bridge_table("cloud", remote.mqtt_port, topics, protocol, extra)
    )
    wait_log(tern, CONNECTED)
    return tern


def client(broker, version="5.0", **kwargs) -> MqttClient:
    return MqttClient(broker, version, **kwargs).connect()


PROTOCOLS = [("mqttv5", "5.0"), ("mqttv311", "3.1.1")]


@pytest.mark.parametrize("protocol,version", PROTOCOLS)
def test_out_in_and_both_with_prefixes(tmp_path, remote, protocol, version):
    tern = started(
        tmp_path,
        remote,
        ["sensors/# out 1", "commands/# in 1 site7/ plant/", "sync/# both 1 local/ remote/"],
        protocol,
    )
    try:
        at_remote = client(remote, version)
        at_remote.subscribe("#", qos=1)
        here = client(tern, version)
        here.subscribe("#", qos=1)
        # The remote SUBSCRIBE is acknowledged before anything flows; a
        # message in each direction proves both ends are ready.
        here.publish("sensors/t1", b"21.5", qos=1)
        got = at_remote.expect_until("sensors/t1", b"21.5")
        assert [(m.topic, m.payload) for m in got] == [("sensors/t1", b"21.5")]
        assert here.expect().topic == "sensors/t1"  # its own local delivery

        at_remote.publish("plant/commands/open", b"valve", qos=1)
        assert at_remote.expect().topic == "plant/commands/open"
        m = here.expect()
        assert (m.topic, m.payload) == ("site7/commands/open", b"valve")

        here.publish("local/sync/a", b"out", qos=1)
        assert here.expect().topic == "local/sync/a"
        m = at_remote.expect()
        assert (m.topic, m.payload) == ("remote/sync/a", b"out")
        at_remote.publish("remote/sync/b", b"in", qos=1)
        assert at_remote.expect().topic == "remote/sync/b"
        m = here.expect()
        assert (m.topic, m.payload) == ("local/sync/b", b"in")
        # No echo either way: neither message comes back.
        here.expect_nothing(1.0)
        at_remote.expect_nothing(0.5)
        # Not covered by any rule: stays on its side.
        here.publish("other/x", b"stay", qos=1)
        assert here.expect().topic == "other/x"
        at_remote.expect_nothing()
    finally:
        stop_broker(tern)


@pytest.mark.parametrize("protocol,version", PROTOCOLS)
def test_qos_levels_cross_at_min_of_message_and_rule(tmp_path, remote, protocol, version):
    tern = started(tmp_path, remote, ["q0/# out 0", "q1/# out 1", "q2/# out 2"], protocol)
    try:
        at_remote = client(remote, version)
        at_remote.subscribe("#", qos=2)
        here = client(tern, version)
        for rule_qos in (0, 1, 2):
            for qos in (0, 1, 2):
                here.publish(f"q{rule_qos}/m{qos}", f"{qos}".encode(), qos=qos)
                m = at_remote.expect()
                assert m.topic == f"q{rule_qos}/m{qos}"
                assert m.qos == min(rule_qos, qos), (rule_qos, qos, m.qos)
    finally:
        stop_broker(tern)


@pytest.mark.parametrize("protocol,version", PROTOCOLS)
def test_retained_set_and_clear_cross_the_bridge(tmp_path, remote, protocol, version):
    tern = started(tmp_path, remote, ["state/# out 1", "cmd/# in 1"], protocol)
    try:
        here = client(tern, version)
        watcher = client(remote, version)
        watcher.subscribe("state/#", qos=1)
        here.publish("state/door", b"open", qos=1, retain=True)
        assert watcher.expect().payload == b"open"
        late = client(remote, version)
        late.subscribe("state/#", qos=1)
        m = late.expect()
        assert (m.topic, m.payload, m.retain) == ("state/door", b"open", True)
        here.publish("state/door", b"", qos=1, retain=True)
        assert watcher.expect().payload == b""
        later = client(remote, version)
        later.subscribe("state/#", qos=1)
        later.expect_nothing(1.0)

        # Inbound too: a retained message from the remote is retained here, and its clear clears it.
        remote_pub = client(remote, version)
        remote_pub.publish("cmd/mode", b"auto", qos=1, retain=True)
        local_watch = client(tern, version)
        local_watch.subscribe("cmd/#", qos=1)
        m = local_watch.expect()
        assert (m.topic, m.payload) == ("cmd/mode", b"auto")
        remote_pub.publish("cmd/mode", b"", qos=1, retain=True)
        assert local_watch.expect().payload == b""
        fresh = client(tern, version)
        fresh.subscribe("cmd/#", qos=1)
        fresh.expect_nothing(1.0)
    finally:
        stop_broker(tern)


def test_retained_changed_while_down_reconciled_after_reconnect(tmp_path, remote):
    tern = started(tmp_path, remote, ["state/# out 1"])
    try:
        here = client(tern)
        here.publish("state/a", b"1", qos=1, retain=True)
        here.publish("state/b", b"1", qos=1, retain=True)
        watcher = client(remote)
        watcher.subscribe("state/#", qos=1)
        assert len(watcher.expect_n(2)) == 2
        watcher.close()
        remote.stop()
        # While the link is down: one set changed, one cleared.
        here.publish("state/a", b"2", qos=1, retain=True)
        here.publish("state/b", b"", qos=1, retain=True)
        remote.start()  # no persistence: the remote lost its retained messages too
        wait_log(tern, CONNECTED, count=2)

        def retained_view() -> dict:
            # What a new subscriber gets as retained once the remote is quiet; a
            # queued clear may still arrive live while the bridge drains.
            viewer = client(remote)
            viewer.subscribe("state/#", qos=1)
            seen = {}
            try:
                while True:
                    m = viewer.messages.get(timeout=1.0)
                    if m.retain:
                        seen[m.topic] = m.payload
            except queue.Empty:
                pass
            viewer.close()
            return seen

        wait_for(
            lambda: retained_view() == {"state/a": b"2"},
            "the remote's retained messages reconciled to {state/a: 2}",
        )
    finally:
        stop_broker(tern)


@pytest.mark.parametrize("protocol,version", PROTOCOLS)
def test_no_loop_between_tern_and_mosquitto_bridged_both_ways_on_everything(
    tmp_path, remote, protocol, version
):
    tern = started(tmp_path, remote, ["# both 1"], protocol)
    try:
        here = client(tern, version)
        here.subscribe("loop/#", qos=1)
        there = client(remote, version)
        there.subscribe("loop/#", qos=1)
        here.publish("loop/from-tern", b"t", qos=1)
        there.publish("loop/from-remote", b"r", qos=1)
        seen_here = here.expect_n(2)
        seen_there = there.expect_n(2)
        assert sorted(m.topic for m in seen_here) == ["loop/from-remote", "loop/from-tern"]
        assert sorted(m.topic for m in seen_there) == ["loop/from-remote", "loop/from-tern"]
        # A loop would keep them coming.
        here.expect_nothing(1.5)
        there.expect_nothing(0.5)
    finally:
        stop_broker(tern)


def test_no_loop_between_two_terns_bridged_both_ways_on_everything(tmp_path):
    cloud = start_broker(tmp_path / "cloud")
    edge = start_tern_with(
        tmp_path / "edge", bridge_table("cloud", cloud.mqtt_port, ["# both 2"], "mqttv5")
    )
    try:
        wait_log(edge, CONNECTED)
        here = client(edge)
        here.subscribe("loop/#", qos=2)
        there = client(cloud)
        there.subscribe("loop/#", qos=2)
        for qos in (0, 1, 2):
            here.publish(f"loop/edge{qos}", b"e", qos=qos)
            there.publish(f"loop/cloud{qos}", b"c", qos=qos)
        assert len(here.expect_n(6)) == 6
        assert len(there.expect_n(6)) == 6
        here.expect_nothing(1.5)
        there.expect_nothing(0.5)
    finally:
        stop_broker(edge)
        stop_broker(cloud)


def test_v311_bridge_falls_back_when_the_remote_refuses_the_bridge_flag(tmp_path):
    """A remote that does not take protocol level 0x84 (CONNACK 0x01; here a
    proxy in front of a tern that refuses it so): the bridge connects again as
    a plain 3.1.1 client, and messages flow."""
    cloud = start_broker(tmp_path / "cloud")
    refuser = BridgeFlagRefuser(cloud.mqtt_port)
    edge = start_tern_with(
        tmp_path / "edge", bridge_table("cloud", refuser.mqtt_port, ["up/# out 1"], "mqttv311")
    )
    try:
        wait_log(edge, CONNECTED)
        assert refuser.refused >= 1, "the bridge flag was offered first"
        there = client(cloud, "3.1.1")
        there.subscribe("up/#", qos=1)
        client(edge, "3.1.1").publish("up/x", b"1", qos=1)
        m = there.expect()
        assert (m.topic, m.payload, m.qos) == ("up/x", b"1", 1)
    finally:
        stop_broker(edge)
        stop_broker(cloud)
        refuser.close()


def test_tern_is_the_remote_of_a_mosquitto_311_bridge_on_everything_both_ways(tmp_path):
    """A real mosquitto bridges to tern with `topic # both 1`, MQTT 3.1.1 and
    `try_private true` (protocol level 0x84): tern takes the bridge flag, so it
    does not send the bridge back what the bridge published (no loop: each
    message arrives once on each side) and keeps retain flags as published."""
    tern = start_broker(tmp_path / "tern")
    ready = client(tern, "3.1.1")
    # Retained before the bridge subscribes: its arrival on the mosquitto side
    # says the bridge's subscription on tern is in place.
    ready.publish("loop/ready", b"1", qos=1, retain=True)
    edge = mosquitto(
        tmp_path,
        "connection tern\n"
        f"address 127.0.0.1:{tern.mqtt_port}\n"
        "bridge_protocol_version mqttv311\n"
        "try_private true\n"
        "cleansession true\n"
        "restart_timeout 1\n"
        # Mosquitto's bridge notifications are a will on $SYS/..., which
        # clients may not publish to here (notification_topic can move them).
        "notifications false\n"
        "topic # both 1\n",
    ).start()
    try:
        there = client(edge, "3.1.1")
        there.subscribe("loop/#", qos=1)
        m = there.expect(15)  # retained or live, as the bridge and this subscriber raced
        assert (m.topic, m.payload) == ("loop/ready", b"1")
        assert "bridge=true" in tern.stderr_text()
        here = client(tern, "3.1.1")
        here.subscribe("loop/#", qos=1)
        assert here.expect().topic == "loop/ready"  # retained, on subscribe
        here.publish("loop/from-tern", b"t", qos=1)
        there.publish("loop/from-mosquitto", b"m", qos=1)
        seen_here = sorted(m.topic for m in here.expect_n(2))
        seen_there = sorted(m.topic for m in there.expect_n(2))
        assert seen_here == ["loop/from-mosquitto", "loop/from-tern"]
        assert seen_there == ["loop/from-mosquitto", "loop/from-tern"]
        # A loop would keep them coming back.
        here.expect_nothing(1.5)
        there.expect_nothing(0.5)
        # Retain as published: a retained message published here reaches
        # mosquitto with its flag, so a late mosquitto subscriber gets it retained.
        here.publish("loop/state", b"on", qos=1, retain=True)
        assert here.expect().payload == b"on"
        assert there.expect().payload == b"on"
        late = client(edge, "3.1.1")
        late.subscribe("loop/state", qos=1)
        m = late.expect()
        assert (m.topic, m.payload, m.retain) == ("loop/state", b"on", True)
        here.expect_nothing(0.5)
    finally:
        edge.stop()
        stop_broker(tern)


def publish_all(c: MqttClient, topic: str, count: int, qos: int) -> None:
    """Publishes `count` numbered messages pipelined, then waits for every ack."""
    infos = [c.client.publish(topic, str(i).encode(), qos=qos) for i in range(count)]
    for info in infos:
        info.wait_for_publish(60)
        assert info.is_published(), f"{topic} message not acknowledged by tern"


def test_store_and_forward_survives_link_down_and_kill_9(tmp_path):
    """Remote stopped; 10,000 QoS 1 and 2,000 QoS 2 messages published here and
    acked; kill -9 tern; restart it; start the remote: every message arrives
    (QoS 2 exactly once, QoS 1 at least once), in order per publisher."""
    remote = mosquitto(tmp_path, persistent=True)
    receive_again = waiting_subscriber(remote, "sf/#", 2)
    config = bridge_table("cloud", remote.mqtt_port, ["sf/# out 2"], "mqttv5")
    tern_dir = tmp_path / "tern"
    tern = start_tern_with(tern_dir, config)
    q1_count, q2_count = 10_000, 2_000
    try:
        wait_log(tern, "bridge cannot connect")
        publisher = MqttClient(tern, "5.0", client_id=unique("pub"))
        publisher.client.max_inflight_messages_set(1000)
        publisher.connect()
        publish_all(publisher, "sf/q1", q1_count, 1)
        publish_all(publisher, "sf/q2", q2_count, 2)
        publisher.drop()
        tern.proc.send_signal(signal.SIGKILL)
        tern.proc.wait(10)
        tern = start_broker(tern_dir, args=["--config", str(tern_dir / "tern.toml")])
        remote.start()
        receiver = receive_again()
        wait_log(tern, CONNECTED)
        got = {"sf/q1": [], "sf/q2": []}
        while len(set(got["sf/q1"])) < q1_count or len(got["sf/q2"]) < q2_count:
            try:
                m = receiver.expect(30)
            except AssertionError:
                break
            got[m.topic].append(int(m.payload))
        # Late duplicates would show in the counts: listen one more quiet second.
        while True:
            try:
                m = receiver.messages.get(timeout=1.0)
            except queue.Empty:
                break
            got[m.topic].append(int(m.payload))
        q1, q2 = got["sf/q1"], got["sf/q2"]
        print(
            f"store-and-forward: QoS 1 {len(set(q1))}/{q1_count} distinct "
            f"({len(q1) - len(set(q1))} duplicates); QoS 2 {len(q2)}/{q2_count} "
            f"({len(q2) - len(set(q2))} duplicates)"
        )
        assert set(q1) == set(range(q1_count)), f"QoS 1 lost {q1_count - len(set(q1))}"
        assert q2 == list(range(q2_count)), "QoS 2: each exactly once, in order"
        first_seen = list(dict.fromkeys(q1))
        assert first_seen == sorted(first_seen), "QoS 1 out of order"
        receiver.close()
    finally:
        stop_broker(tern)
        remote.stop()


def test_max_queued_age_drops_what_is_too_old_and_counts_it_across_a_restart(tmp_path):
    """`max_queued_age = "5s"`, remote stopped: 100 QoS 1 messages published and
    acked, kill -9 tern, restart it, wait past the bound, 100 more: when the
    remote (a real mosquitto) comes back only the newer 100 arrive, in order;
    the older 100 are dropped, counted, and logged once per batch."""
    remote = mosquitto(tmp_path, persistent=True)
    receive_again = waiting_subscriber(remote, "age/#", 1)
    age_secs = 5.0
    config = bridge_table(
        "cloud", remote.mqtt_port, ["age/# out 1"], "mqttv5", 'max_queued_age = "5s"'
    )
    tern_dir = tmp_path / "tern"
    tern = start_tern_with(tern_dir, config)
    count = 100
    try:
        wait_log(tern, "bridge cannot connect")
        publisher = MqttClient(tern, "5.0", client_id=unique("pub")).connect()
        publish_all(publisher, "age/old", count, 1)
        old_acked = time.monotonic()
        publisher.drop()
        tern.proc.send_signal(signal.SIGKILL)
        tern.proc.wait(10)
        tern = start_broker(tern_dir, args=["--config", str(tern_dir / "tern.toml")])
        wait_log(tern, "bridge cannot connect")
        # The age under test: the old messages pass the bound while queued.
        time.sleep(max(0.0, old_acked + age_secs + 0.5 - time.monotonic()))
        publisher = MqttClient(tern, "5.0", client_id=unique("pub")).connect()
        publish_all(publisher, "age/new", count, 1)
        remote.start()
        receiver = receive_again()
        wait_log(tern, CONNECTED)
        got = [receiver.expect(30) for _ in range(count)]
        assert [m.topic for m in got] == ["age/new"] * count, "only the newer messages"
        assert [int(m.payload) for m in got] == list(range(count)), "in order"
        receiver.expect_nothing(1.0)
        wait_log(tern, "bridge dropped queued messages older than max_queued_age")
        lines = [
            line
            for line in tern.stderr_text().splitlines()
            if "older than max_queued_age" in line
        ]
        assert len(lines) < count, "one log line per batch, not per message"
        host, port = tern.endpoints["http"]
        text = requests.get(f"http://{host}:{port}/metrics", timeout=5).text
        dropped = next(
            x for x in text.splitlines()
            if x.startswith("tern_bridge_dropped_total") and 'bridge="cloud"' in x
        )
        print(f"max_queued_age: {len(got)} newer delivered, {dropped}")
        assert float(dropped.rsplit(" ", 1)[1]) == count
        receiver.close()
        publisher.close()
    finally:
        stop_broker(tern)
        remote.stop()


def wait_for(predicate, what: str, timeout: float = 15.0):
    """Polls `predicate` (an HTTP read of state the broker reports) until true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"{what} not seen within {timeout}s")


def test_operations_report_connected_queued_sent_dropped_and_last_error(tmp_path):
    remote = mosquitto(tmp_path, persistent=True)
    # Subscribed to what is published while the link is down, before the bridge
    # can forward it.
    later_again = waiting_subscriber(remote, "ops/b", 1)
    remote.start()
    token = "bridge-test-token"
    tern = start_tern_with(
        tmp_path / "tern",
        bridge_table("cloud", remote.mqtt_port, ["ops/# out 1"], extra="max_queued_messages = 3"),
        extra_env={"TERN_HTTP__ADMIN_TOKEN": token, "TERN_SYS__INTERVAL_SECS": "1"},
    )
    host, port = tern.endpoints["http"]
    base = f"http://{host}:{port}"
    headers = {"Authorization": f"Bearer {token}"}

    def bridge():
        r = requests.get(f"{base}/api/bridges", headers=headers, timeout=5)
        assert r.status_code == 200, r.text
        return r.json()["bridges"][0]

    def metric(name: str) -> float:
        text = requests.get(f"{base}/metrics", timeout=5).text
        line = next(x for x in text.splitlines() if x.startswith(name) and 'bridge="cloud"' in x)
        return float(line.rsplit(" ", 1)[1])

    try:
        wait_log(tern, CONNECTED)
        assert bridge()["connected"] is True
        assert metric("tern_bridge_connected") == 1
        here = client(tern)
        watcher = client(remote)
        watcher.subscribe("ops/#", qos=1)
        here.publish("ops/a", b"1", qos=1)
        watcher.expect()
        wait_for(lambda: bridge()["sent"] == 1, "sent = 1")
        assert metric("tern_bridge_sent_total") == 1

        def sys_value(name: str):
            r = requests.get(f"{base}/api/retained", headers=headers, timeout=5)
            topic = f"$SYS/broker/bridge/cloud/{name}"
            return next((x["payload"] for x in r.json() if x["topic"] == topic), None)

        wait_for(lambda: sys_value("sent") == "1", "$SYS/broker/bridge/cloud/sent = 1")
        assert sys_value("connected") == "1"

        remote.stop()
        down = wait_for(lambda: (b := bridge()) and not b["connected"] and b, "link down")
        assert down["last_error"], down
        assert metric("tern_bridge_connected") == 0
        for i in range(5):
            here.publish("ops/b", str(i).encode(), qos=1)
        # Bounded at 3 with drop_oldest: 2 dropped and counted.
        state = wait_for(lambda: (b := bridge())["dropped"] == 2 and b, "2 dropped")
        assert state["queued"] == 3, state
        assert metric("tern_bridge_queued") == 3
        assert metric("tern_bridge_dropped_total") == 2

        remote.start()
        later = later_again()
        wait_log(tern, CONNECTED, count=2)
        got = [later.expect().payload for _ in range(3)]
        assert got == [b"2", b"3", b"4"], "the newest 3 arrive, in order"
        wait_for(lambda: bridge()["queued"] == 0, "queue drained")
    finally:
        stop_broker(tern)
        remote.stop()


def test_acl_reload_leaves_the_bridge_subscriptions_alone(tmp_path, remote):
    """ACL rules that give anonymous clients nothing to subscribe, loaded by a
    SIGHUP (which rechecks every session's subscriptions), must not strip the
    bridge's."""
    table = bridge_table("cloud", remote.mqtt_port, ["acl/# out 1"])
    tern = start_tern_with(tmp_path / "tern", table)
    try:
        wait_log(tern, CONNECTED)
        acl = '[[acl]]\nanonymous = true\nallow = "publish"\ntopic = "acl/#"\n\n'
        (tmp_path / "tern" / "tern.toml").write_text(acl + table)
        tern.proc.send_signal(signal.SIGHUP)
        wait_log(tern, "ACL rules reloaded")
        watcher = client(remote)
        watcher.subscribe("acl/#", qos=1)
        client(tern).publish("acl/x", b"after reload", qos=1)
        assert watcher.expect().payload == b"after reload"
    finally:
        stop_broker(tern)


def test_a_rule_removed_from_the_config_is_unsubscribed_after_a_restart(tmp_path, remote):
    """The bridge's stored session comes back with the filters of the old
    config; those of removed rules go (or they would fill the store)."""
    tern_dir = tmp_path / "tern"
    token = {"TERN_HTTP__ADMIN_TOKEN": "t"}
    tern = start_tern_with(
        tern_dir, bridge_table("cloud", remote.mqtt_port, ["old/# out 1", "new/# out 1"]), token
    )
    wait_log(tern, CONNECTED)
    stop_broker(tern)
    tern = start_tern_with(tern_dir, bridge_table("cloud", remote.mqtt_port, ["new/# out 1"]), token)
    try:
        wait_log(tern, CONNECTED)
        host, port = tern.endpoints["http"]
        r = requests.get(
            f"http://{host}:{port}/api/clients/%24bridge%2Fcloud/subscriptions",
            headers={"Authorization": "Bearer t"},
            timeout=5,
        )
        assert r.status_code == 200, r.text
        assert [s["filter"] for s in r.json()] == ["new/#"]
    finally:
        stop_broker(tern)


def test_bridge_over_tls_with_a_client_certificate(tmp_path):
    """The remote (mosquitto) asks for TLS and a client certificate: the bridge
    checks the remote's certificate against ca_file and presents its own."""
    certs = tmp_path / "certs"
    subprocess.run([str(tern_bin()), "certs", "dev", "--out", str(certs)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
    plain = free_port()
    remote = mosquitto(
        tmp_path,
        f"cafile {certs / 'ca.pem'}\n"
        f"certfile {certs / 'server.pem'}\n"
        f"keyfile {certs / 'server.key'}\n"
        "require_certificate true\n"
        # Run as root, mosquitto would drop to its own user, which may not read
        # the test's private temporary directory.
        "user root\n"
        # A plain listener for the test's own watcher.
        f"listener {plain} 127.0.0.1\n",
    ).start()
    tls = (
        f"ca_file = {toml_string(str(certs / 'ca.pem'))}\n"
        f"cert_file = {toml_string(str(certs / 'client.pem'))}\n"
        f"key_file = {toml_string(str(certs / 'client.key'))}\n"
        'server_name = "localhost"\n'
    )
    tern = start_tern_with(
        tmp_path / "tern", bridge_table("cloud", remote.mqtt_port, ["secure/# out 1"], extra=tls)
    )
    try:
        wait_log(tern, CONNECTED)
        watcher = client(SimpleNamespace(host="127.0.0.1", mqtt_port=plain))
        watcher.subscribe("secure/#", qos=1)
        here = client(tern)
        here.publish("secure/reading", b"42", qos=1)
        m = watcher.expect()
        assert (m.topic, m.payload) == ("secure/reading", b"42")
    finally:
        stop_broker(tern)
        remote.stop()
