//! The one helper every integration test uses: a real Tern server on
//! ephemeral ports, plus small client utilities.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use tern::{Server, Settings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub mod ws;

/// A running server; shut down when dropped.
pub struct TestServer {
    pub server: Option<Server>,
    pub mqtt: SocketAddr,
    /// The STOMP listener (127.0.0.1:0 when it is disabled).
    pub stomp: SocketAddr,
    /// The WebSocket listener (127.0.0.1:0 when it is disabled).
    pub ws: SocketAddr,
    /// The operations HTTP listener (127.0.0.1:0 when it is disabled).
    pub http: SocketAddr,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            // Cancel at once; tasks end with the test's runtime.
            server.stop_now();
        }
    }
}

pub async fn start_server() -> TestServer {
    start_server_with(|_| {}).await
}

pub async fn start_server_with(configure: impl FnOnce(&mut Settings)) -> TestServer {
    let mut settings = Settings::ephemeral();
    configure(&mut settings);
    let server = Server::start(settings).await.expect("server starts");
    let mqtt = server.mqtt_addr().expect("mqtt listener");
    let stomp = server
        .stomp_addr()
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    let unbound = || SocketAddr::from(([127, 0, 0, 1], 0));
    let ws = server.ws_addr().unwrap_or_else(unbound);
    let http = server.addrs().http.unwrap_or_else(unbound);
    TestServer {
        server: Some(server),
        mqtt,
        stomp,
        ws,
        http,
    }
}

/// How long a test waits for something that should happen (generous: CI machines are shared).
pub const WAIT: Duration = Duration::from_secs(10);
/// How long a test waits to be sure something does NOT happen.
pub const QUIET: Duration = Duration::from_millis(500);

/// Raw TCP client for malformed-input tests.
pub async fn raw_connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.expect("tcp connect")
}

/// Sends bytes and returns everything the server sends until it closes (or WAIT passes).
pub async fn send_raw_until_close(stream: &mut TcpStream, bytes: &[u8]) -> (Vec<u8>, bool) {
    stream.write_all(bytes).await.expect("write");
    read_until_close(stream).await
}

/// Reads until EOF; returns (bytes, closed).
pub async fn read_until_close(stream: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Ok(Err(_)) => return (out, true),
            Err(_) => return (out, false),
        }
    }
}

/// MQTT 3.1.1 CONNECT with clean session, keep-alive 60, client id `id`.
pub fn connect_v311(id: &str) -> Vec<u8> {
    let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3c];
    body.extend_from_slice(&(id.len() as u16).to_be_bytes());
    body.extend_from_slice(id.as_bytes());
    frame(0x10, &body)
}

/// MQTT 5 CONNECT with clean start, keep-alive 60, no properties.
pub fn connect_v5(id: &str) -> Vec<u8> {
    let mut body = vec![
        0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3c, 0x00,
    ];
    body.extend_from_slice(&(id.len() as u16).to_be_bytes());
    body.extend_from_slice(id.as_bytes());
    frame(0x10, &body)
}

/// A packet: first byte, remaining-length varint, body.
pub fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// Reads exactly one packet (fixed header + body) from a raw stream.
pub async fn read_packet(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let fut = async {
        let mut first = [0u8; 1];
        stream.read_exact(&mut first).await.ok()?;
        let mut out = vec![first[0]];
        let mut len = 0usize;
        let mut shift = 0;
        loop {
            let mut b = [0u8; 1];
            stream.read_exact(&mut b).await.ok()?;
            out.push(b[0]);
            len |= usize::from(b[0] & 0x7f) << shift;
            shift += 7;
            if b[0] & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).await.ok()?;
        out.extend_from_slice(&body);
        Some(out)
    };
    tokio::time::timeout(WAIT, fut).await.ok().flatten()
}

// ---------------------------------------------------------------------------
// MQTT helpers: raw packets, a raw client, and rumqttc clients (v4 = 3.1.1, v5).
// ---------------------------------------------------------------------------

impl TestServer {
    /// Whether the core still holds a session for `client_id` (connected or not).
    pub fn has_session(&self, client_id: &str) -> bool {
        let server = self.server.as_ref().expect("server running");
        server.router().session(client_id).is_some()
    }

    /// Whether `client_id` has a session with a live connection.
    pub fn is_connected(&self, client_id: &str) -> bool {
        let server = self.server.as_ref().expect("server running");
        server
            .router()
            .session(client_id)
            .is_some_and(|s| s.is_connected())
    }
}

/// Polls `cond` until it holds (or panics after WAIT): for server-side state no packet reveals.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An MQTT UTF-8 string or binary field: 2-byte length, then the bytes.
pub fn mqtt_str(s: impl AsRef<[u8]>) -> Vec<u8> {
    let s = s.as_ref();
    let mut out = (s.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(s);
    out
}

/// A variable byte integer.
pub fn varint(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            return out;
        }
    }
}

/// A 5.0 property block: its length, then the encoded properties.
pub fn props(encoded: &[u8]) -> Vec<u8> {
    let mut out = varint(encoded.len());
    out.extend_from_slice(encoded);
    out
}

/// CONNECT with every field explicit. `properties` is the raw 5.0 property block
/// (with its length; None for 3.x); `payload` is client id, will, username, password.
pub fn connect_packet(
    name: &str,
    level: u8,
    flags: u8,
    keep_alive: u16,
    properties: Option<&[u8]>,
    payload: &[u8],
) -> Vec<u8> {
    let mut body = mqtt_str(name);
    body.push(level);
    body.push(flags);
    body.extend_from_slice(&keep_alive.to_be_bytes());
    if let Some(p) = properties {
        body.extend_from_slice(p);
    }
    body.extend_from_slice(payload);
    frame(0x10, &body)
}

/// PUBLISH: `flags` is the low nibble (DUP, QoS, RETAIN); `properties` as for `connect_packet`.
pub fn publish_packet(
    flags: u8,
    topic: &str,
    packet_id: Option<u16>,
    properties: Option<&[u8]>,
    payload: &[u8],
) -> Vec<u8> {
    let mut body = mqtt_str(topic);
    if let Some(id) = packet_id {
        body.extend_from_slice(&id.to_be_bytes());
    }
    if let Some(p) = properties {
        body.extend_from_slice(p);
    }
    body.extend_from_slice(payload);
    frame(0x30 | flags, &body)
}

/// SUBSCRIBE with (filter, options byte) pairs; `properties` as for `connect_packet`.
pub fn subscribe_packet(
    packet_id: u16,
    properties: Option<&[u8]>,
    filters: &[(&str, u8)],
) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    if let Some(p) = properties {
        body.extend_from_slice(p);
    }
    for (filter, options) in filters {
        body.extend(mqtt_str(filter));
        body.push(*options);
    }
    frame(0x82, &body)
}

/// PUBACK (0x40), PUBREC (0x50), PUBREL (0x62), PUBCOMP (0x70) in their short form.
pub fn ack_packet(first: u8, packet_id: u16) -> Vec<u8> {
    frame(first, &packet_id.to_be_bytes())
}

/// The body of a packet read by `read_packet` (fixed header skipped).
pub fn packet_body(packet: &[u8]) -> &[u8] {
    let mut pos = 1;
    while packet[pos] & 0x80 != 0 {
        pos += 1;
    }
    &packet[pos + 1..]
}

/// A PUBLISH as received by a raw client.
#[derive(Debug, Clone, PartialEq)]
pub struct RawPublish {
    pub dup: bool,
    pub qos: u8,
    pub retain: bool,
    pub topic: String,
    pub packet_id: Option<u16>,
    /// 5.0 property bytes (without the length); empty for 3.x.
    pub properties: Vec<u8>,
    pub payload: Vec<u8>,
}

pub fn parse_publish(packet: &[u8], v5: bool) -> RawPublish {
    assert_eq!(packet[0] >> 4, 3, "not a PUBLISH: {packet:02x?}");
    let body = packet_body(packet);
    let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
    let topic = String::from_utf8(body[2..2 + topic_len].to_vec()).expect("utf-8 topic");
    let mut pos = 2 + topic_len;
    let qos = (packet[0] >> 1) & 3;
    let packet_id = (qos > 0).then(|| {
        pos += 2;
        u16::from_be_bytes([body[pos - 2], body[pos - 1]])
    });
    let mut properties = Vec::new();
    if v5 {
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let b = body[pos];
            pos += 1;
            len |= usize::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        properties = body[pos..pos + len].to_vec();
        pos += len;
    }
    RawPublish {
        dup: packet[0] & 0x08 != 0,
        qos,
        retain: packet[0] & 0x01 != 0,
        topic,
        packet_id,
        properties,
        payload: body[pos..].to_vec(),
    }
}

/// The reason code of a 5.0 DISCONNECT read by `read_packet`.
pub fn disconnect_reason(packet: &[u8]) -> u8 {
    assert_eq!(packet[0], 0xE0, "not a DISCONNECT: {packet:02x?}");
    packet_body(packet).first().copied().unwrap_or(0)
}

/// Opens a raw connection, sends `connect` and returns the stream and the CONNACK.
pub async fn raw_client(addr: SocketAddr, connect: &[u8]) -> (TcpStream, Vec<u8>) {
    let mut stream = raw_connect(addr).await;
    stream.write_all(connect).await.expect("write CONNECT");
    let connack = read_packet(&mut stream).await.expect("CONNACK");
    assert_eq!(connack[0], 0x20, "expected CONNACK, got {connack:02x?}");
    (stream, connack)
}

/// Writes bytes to a raw connection.
pub async fn send(stream: &mut TcpStream, bytes: &[u8]) {
    stream.write_all(bytes).await.expect("write");
}

/// Asserts the server closes the connection within WAIT; returns what it sent before.
pub async fn expect_closed(stream: &mut TcpStream) -> Vec<u8> {
    let (bytes, closed) = read_until_close(stream).await;
    assert!(closed, "connection still open; received {bytes:02x?}");
    bytes
}

/// Asserts nothing arrives (and the connection stays open) for QUIET.
pub async fn expect_silence(stream: &mut TcpStream) {
    let mut buf = [0u8; 256];
    match tokio::time::timeout(QUIET, stream.read(&mut buf)).await {
        Err(_) => {}
        Ok(Ok(0)) => panic!("connection closed"),
        Ok(Ok(n)) => panic!("unexpected bytes: {:02x?}", &buf[..n]),
        Ok(Err(e)) => panic!("read error: {e}"),
    }
}

/// Asserts the connection is open and answered: PINGREQ gets PINGRESP.
pub async fn expect_alive(stream: &mut TcpStream) {
    send(stream, &[0xC0, 0x00]).await;
    assert_eq!(
        read_packet(stream).await,
        Some(vec![0xD0, 0x00]),
        "no PINGRESP"
    );
}

/// Empty 5.0 property block for level 5, no block for 3.x.
pub fn empty_props(level: u8) -> Option<&'static [u8]> {
    (level == 5).then_some(&[0x00][..])
}

/// CONNECT for 3.1 (level 3, `MQIsdp`), 3.1.1 (level 4) or 5.0 (level 5), keep-alive 60. Without `clean`, a 5.0
/// session gets `expiry` seconds of session expiry.
pub fn connect_level(level: u8, id: &str, clean: bool, expiry: u32) -> Vec<u8> {
    let flags = if clean { 0x02 } else { 0x00 };
    let mut expiry_prop = vec![0x11];
    expiry_prop.extend_from_slice(&expiry.to_be_bytes());
    let properties = props(if expiry > 0 { &expiry_prop } else { &[] });
    let properties = (level == 5).then_some(&properties[..]);
    connect_packet(
        protocol_name(level),
        level,
        flags,
        60,
        properties,
        &mqtt_str(id),
    )
}

/// The protocol name CONNECT carries at `level`: `MQIsdp` for 3.1, `MQTT` after.
pub fn protocol_name(level: u8) -> &'static str {
    if level == 3 {
        "MQIsdp"
    } else {
        "MQTT"
    }
}

/// CONNACK's acknowledge flags for a resumed session at `level`: session
/// present, except on 3.1 whose CONNACK has no such flag (the bit is reserved).
pub fn resumed_flags(level: u8) -> u8 {
    u8::from(level != 3)
}

/// A raw client at `level` subscribed to `filter` (options byte `options`); SUBACK checked.
pub async fn raw_subscriber(
    addr: SocketAddr,
    level: u8,
    id: &str,
    filter: &str,
    options: u8,
) -> TcpStream {
    let (mut s, connack) = raw_client(addr, &connect_level(level, id, true, 0)).await;
    assert_eq!(connack[3], 0, "refused: {connack:02x?}");
    send(
        &mut s,
        &subscribe_packet(1, empty_props(level), &[(filter, options)]),
    )
    .await;
    assert_eq!(
        read_packet(&mut s).await,
        Some(suback_bytes(level, 1, &[options & 3]))
    );
    s
}

/// The SUBACK the server sends for `codes` at `level`.
pub fn suback_bytes(level: u8, packet_id: u16, codes: &[u8]) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    if level == 5 {
        body.push(0x00);
    }
    body.extend_from_slice(codes);
    frame(0x90, &body)
}

/// Reads the next packet, which must be a PUBLISH.
pub async fn read_publish(stream: &mut TcpStream, level: u8) -> RawPublish {
    let packet = read_packet(stream).await.expect("PUBLISH");
    parse_publish(&packet, level == 5)
}

/// A message as a test sees it, whatever client received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    pub dup: bool,
    pub pkid: u16,
}

/// What the tests need from a client, so one test body runs for 3.1.1 and 5.0.
#[allow(async_fn_in_trait)]
pub trait TestClient: Sized {
    /// "v311" or "v5", for client ids and messages.
    const VERSION: &'static str;
    /// False for MQTT 3.1, whose CONNACK has no session-present flag (the bit is
    /// reserved): `connect_persistent` then always reports false.
    const HAS_SESSION_PRESENT: bool = true;
    /// Connects with clean start; panics unless accepted.
    async fn connect(addr: SocketAddr, id: &str) -> Self;
    /// Connects without clean start (5.0: session expiry 1 hour); returns session present.
    async fn connect_persistent(addr: SocketAddr, id: &str) -> (Self, bool);
    /// Subscribes and returns the SUBACK codes.
    async fn subscribe(&mut self, filter: &str, qos: u8) -> Vec<u8>;
    async fn unsubscribe(&mut self, filter: &str);
    /// Publishes; for QoS 1/2 returns once the flow is acknowledged (PUBACK/PUBCOMP).
    async fn publish(&mut self, topic: &str, qos: u8, retain: bool, payload: &[u8]);
    /// The next PUBLISH received (panics after WAIT).
    async fn recv(&mut self) -> Msg;
    /// Asserts no PUBLISH arrives for QUIET.
    async fn expect_no_message(&mut self);
    /// Sends DISCONNECT and waits until the server closed the connection.
    async fn disconnect(self);
    /// Waits until the server closes the connection; returns the PUBLISHes received meanwhile.
    async fn closed_by_server(&mut self) -> Vec<Msg>;
}

/// A rumqttc client and its event loop, driven by the test; one module per version.
macro_rules! rumqttc_client {
    ($module:ident, $version:literal, [$($root:tt)*], [$($bytes:tt)*], [$($qos:tt)*]) => {
        pub mod $module {
            use std::collections::VecDeque;
            use std::net::SocketAddr;
            use std::time::Duration;

            use $($root)*::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions};
            use $($bytes)*::{ConnAck, Packet, Publish};
            use $($qos)*::QoS;
            use rumqttc::Outgoing;

            use super::{Msg, TestClient, QUIET, WAIT};

            pub struct Client {
                pub client: AsyncClient,
                pub events: EventLoop,
                /// Incoming packets seen while waiting for something else.
                pub stash: VecDeque<Packet>,
            }

            pub fn qos(level: u8) -> QoS {
                match level {
                    0 => QoS::AtMostOnce,
                    1 => QoS::AtLeastOnce,
                    _ => QoS::ExactlyOnce,
                }
            }

            /// Options for the test server: keep-alive 30 s, 1 MiB packets.
            pub fn options(addr: SocketAddr, id: &str) -> MqttOptions {
                let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
                options.set_keep_alive(Duration::from_secs(30));
                options
            }

            impl Client {
                /// Connects with `options`; returns the client and its CONNACK (panics if refused).
                pub async fn start(options: MqttOptions) -> (Client, ConnAck) {
                    let (client, events) = AsyncClient::new(options, 100);
                    let mut c = Client { client, events, stash: VecDeque::new() };
                    match c.wait("CONNACK", |e| matches!(e, Event::Incoming(Packet::ConnAck(_)))).await {
                        Event::Incoming(Packet::ConnAck(ack)) => (c, ack),
                        other => unreachable!("{other:?}"),
                    }
                }

                /// Polls until an event matches; incoming packets that do not are stashed.
                pub async fn wait(&mut self, what: &str, pred: impl Fn(&Event) -> bool) -> Event {
                    if let Some(i) = self.stash.iter().position(|p| pred(&Event::Incoming(p.clone()))) {
                        return Event::Incoming(self.stash.remove(i).expect("stashed"));
                    }
                    let deadline = tokio::time::Instant::now() + WAIT;
                    loop {
                        match tokio::time::timeout_at(deadline, self.events.poll()).await {
                            Err(_) => panic!("{}: timed out waiting for {what}", $version),
                            Ok(Err(e)) => panic!("{}: connection error waiting for {what}: {e:?}", $version),
                            Ok(Ok(event)) if pred(&event) => return event,
                            Ok(Ok(Event::Incoming(packet))) => self.stash.push_back(packet),
                            Ok(Ok(Event::Outgoing(_))) => {}
                        }
                    }
                }

                /// The next incoming packet matching `pred`.
                pub async fn wait_incoming(&mut self, what: &str, pred: impl Fn(&Packet) -> bool) -> Packet {
                    match self.wait(what, |e| matches!(e, Event::Incoming(p) if pred(p))).await {
                        Event::Incoming(p) => p,
                        other => unreachable!("{other:?}"),
                    }
                }

                pub async fn recv_publish(&mut self) -> Publish {
                    match self.wait_incoming("PUBLISH", |p| matches!(p, Packet::Publish(_))).await {
                        Packet::Publish(p) => p,
                        other => unreachable!("{other:?}"),
                    }
                }

                /// Waits for the end of an outgoing publish flow of QoS `level`: the PUBLISH
                /// written (0), PUBACK (1) or PUBCOMP (2).
                pub async fn publish_done(&mut self, level: u8) {
                    match level {
                        0 => self.wait("PUBLISH written", |e| matches!(e, Event::Outgoing(Outgoing::Publish(_)))).await,
                        1 => self.wait("PUBACK", |e| matches!(e, Event::Incoming(Packet::PubAck(_)))).await,
                        _ => self.wait("PUBCOMP", |e| matches!(e, Event::Incoming(Packet::PubComp(_)))).await,
                    };
                }

                /// Polls until the connection ends; returns the packets received meanwhile
                /// and the error that ended it (5.0: a server DISCONNECT is `StateError::ServerDisconnect`).
                pub async fn until_closed(&mut self) -> (Vec<Packet>, ConnectionError) {
                    let deadline = tokio::time::Instant::now() + WAIT;
                    let mut seen: Vec<Packet> = self.stash.drain(..).collect();
                    loop {
                        match tokio::time::timeout_at(deadline, self.events.poll()).await {
                            Err(_) => panic!("{}: connection not closed", $version),
                            Ok(Err(e)) => return (seen, e),
                            Ok(Ok(Event::Incoming(p))) => seen.push(p),
                            Ok(Ok(Event::Outgoing(_))) => {}
                        }
                    }
                }
            }

            fn msg(p: &Publish) -> Msg {
                Msg {
                    topic: String::from_utf8_lossy(p.topic.as_ref()).into_owned(),
                    payload: p.payload.to_vec(),
                    qos: p.qos as u8,
                    retain: p.retain,
                    dup: p.dup,
                    pkid: p.pkid,
                }
            }

            impl TestClient for Client {
                const VERSION: &'static str = $version;

                async fn connect(addr: SocketAddr, id: &str) -> Self {
                    Client::start(options(addr, id)).await.0
                }

                async fn connect_persistent(addr: SocketAddr, id: &str) -> (Self, bool) {
                    let (c, ack) = Client::start(persistent_options(addr, id)).await;
                    (c, ack.session_present)
                }

                async fn subscribe(&mut self, filter: &str, level: u8) -> Vec<u8> {
                    self.client.subscribe(filter, qos(level)).await.expect("subscribe");
                    match self.wait_incoming("SUBACK", |p| matches!(p, Packet::SubAck(_))).await {
                        Packet::SubAck(ack) => ack.return_codes.iter().map(suback_code).collect(),
                        other => unreachable!("{other:?}"),
                    }
                }

                async fn unsubscribe(&mut self, filter: &str) {
                    self.client.unsubscribe(filter).await.expect("unsubscribe");
                    self.wait_incoming("UNSUBACK", |p| matches!(p, Packet::UnsubAck(_))).await;
                }

                async fn publish(&mut self, topic: &str, level: u8, retain: bool, payload: &[u8]) {
                    self.client
                        .publish(topic, qos(level), retain, payload.to_vec())
                        .await
                        .expect("publish");
                    self.publish_done(level).await;
                }

                async fn recv(&mut self) -> Msg {
                    msg(&self.recv_publish().await)
                }

                async fn expect_no_message(&mut self) {
                    if let Some(p) = self.stash.iter().find(|p| matches!(p, Packet::Publish(_))) {
                        panic!("{}: unexpected {p:?}", $version);
                    }
                    let deadline = tokio::time::Instant::now() + QUIET;
                    while let Ok(event) = tokio::time::timeout_at(deadline, self.events.poll()).await {
                        match event {
                            Ok(Event::Incoming(Packet::Publish(p))) => panic!("{}: unexpected {p:?}", $version),
                            Ok(Event::Incoming(p)) => self.stash.push_back(p),
                            Ok(Event::Outgoing(_)) => {}
                            Err(e) => panic!("{}: connection error: {e:?}", $version),
                        }
                    }
                }

                async fn closed_by_server(&mut self) -> Vec<Msg> {
                    let (seen, _) = self.until_closed().await;
                    seen.iter()
                        .filter_map(|p| match p {
                            Packet::Publish(p) => Some(msg(p)),
                            _ => None,
                        })
                        .collect()
                }

                async fn disconnect(mut self) {
                    self.client.disconnect().await.expect("disconnect");
                    self.until_closed().await;
                }
            }

            rumqttc_client_extras!($module);
        }
    };
}

macro_rules! rumqttc_client_extras {
    (v4) => {
        pub fn persistent_options(addr: SocketAddr, id: &str) -> MqttOptions {
            let mut o = options(addr, id);
            o.set_clean_session(false);
            o
        }

        fn suback_code(code: &rumqttc::SubscribeReasonCode) -> u8 {
            match code {
                rumqttc::SubscribeReasonCode::Success(q) => *q as u8,
                rumqttc::SubscribeReasonCode::Failure => 0x80,
            }
        }
    };
    (v5) => {
        pub fn persistent_options(addr: SocketAddr, id: &str) -> MqttOptions {
            let mut o = options(addr, id);
            o.set_clean_start(false);
            let mut p = rumqttc::v5::mqttbytes::v5::ConnectProperties::new();
            p.session_expiry_interval = Some(3600);
            o.set_connect_properties(p);
            o
        }

        impl Client {
            /// SUBSCRIBE with full 5.0 options and an optional subscription identifier; returns the SUBACK codes.
            pub async fn subscribe_with(
                &mut self,
                filters: Vec<rumqttc::v5::mqttbytes::v5::Filter>,
                id: Option<usize>,
            ) -> Vec<u8> {
                let properties = rumqttc::v5::mqttbytes::v5::SubscribeProperties {
                    id,
                    user_properties: Vec::new(),
                };
                self.client
                    .subscribe_many_with_properties(filters, properties)
                    .await
                    .expect("subscribe");
                match self
                    .wait_incoming("SUBACK", |p| matches!(p, Packet::SubAck(_)))
                    .await
                {
                    Packet::SubAck(ack) => ack.return_codes.iter().map(suback_code).collect(),
                    other => unreachable!("{other:?}"),
                }
            }

            /// PUBLISH with 5.0 properties; returns when the flow is acknowledged.
            pub async fn publish_with(
                &mut self,
                topic: &str,
                level: u8,
                retain: bool,
                payload: &[u8],
                properties: rumqttc::v5::mqttbytes::v5::PublishProperties,
            ) {
                self.client
                    .publish_with_properties(
                        topic,
                        qos(level),
                        retain,
                        payload.to_vec(),
                        properties,
                    )
                    .await
                    .expect("publish");
                self.publish_done(level).await;
            }
        }

        fn suback_code(code: &rumqttc::v5::mqttbytes::v5::SubscribeReasonCode) -> u8 {
            use rumqttc::v5::mqttbytes::v5::SubscribeReasonCode as C;
            match code {
                C::Success(q) => *q as u8,
                C::Failure | C::Unspecified => 0x80,
                C::ImplementationSpecific => 0x83,
                C::NotAuthorized => 0x87,
                C::TopicFilterInvalid => 0x8F,
                C::PkidInUse => 0x91,
                C::QuotaExceeded => 0x97,
                C::SharedSubscriptionsNotSupported => 0x9E,
                C::SubscriptionIdNotSupported => 0xA1,
                C::WildcardSubscriptionsNotSupported => 0xA2,
            }
        }
    };
}

rumqttc_client!(v4, "v311", [rumqttc], [rumqttc], [rumqttc]);
rumqttc_client!(
    v5,
    "v5",
    [rumqttc::v5],
    [rumqttc::v5::mqttbytes::v5],
    [rumqttc::v5::mqttbytes]
);

/// Asserts the broker still serves a fresh client: subscribe, publish QoS 1 to itself, receive.
pub async fn assert_broker_healthy(addr: SocketAddr) {
    let id = format!("healthy-{}", rand_suffix());
    let mut c = <v4::Client as TestClient>::connect(addr, &id).await;
    let topic = format!("health/{id}");
    c.subscribe(&topic, 1).await;
    c.publish(&topic, 1, false, b"ok").await;
    let m = c.recv().await;
    assert_eq!(
        (m.topic.as_str(), m.payload.as_slice()),
        (topic.as_str(), &b"ok"[..])
    );
    c.disconnect().await;
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

pub mod crash;
/// A STOMP test client over a real socket.
pub mod http;
pub mod nats;
pub mod process;
pub mod stomp;
pub mod v31;

/// Runs cases on MQTT 3.1 as well: generic ones (`async fn case<C: TestClient>()`)
/// with the raw client of `v31.rs`, raw-byte ones (`async fn case(level: u8)`) at
/// level 3. `v31_cases!(clients: [a], levels: [b])` gives the tests `on_v31::a`
/// and `on_v31::b` beside the 3.1.1 and 5.0 ones.
#[macro_export]
macro_rules! v31_cases {
    (clients: [$($case:ident),* $(,)?], levels: [$($raw:ident),* $(,)?] $(,)?) => {
        mod on_v31 {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case::<$crate::common::v31::Client>().await;
                }
            )*
            $(
                #[tokio::test]
                async fn $raw() {
                    super::$raw(3).await;
                }
            )*
        }
    };
}
