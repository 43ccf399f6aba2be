"""A thin, synchronous-looking wrapper around paho-mqtt 2.x for the interop tests.

Every wait is on an event set by a paho callback (CONNACK, SUBACK, PUBACK/PUBCOMP,
a message arriving) with a timeout; nothing sleeps to synchronise.
"""

from __future__ import annotations

import itertools
import queue
import socket
import threading
import time
from typing import Iterable, Optional

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

TIMEOUT = 10.0
# How long to listen when proving that something does NOT arrive.
QUIET = 0.5

# "3.1" connects as MQIsdp, protocol level 3.
VERSIONS = {"3.1": mqtt.MQTTv31, "3.1.1": mqtt.MQTTv311, "5.0": mqtt.MQTTv5}
_ids = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}-{int(time.monotonic() * 1000) % 100000}"


def publish_props(**values) -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    for name, value in values.items():
        setattr(props, name, value)
    return props


class MqttClient:
    """One paho client with its callbacks turned into queues and events."""

    def __init__(
        self,
        broker,
        version: str,
        client_id: str = "",
        clean: bool = True,
        session_expiry: Optional[int] = None,
        will: Optional[dict] = None,
        connect_properties: Optional[Properties] = None,
        # Long: paho 2.2 counts its keep-alive from CONNECT and its last PINGREQ
        # only, and a DISCONNECT asked for in the loop turn that finds the
        # keep-alive due is never written (the socket is closed unsent). With 60
        # a test whose disconnect fell ~60 s after CONNECT failed now and then.
        keepalive: int = 600,
    ):
        self.broker = broker
        self.version = version
        self.protocol = VERSIONS[version]
        self.v5 = self.protocol == mqtt.MQTTv5
        self.client_id = client_id
        self.clean = clean
        self.session_expiry = session_expiry
        self.keepalive = keepalive
        self.connect_properties = connect_properties
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=None if self.v5 else clean,
            protocol=self.protocol,
            reconnect_on_failure=False,
        )
        if will:
            self.client.will_set(**will)
        self.messages: "queue.Queue[mqtt.MQTTMessage]" = queue.Queue()
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.connack_flags = None
        self.connack_reason = None
        self.connack_properties = None
        self.disconnect_reason = None
        # The properties of the last SUBACK (its reason string, say).
        self.suback_properties = None
        self._lock = threading.Lock()
        self._subacks: dict = {}
        self._unsubacks: dict = {}
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_unsubscribe = self._on_unsubscribe
        self._looping = False
        self._dropped = False

    # -- callbacks (paho's network thread) ------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connack_flags = flags
        self.connack_reason = reason_code
        self.connack_properties = properties
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.disconnect_reason = reason_code
        self.disconnected.set()

    def _on_message(self, client, userdata, message):
        self.messages.put(message)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self._lock:
            self.suback_properties = properties
            self._subacks.setdefault(mid, [threading.Event(), None])
            self._subacks[mid][1] = reason_codes
            self._subacks[mid][0].set()

    def _on_unsubscribe(self, client, userdata, mid, reason_codes, properties):
        with self._lock:
            self._unsubacks.setdefault(mid, [threading.Event(), None])
            self._unsubacks[mid][1] = reason_codes
            self._unsubacks[mid][0].set()

    # -- actions -------------------------------------------------------------------

    def connect(self, loop: bool = True, clean: Optional[bool] = None) -> "MqttClient":
        """Connects and waits for CONNACK (asserting success)."""
        self.connected.clear()
        self.disconnected.clear()
        self._dropped = False
        kwargs = {}
        if self.v5:
            props = self.connect_properties
            if self.session_expiry is not None:
                props = props or Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = self.session_expiry
            kwargs["clean_start"] = self.clean if clean is None else clean
            kwargs["properties"] = props
        rc = self.client.connect(
            self.broker.host, self.broker.mqtt_port, keepalive=self.keepalive, **kwargs
        )
        assert rc == mqtt.MQTT_ERR_SUCCESS, f"connect() returned {rc}"
        if loop:
            self.client.loop_start()
            self._looping = True
            ok = self.connected.wait(TIMEOUT)
        else:
            deadline = time.monotonic() + TIMEOUT
            while not self.connected.is_set() and time.monotonic() < deadline:
                self.client.loop(timeout=0.05)
            ok = self.connected.is_set()
        assert ok, f"no CONNACK within {TIMEOUT}s ({self.version}, id={self.client_id!r})"
        assert not self.connack_reason.is_failure, f"CONNACK refused: {self.connack_reason}"
        return self

    @property
    def session_present(self) -> bool:
        return bool(self.connack_flags.session_present)

    def subscribe(self, topic, qos: int = 0, options=None, properties=None) -> list:
        """Subscribes and waits for SUBACK; returns the reason codes (as ints)."""
        with self._lock:
            if options is not None:
                rc, mid = self.client.subscribe(topic, options=options, properties=properties)
            else:
                rc, mid = self.client.subscribe(topic, qos, properties=properties)
            assert rc == mqtt.MQTT_ERR_SUCCESS, f"subscribe() returned {rc}"
            entry = self._subacks.setdefault(mid, [threading.Event(), None])
        assert entry[0].wait(TIMEOUT), f"no SUBACK for {topic!r} within {TIMEOUT}s"
        return [int(getattr(code, "value", code)) for code in entry[1]]

    def unsubscribe(self, topic) -> None:
        with self._lock:
            rc, mid = self.client.unsubscribe(topic)
            assert rc == mqtt.MQTT_ERR_SUCCESS
            entry = self._unsubacks.setdefault(mid, [threading.Event(), None])
        assert entry[0].wait(TIMEOUT), f"no UNSUBACK for {topic!r}"

    def publish(self, topic, payload, qos: int = 0, retain: bool = False, properties=None):
        """Publishes and waits until paho reports it done (sent for QoS 0; PUBACK / PUBCOMP otherwise)."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, f"publish() returned {info.rc}"
        info.wait_for_publish(TIMEOUT)
        assert info.is_published(), f"publish to {topic!r} at QoS {qos} not acknowledged within {TIMEOUT}s"
        return info

    def expect(self, timeout: float = TIMEOUT) -> mqtt.MQTTMessage:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"client {self.client_id or '(auto)'} received no message within {timeout}s"
            ) from None

    def expect_n(self, n: int, timeout: float = TIMEOUT) -> list:
        deadline = time.monotonic() + timeout
        got = []
        while len(got) < n:
            remaining = deadline - time.monotonic()
            try:
                got.append(self.messages.get(timeout=max(remaining, 0.001)))
            except queue.Empty:
                raise AssertionError(
                    f"expected {n} messages, got {len(got)}: {[(m.topic, m.payload) for m in got]}"
                ) from None
        return got

    def expect_until(self, topic: str, payload: bytes, timeout: float = TIMEOUT) -> list:
        """Every message up to and including a sentinel (topic, payload)."""
        deadline = time.monotonic() + timeout
        got = []
        while True:
            remaining = deadline - time.monotonic()
            try:
                m = self.messages.get(timeout=max(remaining, 0.001))
            except queue.Empty:
                raise AssertionError(
                    f"sentinel {topic} {payload!r} not received; got {[(m.topic, m.payload) for m in got]}"
                ) from None
            got.append(m)
            if m.topic == topic and m.payload == payload:
                return got

    def expect_nothing(self, within: float = QUIET) -> None:
        try:
            m = self.messages.get(timeout=within)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected message {m.topic} {m.payload!r} (qos {m.qos}, retain {m.retain})")

    def disconnect(self, reasoncode: Optional[ReasonCode] = None, properties=None) -> None:
        """Clean DISCONNECT, then waits until the broker has closed the connection.

        paho closes its socket right after writing DISCONNECT, so on its own it cannot
        tell when the broker has processed it. A duplicate of the socket keeps the TCP
        connection open on our side until the broker closes it (it MUST, after
        DISCONNECT): when that EOF arrives, the broker is done with this connection and
        a following CONNECT with the same client id cannot race it.
        """
        if self._dropped:
            return
        watch = None
        if self.client.is_connected():
            sock = self.client.socket()
            watch = sock.dup() if sock is not None else None
            self.client.disconnect(reasoncode=reasoncode, properties=properties)
            if self._looping:
                assert self.disconnected.wait(TIMEOUT), "paho did not finish disconnecting"
            else:
                self.client.loop(timeout=0.1)
        if self._looping:
            self.client.loop_stop()
            self._looping = False
        if watch is not None:
            try:
                watch.settimeout(TIMEOUT)
                while watch.recv(65536):
                    pass
            except socket.timeout:
                raise AssertionError(
                    f"broker did not close the connection within {TIMEOUT}s of DISCONNECT"
                ) from None
            except OSError:
                pass  # reset by the broker: closed, too
            finally:
                watch.close()

    def drop(self) -> None:
        """Closes the TCP connection abruptly: no DISCONNECT packet is sent."""
        if self._looping:
            # loop_stop() only ends paho's network thread; it sends nothing.
            self.client.loop_stop()
            self._looping = False
        sock = self.client.socket()
        assert sock is not None, "not connected"
        self._dropped = True
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()

    def close(self) -> None:
        """Teardown: whatever state the client is in, leave no socket or thread behind."""
        try:
            self.disconnect()
        except Exception:  # noqa: BLE001 - best effort at teardown
            pass
        if self._looping:
            self.client.loop_stop()
            self._looping = False
        sock = self.client.socket()
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


def payloads(messages: Iterable[mqtt.MQTTMessage]) -> list:
    return [m.payload for m in messages]
