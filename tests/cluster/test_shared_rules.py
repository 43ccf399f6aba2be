"""Shared subscriptions across nodes keep the rules they keep on one node,
with real paho clients on different nodes:

- a live retained publish on one node reaches a `$share/...` group with
  members on other nodes exactly once in the group (and a plain subscriber
  exactly once, through the retained bucket);
- a member's ACL exceptions (a deny rule its filter only overlaps) keep the
  denied topic from it wherever the message was published.
"""

from __future__ import annotations

import time

from mqttutil import unique
from securityutil import acl
from test_shared import WAIT, Members, await_group

FORBIDDEN = "test/nosubscribe"
# Long enough for a duplicate (or a leak) to show up after the marker.
QUIET = 1.5


def collect_until(members: Members, marker: str, timeout: float = WAIT) -> list:
    """(member, payload) pairs up to and including `marker`, probes left out,
    then whatever else comes within QUIET."""
    got = []
    deadline = time.monotonic() + timeout
    while not any(body == marker for _, body in got):
        assert time.monotonic() < deadline, f"{marker} never reached the group: {got}"
        got += [p for p in members.poll() if not p[1].startswith("probe-")]
    quiet_until = time.monotonic() + QUIET
    while time.monotonic() < quiet_until:
        got += [p for p in members.poll() if not p[1].startswith("probe-")]
    return got


def test_a_retained_publish_reaches_a_group_on_other_nodes_exactly_once(nats, nodes, mqtt):
    a, b, c = (nodes.start(f"tern-{n}", [nats.url]) for n in "abc")
    prefix = unique("t")
    members = Members.mqtt_on(mqtt, (("mqtt-b", b), ("mqtt-c", c)), f"$share/g/{prefix}/#")
    plain = mqtt(b)
    assert plain.subscribe(f"{prefix}/#", qos=1) == [1]
    pub = mqtt(a)
    await_group(lambda text: pub.publish(f"{prefix}/probe", text.encode(), qos=1), members)

    pub.publish(f"{prefix}/state", b"retained-1", qos=1, retain=True)
    pub.publish(f"{prefix}/state", b"marker", qos=1)
    got = collect_until(members, "marker")
    assert sorted(body for _, body in got) == ["marker", "retained-1"], f"each once in the group: {got}"

    # The plain subscriber on b: once, through the retained bucket (which may
    # come after the marker: another path), not again from the fabric.
    seen = []
    deadline = time.monotonic() + WAIT
    while sorted(set(seen)) != [b"marker", b"retained-1"] and time.monotonic() < deadline:
        seen += [m.payload for m in plain.expect_n(1, timeout=WAIT) if not m.payload.startswith(b"probe-")]
    plain.expect_nothing(QUIET)
    assert sorted(seen) == [b"marker", b"retained-1"], seen


def acl_config(tmp_path):
    config = tmp_path / "acl.toml"
    config.write_text("\n".join([
        acl(all=True, allow="both", topic="#"),
        acl(all=True, deny="subscribe", topic=FORBIDDEN),
    ]))
    return ["--config", str(config)]


def test_acl_exceptions_of_members_on_other_nodes_keep_the_denied_topic_out(nats, nodes, mqtt, tmp_path):
    args = acl_config(tmp_path)
    a, b, c = (nodes.start(f"tern-{n}", [nats.url], args=args) for n in "abc")
    members = Members()
    for name, node in (("mqtt-a", a), ("mqtt-b", b)):
        client = mqtt(node)
        assert client.subscribe("$share/g/test/#", qos=1) == [1], "the wildcard is granted"
        assert client.subscribe(f"$share/g2/{FORBIDDEN}", qos=1) == [0x87], "the topic is not"
        members.mqtt[name] = client
    pub = mqtt(c)
    await_group(lambda text: pub.publish("test/probe", text.encode(), qos=1), members)

    pub.publish(FORBIDDEN, b"secret", qos=1)
    pub.publish("test/open", b"marker", qos=1)
    got = collect_until(members, "marker")
    assert [body for _, body in got] == ["marker"], f"{FORBIDDEN} leaked to a member: {got}"
