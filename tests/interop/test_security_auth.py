"""Password logins (`tern passwd`), anonymous policy and [[acl]] rules with real
clients: paho-mqtt (3.1.1 and 5.0), raw MQTT 3.1.1 for CONNACK return codes, and
stomp.py. The same rules must hold whichever protocol a client uses."""

from __future__ import annotations

import os
import stat

import pytest

from securityutil import (  # noqa: F401 - pki, sec are fixtures
    acl,
    add_user,
    log_text,
    mqtt311_connack,
    pki,
    sec,
    section,
    sighup,
    stomp_connect_error,
    stomp_refused,
    tls_opts,
    tls_section,
    wait_log,
)

PASSWORDS = {"alice": "alice-S3cret!", "bob": "bob-pa55word", "admin": "admin-pw-1", "ops": "ops-pw-2"}


@pytest.fixture
def password_file(tmp_path):
    """Every user in PASSWORDS, added with `tern passwd FILE USER` (password on stdin)."""
    path = tmp_path / "passwd"
    for user, password in PASSWORDS.items():
        add_user(path, user, password)
    return path


def auth(password_file, **values) -> str:
    return section("auth", password_file=password_file, **values)


def login(sec, broker, user: str, version: str = "5.0", **kwargs):
    return sec.mqtt(broker, version, username=user, password=PASSWORDS[user], **kwargs).connect()


def stomp_login(sec, broker, user: str):
    return sec.stomp(broker).connect(login=user, passcode=PASSWORDS[user])


def nothing_before_marker(receiver, sender, marker_topic: str) -> None:
    """`sender` publishes a marker the receiver may read; the receiver must get exactly
    that marker first, i.e. nothing refused earlier slipped through."""
    sender.publish(marker_topic, b"marker", qos=1)
    got = receiver.expect_until(marker_topic, b"marker")
    assert [(m.topic, m.payload) for m in got] == [(marker_topic, b"marker")]


def stomp_nothing_before_marker(stomp, sender, marker_topic: str) -> None:
    sender.publish(marker_topic, b"marker", qos=1)
    frame = stomp.expect()
    assert (frame.headers["destination"], frame.body) == (f"/topic/{marker_topic}", b"marker")


def test_password_logins_over_mqtt_and_stomp(sec, password_file):
    text = password_file.read_text()
    assert stat.S_IMODE(os.stat(password_file).st_mode) == 0o600
    for user, password in PASSWORDS.items():
        assert f"{user}:$argon2id$" in text
        assert password not in text
    broker = sec.start(auth(password_file))
    port = broker.mqtt_port
    wrong = "Wr0ng-Passw0rd"

    # MQTT 3.1.1: CONNACK return code 4 (bad user name or password), 0 when right.
    assert mqtt311_connack(port, "v3-wrong", "alice", wrong) == 4
    assert mqtt311_connack(port, "v3-unknown", "mallory", wrong) == 4
    assert mqtt311_connack(port, "v3-right", "alice", PASSWORDS["alice"]) == 0
    # MQTT 5.0: reason code 0x86.
    assert sec.mqtt(broker, "5.0", username="alice", password=wrong).try_connect() == 0x86
    assert sec.mqtt(broker, "5.0", username="bob", password=PASSWORDS["alice"]).try_connect() == 0x86
    assert login(sec, broker, "alice").connack_reason.value == 0
    # STOMP: ERROR for a wrong passcode, CONNECTED for the right one.
    error = stomp_connect_error(sec.stomp(broker), login="alice", passcode=wrong)
    assert error.headers.get("message"), error.headers
    assert stomp_login(sec, broker, "bob").listener.connected_frame is not None

    log = log_text(broker)
    assert "login refused" in log
    for secret in (wrong, *PASSWORDS.values()):
        assert secret not in log, f"the log contains the password {secret!r}"


def test_allow_anonymous_false_refuses_anonymous_clients(sec, pki, password_file):
    broker = sec.start(
        section("mqtt", allow_anonymous=False),
        section("stomp", allow_anonymous=False),
        tls_section("mqtt_tls", pki),  # loopback, setting unset: anonymous clients allowed
        auth(password_file),
    )
    assert mqtt311_connack(broker.mqtt_port, "anon-v3") == 5
    assert sec.mqtt(broker, "5.0", client_id="anon-v5").try_connect() == 0x87
    # With a password file, a username without its password is bad credentials.
    assert mqtt311_connack(broker.mqtt_port, "name-only", "alice") == 4
    error = stomp_connect_error(sec.stomp(broker))
    assert "anonymous" in (error.headers.get("message", "") + error.body.decode()).lower()
    # Users with a password are fine; another listener keeps its own policy.
    assert mqtt311_connack(broker.mqtt_port, "alice-v3", "alice", PASSWORDS["alice"]) == 0
    login(sec, broker, "alice")
    stomp_login(sec, broker, "alice")
    sec.mqtt(broker, "5.0", listener="mqtt_tls", tls=tls_opts(pki), client_id="anon-tls").connect()


def test_acl_client_id_placeholder_confines_each_device(sec):
    broker = sec.start(acl(all=True, allow="both", topic="devices/%c/#"))
    dev2 = sec.mqtt(broker, "5.0", client_id="dev2").connect()
    assert dev2.subscribe("devices/dev2/#", qos=1) == [1]

    dev1 = sec.mqtt(broker, "5.0", client_id="dev1").connect()
    assert dev1.subscribe("devices/dev1/#", qos=1) == [1]
    assert dev1.subscribe("devices/dev2/#", qos=1) == [0x87]
    assert dev1.subscribe("devices/#", qos=1) == [0x87]
    assert dev1.publish_reason("devices/dev1/temp", b"21") == 0
    m = dev1.expect()
    assert (m.topic, m.payload) == ("devices/dev1/temp", b"21")
    assert dev1.publish_reason("devices/dev2/cmd", b"from-dev1") == 0x87

    dev3 = sec.mqtt(broker, "3.1.1", client_id="dev3").connect()
    assert dev3.subscribe("devices/dev3/#", qos=1) == [1]
    assert dev3.subscribe("devices/dev2/#", qos=1) == [0x80]
    # MQTT 3.1.1 has no way to say no to a PUBLISH: acknowledged and dropped.
    dev3.publish("devices/dev2/cmd", b"from-dev3", qos=1)
    dev3.publish("devices/dev3/temp", b"22", qos=1)
    m = dev3.expect()
    assert (m.topic, m.payload) == ("devices/dev3/temp", b"22")
    # dev2, allowed to read devices/dev2/#, got neither refused message.
    nothing_before_marker(dev2, dev2, "devices/dev2/marker")

    # A client id that would widen the rule is refused whatever it asks.
    wild = sec.mqtt(broker, "5.0", client_id="dev#").connect()
    assert wild.subscribe("devices/#", qos=1) == [0x87]


def test_acl_holds_across_mqtt_and_stomp(sec, password_file):
    broker = sec.start(
        auth(password_file),
        acl(user="alice", allow="both", topic="devices/alice/#"),
        acl(user="bob", allow="both", topic="devices/bob/#"),
    )
    alice_mqtt = login(sec, broker, "alice", client_id="alice-mqtt")
    assert alice_mqtt.subscribe("devices/alice/#", qos=1) == [1]
    alice_stomp = stomp_login(sec, broker, "alice")
    alice_stomp.subscribe("/topic/devices/alice/#", id="own")

    # alice over STOMP cannot read bob's topics.
    error = stomp_refused(stomp_login(sec, broker, "alice"), "SUBSCRIBE", "/topic/devices/bob/#")
    assert "devices/bob" in error.headers.get("message", "") + error.body.decode()
    # bob over MQTT cannot read alice's.
    bob_v3 = login(sec, broker, "bob", "3.1.1")
    assert bob_v3.subscribe("devices/alice/#", qos=1) == [0x80]
    bob_v5 = login(sec, broker, "bob")
    assert bob_v5.subscribe("devices/alice/#", qos=1) == [0x87]
    assert bob_v5.subscribe("devices/+/status", qos=1) == [0x87]
    # ... nor write them, over either protocol.
    stomp_refused(stomp_login(sec, broker, "bob"), "SEND", "/topic/devices/alice/cmd", body=b"bob-stomp")
    assert bob_v5.publish_reason("devices/alice/cmd", b"bob-mqtt") == 0x87

    # alice reads her own topic over STOMP, published by her MQTT client, and nothing of bob's.
    alice_mqtt.publish("devices/alice/temp", b"19", qos=1)
    frame = alice_stomp.expect()
    assert (frame.headers["destination"], frame.body) == ("/topic/devices/alice/temp", b"19")
    stomp_nothing_before_marker(alice_stomp, alice_mqtt, "devices/alice/marker")
    got = alice_mqtt.expect_until("devices/alice/marker", b"marker")
    assert [(m.topic, m.payload) for m in got] == [("devices/alice/temp", b"19"), ("devices/alice/marker", b"marker")]


def test_retained_messages_only_where_reading_is_allowed(sec, password_file):
    """Subscribe is refused for filters no allow rule covers or a deny rule covers
    (secret/#, secret/x); one that only overlaps a deny rule (`#`) is granted with
    the denied topics carved out (src/auth/acl.rs). The guarantee tested: no
    subscription ever hands out a retained secret/ message."""
    broker = sec.start(
        auth(password_file),
        acl(user="admin", allow="publish", topic="#"),
        acl(user="alice", allow="subscribe", topic="#"),
        acl(user="alice", deny="subscribe", topic="secret/#"),
    )
    admin = login(sec, broker, "admin")
    admin.publish("secret/x", b"top-secret", qos=1, retain=True)
    admin.publish("public/x", b"hello", qos=1, retain=True)

    for version, refused in (("5.0", 0x87), ("3.1.1", 0x80)):
        reader = login(sec, broker, "alice", version)
        for covered in ("secret/#", "secret/x", "secret/+", "$share/g/secret/#"):
            assert reader.subscribe(covered, qos=1) == [refused], covered
        for granted in ("#", "+/x", "public/#"):
            assert reader.subscribe(granted, qos=1) == [1], granted
            m = reader.expect()
            assert (m.topic, m.payload, m.retain) == ("public/x", b"hello", True), granted
            reader.expect_nothing()

    stomp = stomp_login(sec, broker, "alice")
    stomp_refused(stomp, "SUBSCRIBE", "/topic/secret/#")
    stomp.expect_nothing()
    stomp = stomp_login(sec, broker, "alice")
    for id, destination in (("all", "/topic/#"), ("x", "/topic/+/x"), ("public", "/topic/public/#")):
        stomp.subscribe(destination, id=id)
        frame = stomp.expect()
        assert (frame.headers["destination"], frame.body) == ("/topic/public/x", b"hello"), destination
        stomp.expect_nothing()
    assert "top-secret" not in log_text(broker)


def reload_config(broker, extra: str, applied: str) -> None:
    """Appends to the broker's config file, sends SIGHUP and waits for the log line
    `applied` that says the broker used it."""
    before = len(log_text(broker))
    broker.config_path.write_text(broker.config_path.read_text() + extra)
    sighup(broker)
    wait_log(broker, applied, after=before)


def test_acl_reload_revokes_reading_through_existing_subscriptions(sec, password_file):
    """README: after `kill -HUP` "new ACL rules apply at once, to connected clients
    too". A subscription made while `#` was readable must stop delivering a topic
    the new rules deny (secret/#), over MQTT and STOMP alike. The broker applies the
    rule a new SUBSCRIBE gets: a filter that overlaps a denied one (`#`) keeps
    everything but the denied topics (logged); public/# keeps working."""
    broker = sec.start(
        auth(password_file),
        acl(user="admin", allow="publish", topic="#"),
        acl(user="alice", allow="subscribe", topic="#"),
    )
    admin = login(sec, broker, "admin")
    reader = login(sec, broker, "alice", client_id="reader")
    assert reader.subscribe("#", qos=1) == [1]
    assert reader.subscribe("public/#", qos=1) == [1]
    stomp = stomp_login(sec, broker, "alice")
    stomp.subscribe("/topic/#", id="all")
    stomp.subscribe("/topic/public/#", id="public")

    reload_config(broker, acl(user="alice", deny="subscribe", topic="secret/#"), "ACL rules reloaded")
    assert reader.subscribe("secret/#", qos=1) == [0x87], "the new rules are in force"
    assert "subscription exceptions changed" in log_text(broker)

    admin.publish("secret/y", b"after-revoke", qos=1, retain=True)
    admin.publish("public/m", b"marker", qos=1)
    mqtt_got = [(m.topic, m.payload) for m in reader.expect_until("public/m", b"marker")]
    # STOMP gets one MESSAGE per subscription (/topic/# and /topic/public/#).
    stomp_got = [(f.headers["destination"], f.body) for f in stomp.expect_n(2)]
    stomp.expect_nothing()
    reader.expect_nothing()
    assert mqtt_got == [("public/m", b"marker")], "# and public/# merged into one delivery"
    assert stomp_got == [("/topic/public/m", b"marker")] * 2
    leaked = [m for m in mqtt_got + stomp_got if b"after-revoke" in m[1]]
    assert not leaked, (
        f"alice may no longer read secret/# but her existing subscriptions delivered {leaked} "
        f"(MQTT got {mqtt_got}, STOMP got {stomp_got})"
    )


def test_sighup_rereads_the_password_file(sec, password_file, tmp_path):
    broker = sec.start(auth(password_file))
    assert mqtt311_connack(broker.mqtt_port, "carol-1", "carol", "carol-pw") == 4
    add_user(password_file, "carol", "carol-pw")
    before = len(log_text(broker))
    sighup(broker)
    wait_log(broker, r"password file reloaded", after=before)
    assert mqtt311_connack(broker.mqtt_port, "carol-2", "carol", "carol-pw") == 0
    # A broken file keeps the users loaded before.
    password_file.write_text("this is not a password file\n")
    before = len(log_text(broker))
    sighup(broker)
    wait_log(broker, r"password file reload failed; keeping the users loaded before", after=before)
    assert mqtt311_connack(broker.mqtt_port, "carol-3", "carol", "carol-pw") == 0
    assert "carol-pw" not in log_text(broker)


def test_sys_topics_need_a_rule_naming_them(sec, password_file):
    # No rules at all: everything but $SYS.
    open_broker = sec.start()
    assert sec.mqtt(open_broker, "3.1.1").connect().subscribe("$SYS/#") == [0x80]
    anonymous = sec.mqtt(open_broker, "5.0").connect()
    assert anonymous.subscribe("$SYS/#") == [0x87]
    assert anonymous.subscribe("#") == [0]
    stomp_refused(sec.stomp(open_broker).connect(), "SUBSCRIBE", "/topic/$SYS/#")

    # `#` for everybody does not grant $SYS; a rule naming it does.
    broker = sec.start(
        auth(password_file),
        acl(all=True, allow="both", topic="#"),
        acl(user="ops", allow="subscribe", topic="$SYS/#"),
    )
    assert sec.mqtt(broker, "5.0").connect().subscribe("$SYS/#") == [0x87]
    assert login(sec, broker, "alice").subscribe("$SYS/#") == [0x87]
    assert login(sec, broker, "alice", "3.1.1").subscribe("$SYS/broker/+") == [0x80]
    assert login(sec, broker, "ops").subscribe("$SYS/#", qos=1) == [1]
    assert login(sec, broker, "ops", "3.1.1").subscribe("$SYS/#") == [0]
    stomp_login(sec, broker, "ops").subscribe("/topic/$SYS/#", id="sys")


@pytest.mark.parametrize("version", ["3.1.1", "5.0"])
def test_another_user_cannot_resume_or_take_over_a_session(sec, pki, password_file, version):
    """bob's persistent session, with a queued QoS 1 message, is refused to alice
    over TCP and TLS (clean start or not, offline or live); bob gets it all."""
    broker = sec.start(
        section("mqtt", allow_anonymous=False),
        tls_section("mqtt_tls", pki, allow_anonymous=False),
        auth(password_file),
        acl(user="alice", allow="both", topic="devices/alice/#"),
        acl(user="bob", allow="both", topic="devices/bob/#"),
    )
    cid = f"victim-{version}"
    persistent = {"client_id": cid, "clean": False, "session_expiry": 3600}
    owner = login(sec, broker, "bob", version, **persistent)
    assert owner.subscribe("devices/bob/#", qos=1) == [1]
    owner.disconnect()
    publisher = login(sec, broker, "bob", version, client_id=f"pub-{version}")
    publisher.publish_reason("devices/bob/x", b"queued for bob")

    def attacks() -> None:
        for listener, tls in (("mqtt", None), ("mqtt_tls", tls_opts(pki))):
            attacker = sec.mqtt(broker, version, listener=listener, tls=tls, username="alice",
                                password=PASSWORDS["alice"], **persistent)
            assert attacker.try_connect() == 0x87, listener  # paho maps 3.1.1's 5 to 0x87
            assert attacker.messages.empty(), "nothing of bob's reached alice"
            attacker.close()
        # 3.1.1 return code 5 exactly, clean session this time.
        assert mqtt311_connack(broker.mqtt_port, cid, "alice", PASSWORDS["alice"]) == 5

    attacks()
    owner = login(sec, broker, "bob", version, **persistent)
    assert owner.session_present, "bob's session is untouched"
    m = owner.expect()
    assert (m.topic, m.payload) == ("devices/bob/x", b"queued for bob")
    # A live takeover by alice is refused and bob's connection stays up.
    attacks()
    publisher.publish_reason("devices/bob/x", b"still bob's")
    m = owner.expect()
    assert (m.topic, m.payload) == ("devices/bob/x", b"still bob's")
    wait_log(broker, rf"session belongs to another user.*client_id={cid} .*owner=\"bob\" user=\"alice\"")
