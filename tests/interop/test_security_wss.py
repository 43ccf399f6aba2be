"""WebSocket over TLS (WSS): paho-mqtt over `wss://…/mqtt` with the development CA
exchanges messages with a plain TCP client; a client that does not trust the
server's CA is refused in the handshake."""

from __future__ import annotations

import queue
import ssl
import threading

import paho.mqtt.client as mqtt
import pytest

from mqttutil import TIMEOUT, unique
from securityutil import pki, pki2, sec, tls_section  # noqa: F401 - fixtures


def wss_client(endpoint, ca):
    """A paho 3.1.1 client over WSS; returns (client, connected event, message queue)."""
    host, port = endpoint
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=unique("wss"),
        protocol=mqtt.MQTTv311,
        transport="websockets",
        reconnect_on_failure=False,
    )
    client.ws_set_options(path="/mqtt")
    client.tls_set(ca_certs=str(ca))
    connected = threading.Event()
    messages: "queue.Queue[mqtt.MQTTMessage]" = queue.Queue()
    client.on_connect = lambda c, u, f, rc, p: connected.set() if rc == 0 else None
    client.on_message = lambda c, u, m: messages.put(m)
    return client, connected, messages, (host, port)


def test_paho_over_wss_exchanges_messages_with_tcp_clients(sec, pki):  # noqa: F811
    broker = sec.start(tls_section("websocket_tls", pki))
    assert "wss" in broker.endpoints, broker.banner
    client, connected, messages, (host, port) = wss_client(broker.endpoints["wss"], pki.ca)
    client.connect("localhost", port, keepalive=30)
    client.loop_start()
    try:
        assert connected.wait(TIMEOUT), "CONNACK over WSS"
        subscribed = threading.Event()
        client.on_subscribe = lambda *args: subscribed.set()
        client.subscribe("wss/#", qos=1)
        assert subscribed.wait(TIMEOUT), "SUBACK over WSS"
        tcp = sec.mqtt(broker, "3.1.1").connect()
        tcp.publish("wss/reading", b"over-tls", qos=1).wait_for_publish(TIMEOUT)
        message = messages.get(timeout=TIMEOUT)
        assert (message.topic, message.payload) == ("wss/reading", b"over-tls")
    finally:
        client.loop_stop()
        client.disconnect()


def test_a_client_that_does_not_trust_the_ca_is_refused(sec, pki, pki2):  # noqa: F811
    broker = sec.start(tls_section("websocket_tls", pki))
    client, connected, _, (host, port) = wss_client(broker.endpoints["wss"], pki2.ca)
    with pytest.raises(ssl.SSLCertVerificationError):
        client.connect("localhost", port, keepalive=30)
    assert not connected.is_set()
