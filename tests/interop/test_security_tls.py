"""TLS listeners with real clients: mosquitto_pub/sub, openssl s_client, paho-mqtt and
stomp.py. Server-only and mutual TLS, certificate user names, untrusted / wrong-host /
expired certificates, reload on SIGHUP and start-up errors for bad paths.

Certificates come from `tern certs dev` at test time (securityutil.pki / pki2)."""

from __future__ import annotations

import re
import shutil
import socket
import ssl
import subprocess

import pytest

from mqttutil import unique
from securityutil import (  # noqa: F401 - pki, pki2, sec are fixtures
    LOCALHOST,
    MosquittoSub,
    acl,
    client_context,
    log_text,
    mosquitto_pub,
    mqtt311_connect_packet,
    pki,
    pki2,
    s_client,
    s_client_text,
    sec,
    section,
    sighup,
    tls_opts,
    tls_section,
    wait_log,
)
from ternproc import clean_env, tern_bin


def tls_port(broker, listener: str = "mqtt_tls") -> int:
    assert listener in broker.endpoints, f"no {listener}= in banner {broker.banner!r}"
    return broker.endpoints[listener][1]


def still_works(client, tag: str) -> None:
    """The client (subscribed to its own `alive/<id>/#`) still publishes and receives."""
    topic = f"alive/{client.client_id}/{tag}"
    client.publish(topic, tag.encode(), qos=1)
    m = client.expect()
    assert (m.topic, m.payload) == (topic, tag.encode())


def watcher(sec, broker, pki, version="5.0", client_cert=False):
    """A TLS client that is connected and subscribed before anything else happens."""
    client = sec.mqtt(broker, version, listener="mqtt_tls", tls=tls_opts(pki, client_cert),
                      client_id=unique("watcher")).connect()
    assert client.subscribe(f"alive/{client.client_id}/#", qos=1) == [1]
    return client


def test_mosquitto_qos1_round_trip_over_server_auth_tls(sec, pki):
    broker = sec.start(tls_section("mqtt_tls", pki))
    port = tls_port(broker)
    sub = MosquittoSub(port, "tls/plain-auth", pki.ca, qos=1)
    try:
        pub = mosquitto_pub(port, "tls/plain-auth", "over-tls", pki.ca, qos=1)
        assert pub.returncode == 0, pub.stdout + pub.stderr
        assert "received PUBACK" in pub.stdout, pub.stdout
        assert sub.messages() == ["tls/plain-auth over-tls"]
        received = [line for line in sub.lines if "received PUBLISH" in line]
        assert len(received) == 1 and "q1" in received[0], sub.lines
    finally:
        sub.close()


def test_mutual_tls_required_refuses_clients_without_a_certificate(sec, pki):
    broker = sec.start(tls_section("mqtt_tls", pki, client_auth="required"))
    port = tls_port(broker)
    first = watcher(sec, broker, pki, client_cert=True)

    # With a client certificate: mosquitto clients round-trip a QoS 1 message.
    sub = MosquittoSub(port, "mtls/t", pki.ca, pki.client, pki.client_key)
    try:
        pub = mosquitto_pub(port, "mtls/t", "with-cert", pki.ca, pki.client, pki.client_key)
        assert pub.returncode == 0, pub.stdout + pub.stderr
        assert sub.messages() == ["mtls/t with-cert"]
    finally:
        sub.close()
    still_works(first, "after-mutual")

    # Without one: mosquitto_pub fails, and so does openssl s_client (TLS 1.3: the
    # server's alert follows the client's Finished, so s_client sends a byte and reads on).
    before = len(log_text(broker))
    pub = mosquitto_pub(port, "mtls/t", "no-cert", pki.ca)
    assert pub.returncode != 0, f"mosquitto_pub without a client certificate succeeded:\n{pub.stdout}"
    assert "received CONNACK" not in pub.stdout
    result = s_client(port, "-CAfile", str(pki.ca), data=b"\x10")
    text = s_client_text(result)
    assert result.returncode != 0, text
    assert "certificate required" in text, text
    wait_log(broker, r"TLS handshake failed .*listener=mqtt_tls.*sent no certificate", after=before)
    still_works(first, "after-no-cert")

    # Plain TCP to the TLS port: an MQTT CONNECT gets no CONNACK, only a TLS alert
    # (content type 0x15) and the connection closed.
    before = len(log_text(broker))
    with socket.create_connection((LOCALHOST, port), timeout=10) as raw:
        raw.sendall(mqtt311_connect_packet("plain-to-tls"))
        reply = b""
        while chunk := raw.recv(4096):
            reply += chunk
    assert not reply.startswith(b"\x20"), f"a CONNACK over plain TCP on the TLS port: {reply!r}"
    assert reply[:1] in (b"", b"\x15"), f"expected a TLS alert or nothing, got {reply!r}"
    wait_log(broker, r"TLS handshake failed .*not a TLS client", after=before)
    # paho without TLS gets no CONNACK either: the broker closes the connection.
    plain = sec.mqtt(broker, "3.1.1", listener="mqtt_tls")
    plain.client.connect(LOCALHOST, port)
    plain.client.loop_start()
    plain._looping = True
    assert plain.disconnected.wait(10), "the TLS port kept a plain-TCP MQTT client connected"
    assert not plain.connected.is_set(), f"plain TCP got a CONNACK: {plain.connack_reason}"
    still_works(first, "after-plain")


def test_cert_username_cn_names_the_user_for_acl(sec, pki):
    """client.pem has CN device-1: with cert_username = "cn" that is the user, no password."""
    broker = sec.start(
        tls_section("mqtt_tls", pki, client_auth="optional", cert_username="cn", allow_anonymous=False),
        acl(user="device-1", allow="both", topic="devices/device-1/#"),
    )
    device = sec.mqtt(broker, "5.0", listener="mqtt_tls", tls=tls_opts(pki, client_cert=True),
                      client_id="cn-device").connect()
    assert device.subscribe("devices/device-1/#", qos=1) == [1]
    assert device.subscribe("devices/device-2/#", qos=1) == [0x87]
    assert device.publish_reason("devices/device-1/temp", b"21") == 0
    m = device.expect()
    assert (m.topic, m.payload) == ("devices/device-1/temp", b"21")
    assert device.publish_reason("devices/device-2/temp", b"no") == 0x87
    assert re.search(r'client connected client_id=cn-device .*username="device-1" auth=Certificate',
                     log_text(broker)), "the log does not show the certificate login"

    # No certificate (optional) and no username: anonymous, refused on this listener.
    anonymous = sec.mqtt(broker, "5.0", listener="mqtt_tls", tls=tls_opts(pki))
    assert anonymous.try_connect() == 0x87
    # A certificate with a username that contradicts it: bad credentials.
    liar = sec.mqtt(broker, "5.0", listener="mqtt_tls", tls=tls_opts(pki, client_cert=True),
                    username="admin", password="x")
    assert liar.try_connect() == 0x86
    # The same name as the certificate is fine, and the password is not needed.
    same = sec.mqtt(broker, "3.1.1", listener="mqtt_tls", tls=tls_opts(pki, client_cert=True),
                    username="device-1")
    same.connect()
    assert same.subscribe("devices/device-1/#") == [0]
    assert same.subscribe("devices/#") == [0x80]


def test_untrusted_ca_and_wrong_host_are_refused_by_clients(sec, pki, pki2):
    broker = sec.start(tls_section("mqtt_tls", pki2))
    port = tls_port(broker)
    first = watcher(sec, broker, pki2)

    # The server's certificate is from CA 2; these clients trust only CA 1.
    before = len(log_text(broker))
    result = s_client(port, "-CAfile", str(pki.ca))
    text = s_client_text(result)
    assert result.returncode != 0, text
    assert "unable to get local issuer certificate" in text or "verify error" in text, text
    pub = mosquitto_pub(port, "ca/t", "x", pki.ca)
    assert pub.returncode != 0, pub.stdout
    with pytest.raises(ssl.SSLCertVerificationError):
        sec.mqtt(broker, "5.0", listener="mqtt_tls", tls=tls_opts(pki)).connect()
    wait_log(broker, r"TLS handshake failed .*refused the server certificate", after=before)
    still_works(first, "after-wrong-ca")

    # Wrong host: the dev certificate covers localhost, 127.0.0.1 and ::1 only.
    sans = subprocess.run(["openssl", "x509", "-in", str(pki2.server), "-noout", "-ext", "subjectAltName"],
                          capture_output=True, text=True, check=True).stdout
    assert "DNS:localhost" in sans and "IP Address:127.0.0.1" in sans, sans
    assert "other.example" not in sans
    ok = s_client(port, "-CAfile", str(pki2.ca), "-verify_hostname", "localhost")
    assert ok.returncode == 0 and "Verification: OK" in s_client_text(ok), s_client_text(ok)
    wrong = s_client(port, "-CAfile", str(pki2.ca), "-verify_hostname", "other.example")
    assert wrong.returncode != 0, s_client_text(wrong)
    assert "hostname mismatch" in s_client_text(wrong), s_client_text(wrong)
    ctx = client_context(pki2.ca)
    with socket.create_connection((LOCALHOST, port), timeout=10) as raw:
        with pytest.raises(ssl.SSLCertVerificationError, match="other.example|[Hh]ostname"):
            ctx.wrap_socket(raw, server_hostname="other.example")
    still_works(first, "after-wrong-host")


def make_expired_server_cert(pki, out):
    """A server certificate for localhost/127.0.0.1 signed by `pki`'s CA that expired in
    2020 (OpenSSL 3.0's `x509` cannot back-date, `openssl ca -startdate/-enddate` can)."""
    out.mkdir()
    (out / "index.txt").write_text("")
    (out / "serial").write_text("1000\n")
    (out / "ca.cnf").write_text(
        "[ca]\ndefault_ca = test\n"
        f"[test]\ndir = {out}\ndatabase = $dir/index.txt\nnew_certs_dir = $dir\nserial = $dir/serial\n"
        "default_md = sha256\npolicy = anything\nunique_subject = no\n"
        "[anything]\ncommonName = supplied\n"
        "[server]\nbasicConstraints = CA:FALSE\nkeyUsage = digitalSignature\n"
        "extendedKeyUsage = serverAuth\nsubjectAltName = DNS:localhost,IP:127.0.0.1\n"
    )
    run = lambda *args: subprocess.run(args, capture_output=True, text=True, check=True, cwd=out)  # noqa: E731
    run("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "expired.key", "-subj", "/CN=localhost", "-out", "expired.csr")
    run("openssl", "ca", "-batch", "-config", "ca.cnf", "-cert", str(pki.ca), "-keyfile", str(pki.ca_key),
        "-in", "expired.csr", "-out", "expired.pem", "-notext", "-extensions", "server",
        "-startdate", "20200101000000Z", "-enddate", "20200201000000Z")
    dates = run("openssl", "x509", "-in", "expired.pem", "-noout", "-enddate").stdout
    assert "2020" in dates, dates
    return out / "expired.pem", out / "expired.key"


def test_expired_server_certificate_is_refused_by_clients(sec, pki, tmp_path):
    cert, key = make_expired_server_cert(pki, tmp_path / "expired")
    broker = sec.start(tls_section("mqtt_tls", pki, cert_file=cert, key_file=key))
    port = tls_port(broker)
    assert "the server certificate is not valid now" in log_text(broker)

    result = s_client(port, "-CAfile", str(pki.ca))
    text = s_client_text(result)
    assert result.returncode != 0, text
    assert "certificate has expired" in text, text
    pub = mosquitto_pub(port, "exp/t", "x", pki.ca)
    assert pub.returncode != 0, pub.stdout
    with pytest.raises(ssl.SSLCertVerificationError, match="expired"):
        sec.mqtt(broker, "3.1.1", listener="mqtt_tls", tls=tls_opts(pki)).connect()


def test_sighup_reloads_the_certificate_and_a_broken_key_keeps_the_old_one(sec, pki, pki2, tmp_path):
    live = tmp_path / "live"
    live.mkdir()
    cert, key = live / "server.pem", live / "server.key"
    shutil.copy(pki.server, cert)
    shutil.copy(pki.server_key, key)
    broker = sec.start(tls_section("mqtt_tls", pki, cert_file=cert, key_file=key))
    first = watcher(sec, broker, pki)  # trusts CA 1, connected before the reload

    shutil.copy(pki2.server, cert)
    shutil.copy(pki2.server_key, key)
    before = len(log_text(broker))
    sighup(broker)
    hup = wait_log(broker, r"SIGHUP: reloading certificates", after=before)
    wait_log(broker, r"TLS certificate reloaded listener=mqtt_tls", after=hup.end())

    second = sec.mqtt(broker, "5.0", listener="mqtt_tls", tls=tls_opts(pki2), client_id="after-reload").connect()
    with pytest.raises(ssl.SSLCertVerificationError):
        sec.mqtt(broker, "5.0", listener="mqtt_tls", tls=tls_opts(pki)).connect()
    # The connection made with the old certificate is untouched.
    topic = f"alive/{first.client_id}/from-second"
    second.publish(topic, b"hello", qos=1)
    m = first.expect()
    assert (m.topic, m.payload) == (topic, b"hello")
    still_works(first, "after-reload")

    # A broken key: the reload fails, says why, and the certificate in force (CA 2) stays.
    key.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    before = len(log_text(broker))
    sighup(broker)
    hup = wait_log(broker, r"SIGHUP: reloading certificates", after=before)
    failed = wait_log(broker, r"TLS reload failed; keeping the previous certificate.*", after=hup.end())
    assert "key_file" in failed.group(0) or str(key) in failed.group(0), failed.group(0)
    sec.mqtt(broker, "5.0", listener="mqtt_tls", tls=tls_opts(pki2), client_id="after-broken").connect()
    still_works(first, "after-broken")
    assert second.subscribe(f"alive/{second.client_id}/#", qos=1) == [1]
    still_works(second, "second")


@pytest.mark.parametrize(
    "listener,key",
    [("mqtt_tls", "cert_file"), ("stomp_tls", "key_file"), ("mqtt_tls", "client_ca_file")],
)
def test_a_bad_certificate_path_is_a_start_up_error(pki, tmp_path, listener, key):
    missing = tmp_path / "nowhere" / f"missing-{key}.pem"
    values = {key: missing}
    if key == "client_ca_file":
        values["client_auth"] = "required"
    config = tmp_path / "tern.toml"
    config.write_text(section("storage", enabled=False) + tls_section(listener, pki, **values))
    env = clean_env(TERN_MQTT__BIND=f"{LOCALHOST}:0", TERN_STOMP__BIND=f"{LOCALHOST}:0")
    result = subprocess.run([str(tern_bin()), "--config", str(config)], capture_output=True, text=True,
                            timeout=30, env=env, cwd=tmp_path, stdin=subprocess.DEVNULL)
    assert result.returncode != 0, f"tern started with a missing {listener}.{key}:\n{result.stdout}"
    assert result.stdout == "", f"a banner although the config is bad: {result.stdout!r}"
    assert f"{listener}.{key}" in result.stderr, result.stderr
    assert str(missing) in result.stderr, result.stderr


def test_paho_and_stomp_py_over_tls_and_across_protocols(sec, pki):
    broker = sec.start(
        tls_section("mqtt_tls", pki, client_auth="required"),
        tls_section("stomp_tls", pki, client_auth="required"),
    )
    ssl_opts = {"ca_certs": pki.ca, "cert_file": pki.client, "key_file": pki.client_key}
    paho = sec.mqtt(broker, "5.0", listener="mqtt_tls", tls=tls_opts(pki, client_cert=True),
                    client_id="paho-tls").connect()
    stomp = sec.stomp(broker, "stomp_tls", ssl_opts).connect()
    assert paho.subscribe("x/#", qos=1) == [1]
    stomp.subscribe("/topic/x/#", id="tls-sub")

    # paho -> paho and STOMP, over TLS.
    paho.publish("x/from-mqtt", b"m1", qos=1)
    m = paho.expect()
    assert (m.topic, m.payload) == ("x/from-mqtt", b"m1")
    frame = stomp.expect()
    assert (frame.headers["destination"], frame.body) == ("/topic/x/from-mqtt", b"m1")
    # STOMP -> STOMP and paho, over TLS.
    stomp.send("/topic/x/from-stomp", b"s1")
    frame = stomp.expect()
    assert (frame.headers["destination"], frame.body) == ("/topic/x/from-stomp", b"s1")
    m = paho.expect()
    assert (m.topic, m.payload) == ("x/from-stomp", b"s1")

    # stomp.py without a client certificate cannot connect to the mutual-TLS listener.
    bare = sec.stomp(broker, "stomp_tls", {"ca_certs": pki.ca})
    with pytest.raises(Exception):
        bare.conn.connect(wait=True)
    assert bare.listener.connected_frame is None
