//! A raw MQTT 3.1 client (protocol name `MQIsdp`, level 3), so the cases every
//! version shares run on 3.1 too: rumqttc cannot speak 3.1. It acknowledges
//! what it receives as a client must (PUBACK, PUBREC, PUBCOMP) and keeps
//! PUBLISHes that arrive while it waits for something else.

use std::collections::VecDeque;
use std::net::SocketAddr;

use tokio::net::TcpStream;

use super::{
    ack_packet, connect_packet, frame, mqtt_str, packet_body, parse_publish, publish_packet,
    raw_client, read_packet, read_until_close, send, subscribe_packet, Msg, TestClient, QUIET,
};

const PUBLISH: u8 = 3;
const PUBACK: u8 = 4;
const PUBREC: u8 = 5;
const PUBREL: u8 = 6;
const PUBCOMP: u8 = 7;
const SUBACK: u8 = 9;
const UNSUBACK: u8 = 11;

pub struct Client {
    stream: TcpStream,
    next_id: u16,
    /// PUBLISHes received while waiting for something else, oldest first.
    stash: VecDeque<Msg>,
}

/// CONNECT at level 3, keep-alive 60, clean session or not.
pub fn connect_v31(id: &str, clean: bool) -> Vec<u8> {
    let flags = if clean { 0x02 } else { 0x00 };
    connect_packet("MQIsdp", 3, flags, 60, None, &mqtt_str(id))
}

fn msg(packet: &[u8]) -> Msg {
    let p = parse_publish(packet, false);
    Msg {
        topic: p.topic,
        payload: p.payload,
        qos: p.qos,
        retain: p.retain,
        dup: p.dup,
        pkid: p.packet_id.unwrap_or(0),
    }
}

/// The packet id that starts an ack's body.
fn packet_id(packet: &[u8]) -> u16 {
    let body = packet_body(packet);
    u16::from_be_bytes([body[0], body[1]])
}

/// Splits bytes read up to a close into whole packets.
fn packets(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (mut len, mut shift, mut pos) = (0usize, 0, 1);
        loop {
            let b = bytes[pos];
            pos += 1;
            len |= usize::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        out.push(bytes[..pos + len].to_vec());
        bytes = &bytes[pos + len..];
    }
    out
}

impl Client {
    /// Connects with `connect`; returns the client and its CONNACK (panics if refused).
    async fn start(addr: SocketAddr, connect: &[u8]) -> (Client, Vec<u8>) {
        let (stream, connack) = raw_client(addr, connect).await;
        assert_eq!(connack.len(), 4, "3.1 CONNACK: {connack:02x?}");
        assert_eq!(connack[3], 0, "3.1: CONNACK refused: {connack:02x?}");
        let client = Client {
            stream,
            next_id: 0,
            stash: VecDeque::new(),
        };
        (client, connack)
    }

    fn packet_id(&mut self) -> u16 {
        self.next_id = self.next_id % u16::MAX + 1;
        self.next_id
    }

    /// Acknowledges what needs it; returns the packet unless it was a PUBLISH,
    /// which is stashed for `recv`.
    async fn take_in(&mut self, packet: Vec<u8>) -> Option<Vec<u8>> {
        match packet[0] >> 4 {
            PUBLISH => {
                let m = msg(&packet);
                match m.qos {
                    1 => send(&mut self.stream, &ack_packet(0x40, m.pkid)).await,
                    2 => send(&mut self.stream, &ack_packet(0x50, m.pkid)).await,
                    _ => {}
                }
                self.stash.push_back(m);
                None
            }
            PUBREL => {
                let id = packet_id(&packet);
                send(&mut self.stream, &ack_packet(0x70, id)).await;
                None
            }
            _ => Some(packet),
        }
    }

    /// Reads until a packet of `kind` for `id` arrives; returns it.
    async fn wait_for(&mut self, kind: u8, id: u16) -> Vec<u8> {
        loop {
            let packet = read_packet(&mut self.stream)
                .await
                .unwrap_or_else(|| panic!("v31: no packet of type {kind} for id {id}"));
            if let Some(packet) = self.take_in(packet).await {
                if packet[0] >> 4 == kind && packet_id(&packet) == id {
                    return packet;
                }
                panic!("v31: expected packet type {kind} for id {id}, got {packet:02x?}");
            }
        }
    }
}

impl TestClient for Client {
    const VERSION: &'static str = "v31";
    const HAS_SESSION_PRESENT: bool = false;

    async fn connect(addr: SocketAddr, id: &str) -> Self {
        Client::start(addr, &connect_v31(id, true)).await.0
    }

    async fn connect_persistent(addr: SocketAddr, id: &str) -> (Self, bool) {
        let (client, connack) = Client::start(addr, &connect_v31(id, false)).await;
        (client, connack[2] & 0x01 != 0)
    }

    async fn subscribe(&mut self, filter: &str, qos: u8) -> Vec<u8> {
        let id = self.packet_id();
        send(
            &mut self.stream,
            &subscribe_packet(id, None, &[(filter, qos)]),
        )
        .await;
        let suback = self.wait_for(SUBACK, id).await;
        packet_body(&suback)[2..].to_vec()
    }

    async fn unsubscribe(&mut self, filter: &str) {
        let id = self.packet_id();
        let mut body = id.to_be_bytes().to_vec();
        body.extend(mqtt_str(filter));
        send(&mut self.stream, &frame(0xA2, &body)).await;
        self.wait_for(UNSUBACK, id).await;
    }

    async fn publish(&mut self, topic: &str, qos: u8, retain: bool, payload: &[u8]) {
        let id = (qos > 0).then(|| self.packet_id());
        let flags = (qos << 1) | u8::from(retain);
        send(
            &mut self.stream,
            &publish_packet(flags, topic, id, None, payload),
        )
        .await;
        match (qos, id) {
            (1, Some(id)) => {
                self.wait_for(PUBACK, id).await;
            }
            (2, Some(id)) => {
                self.wait_for(PUBREC, id).await;
                send(&mut self.stream, &ack_packet(0x62, id)).await;
                self.wait_for(PUBCOMP, id).await;
            }
            _ => {}
        }
    }

    async fn recv(&mut self) -> Msg {
        loop {
            if let Some(m) = self.stash.pop_front() {
                return m;
            }
            let packet = read_packet(&mut self.stream)
                .await
                .expect("v31: timed out waiting for PUBLISH");
            if let Some(other) = self.take_in(packet).await {
                panic!("v31: expected PUBLISH, got {other:02x?}");
            }
        }
    }

    async fn expect_no_message(&mut self) {
        if let Some(m) = self.stash.front() {
            panic!("v31: unexpected {m:?}");
        }
        let deadline = tokio::time::Instant::now() + QUIET;
        // A peek can be cut off safely; a read of half a packet could not.
        let mut first = [0u8; 1];
        while let Ok(peeked) = tokio::time::timeout_at(deadline, self.stream.peek(&mut first)).await
        {
            assert!(peeked.is_ok_and(|n| n > 0), "v31: connection closed");
            let packet = read_packet(&mut self.stream).await.expect("v31: packet");
            if let Some(other) = self.take_in(packet).await {
                panic!("v31: unexpected {other:02x?}");
            }
            if let Some(m) = self.stash.front() {
                panic!("v31: unexpected {m:?}");
            }
        }
    }

    async fn disconnect(mut self) {
        send(&mut self.stream, &[0xE0, 0x00]).await;
        let (bytes, closed) = read_until_close(&mut self.stream).await;
        assert!(closed, "v31: not closed after DISCONNECT; got {bytes:02x?}");
    }

    async fn closed_by_server(&mut self) -> Vec<Msg> {
        let (bytes, closed) = read_until_close(&mut self.stream).await;
        assert!(closed, "v31: connection not closed");
        let mut seen: Vec<Msg> = self.stash.drain(..).collect();
        seen.extend(
            packets(&bytes)
                .iter()
                .filter(|p| p[0] >> 4 == PUBLISH)
                .map(|p| msg(p)),
        );
        seen
    }
}
