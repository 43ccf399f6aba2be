"""A raw MQTT 3.1.1 client on a socket, for tests that must see and withhold
single packets: which packet id a PUBLISH carries, its DUP flag, a PUBREL
resent after a reconnect, an acknowledgement deliberately never sent (paho
answers PUBREC itself and hides packet ids and PUBRELs).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from mqttutil import TIMEOUT
from securityutil import _mqtt_str, _recv_exactly, _remaining_length

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBSCRIBE, SUBACK = 1, 2, 3, 4, 5, 6, 7, 8, 9


@dataclass
class Packet:
    kind: int
    flags: int
    body: bytes

    @property
    def packet_id(self) -> int:
        if self.kind == PUBLISH:
            (n,) = struct.unpack(">H", self.body[:2])
            return struct.unpack(">H", self.body[2 + n : 4 + n])[0]
        return struct.unpack(">H", self.body[:2])[0]

    @property
    def qos(self) -> int:
        return (self.flags >> 1) & 3

    @property
    def dup(self) -> bool:
        return bool(self.flags & 0x08)

    @property
    def topic(self) -> str:
        (n,) = struct.unpack(">H", self.body[:2])
        return self.body[2 : 2 + n].decode()

    @property
    def payload(self) -> bytes:
        (n,) = struct.unpack(">H", self.body[:2])
        return self.body[2 + n + (2 if self.qos else 0) :]


class RawMqtt:
    """One MQTT 3.1.1 connection; `session_present` after `connect`."""

    def __init__(self, broker, client_id: str, clean: bool):
        self.sock = socket.create_connection((broker.host, broker.mqtt_port), timeout=TIMEOUT)
        body = _mqtt_str("MQTT") + bytes([4, 0x02 if clean else 0]) + struct.pack(">H", 60) + _mqtt_str(client_id)
        self._send(CONNECT, 0, body)
        connack = self.read()
        assert connack.kind == CONNACK and connack.body[1] == 0, f"not accepted: {connack}"
        self.session_present = bool(connack.body[0] & 1)

    def _send(self, kind: int, flags: int, body: bytes) -> None:
        self.sock.sendall(bytes([kind << 4 | flags]) + _remaining_length(len(body)) + body)

    def read(self, timeout: float = TIMEOUT) -> Packet:
        self.sock.settimeout(timeout)
        first = _recv_exactly(self.sock, 1)
        assert first, "the broker closed the connection"
        length, shift = 0, 0
        while True:
            (byte,) = _recv_exactly(self.sock, 1)
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        body = _recv_exactly(self.sock, length)
        return Packet(first[0] >> 4, first[0] & 0x0F, body)

    def expect_nothing(self, within: float) -> None:
        try:
            packet = self.read(within)
        except socket.timeout:
            return
        raise AssertionError(f"unexpected {packet}")

    def subscribe(self, topic_filter: str, qos: int) -> None:
        self._send(SUBSCRIBE, 0x02, struct.pack(">H", 1) + _mqtt_str(topic_filter) + bytes([qos]))
        suback = self.read()
        assert suback.kind == SUBACK and suback.body[2:] == bytes([qos]), suback

    def ack(self, kind: int, packet_id: int) -> None:
        """PUBACK, PUBREC, PUBREL or PUBCOMP for `packet_id`."""
        self._send(kind, 0x02 if kind == PUBREL else 0, struct.pack(">H", packet_id))

    def drop(self) -> None:
        """Closes the socket without DISCONNECT (the will, if any, is due)."""
        self.sock.close()
