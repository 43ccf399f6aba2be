//! A small STOMP client for integration tests: real socket, the `tern-stomp`
//! codec, and assertions that say what was expected.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tern_stomp::{Command, Decoder, Frame, Item, Limits, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{QUIET, WAIT};

pub struct StompClient {
    pub stream: TcpStream,
    buf: BytesMut,
    decoder: Decoder,
    pub version: Version,
    /// Heart-beats received so far.
    pub heart_beats: usize,
    /// The CONNECTED frame.
    pub connected: Frame,
    next_receipt: u64,
    /// Frames that arrived while waiting for a RECEIPT, returned by the next reads.
    stash: VecDeque<Frame>,
}

/// A frame from (command, headers, body).
pub fn frame(command: Command, headers: &[(&str, &str)], body: &[u8]) -> Frame {
    let mut f = Frame::new(command).with_body(Bytes::copy_from_slice(body));
    for (name, value) in headers {
        f = f.with_header(*name, *value);
    }
    f
}

/// What a read produced.
#[derive(Debug)]
pub enum Received {
    Frame(Frame),
    Closed,
    Timeout,
}

impl StompClient {
    /// Opens a connection and sends CONNECT with `headers`; returns the client and
    /// the first frame the server answered (CONNECTED or ERROR).
    pub async fn open(addr: SocketAddr, headers: &[(&str, &str)]) -> (StompClient, Received) {
        let stream = TcpStream::connect(addr).await.expect("tcp connect");
        let mut client = StompClient {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
            decoder: Decoder::new(Limits {
                max_frame_size: 64 * 1024 * 1024,
                max_headers: 10_000,
                max_header_len: 1024 * 1024,
            }),
            version: Version::V1_0,
            heart_beats: 0,
            connected: Frame::new(Command::Connected),
            next_receipt: 1,
            stash: VecDeque::new(),
        };
        client
            .send_frame(&frame(Command::Connect, headers, b""))
            .await;
        let first = client.read(WAIT).await;
        if let Received::Frame(f) = &first {
            if f.command == Command::Connected {
                client.version = f
                    .header("version")
                    .and_then(Version::parse)
                    .unwrap_or(Version::V1_0);
                client.decoder.set_version(client.version);
                client.connected = f.clone();
            }
        }
        (client, first)
    }

    /// Connects with `accept-version` (e.g. "1.2"); panics unless CONNECTED.
    pub async fn connect_version(addr: SocketAddr, accept_version: &str) -> StompClient {
        let (client, first) = StompClient::open(
            addr,
            &[("accept-version", accept_version), ("host", "localhost")],
        )
        .await;
        match first {
            Received::Frame(f) if f.command == Command::Connected => client,
            other => panic!("expected CONNECTED, got {other:?}"),
        }
    }

    /// A STOMP 1.2 connection.
    pub async fn connect(addr: SocketAddr) -> StompClient {
        StompClient::connect_version(addr, "1.2").await
    }

    pub async fn send_frame(&mut self, f: &Frame) {
        let mut out = BytesMut::new();
        tern_stomp::encode(f, self.version, &mut out);
        self.stream.write_all(&out).await.expect("write frame");
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// The next frame or end of stream within `wait`; heart-beats are counted and skipped.
    pub async fn read(&mut self, wait: Duration) -> Received {
        if let Some(f) = self.stash.pop_front() {
            return Received::Frame(f);
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            loop {
                match self.decoder.decode(&mut self.buf) {
                    Ok(Some(Item::Frame(f))) => return Received::Frame(f),
                    Ok(Some(Item::HeartBeat)) => self.heart_beats += 1,
                    Ok(None) => break,
                    Err(e) => panic!("server sent a malformed frame: {e}"),
                }
            }
            self.buf.reserve(64 * 1024);
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Err(_) => return Received::Timeout,
                Ok(Ok(0)) | Ok(Err(_)) => return Received::Closed,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// The next frame; panics on close or timeout.
    pub async fn recv(&mut self) -> Frame {
        match self.read(WAIT).await {
            Received::Frame(f) => f,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// The next frame, which must be `command`.
    pub async fn expect(&mut self, command: Command) -> Frame {
        let f = self.recv().await;
        assert_eq!(f.command, command, "expected {command}, got {f:?}");
        f
    }

    /// The next MESSAGE.
    pub async fn message(&mut self) -> Frame {
        self.expect(Command::Message).await
    }

    /// Asserts no frame arrives for QUIET (heart-beats allowed).
    pub async fn expect_nothing(&mut self) {
        match self.read(QUIET).await {
            Received::Timeout => {}
            other => panic!("expected nothing, got {other:?}"),
        }
    }

    /// Expects an ERROR (returned) and then the connection closed.
    pub async fn expect_error(&mut self) -> Frame {
        let f = self.recv().await;
        assert_eq!(f.command, Command::Error, "expected ERROR, got {f:?}");
        assert!(
            f.header("message").is_some(),
            "ERROR without message: {f:?}"
        );
        self.expect_closed().await;
        f
    }

    /// Asserts the server closes the connection (frames before the close are ignored).
    pub async fn expect_closed(&mut self) {
        loop {
            match self.read(WAIT).await {
                Received::Closed => return,
                Received::Timeout => panic!("connection still open"),
                Received::Frame(_) => {}
            }
        }
    }

    fn receipt_id(&mut self) -> String {
        let id = format!("r{}", self.next_receipt);
        self.next_receipt += 1;
        id
    }

    /// Sends `f` with a `receipt` header and waits for its RECEIPT; frames that
    /// arrive first are returned, and also kept for the next reads.
    pub async fn send_with_receipt(&mut self, f: Frame) -> Vec<Frame> {
        let id = self.receipt_id();
        let f = f.with_header("receipt", id.clone());
        self.send_frame(&f).await;
        let mut before = Vec::new();
        let stashed = std::mem::take(&mut self.stash);
        loop {
            let got = match self.read(WAIT).await {
                Received::Frame(f) => f,
                other => panic!("expected RECEIPT {id}, got {other:?}"),
            };
            if got.command == Command::Receipt {
                assert_eq!(got.header("receipt-id"), Some(id.as_str()), "{got:?}");
                self.stash = stashed;
                self.stash.extend(before.iter().cloned());
                return before;
            }
            assert_ne!(
                got.command,
                Command::Error,
                "ERROR instead of RECEIPT: {got:?}"
            );
            before.push(got);
        }
    }

    /// Sends `f` with a `receipt` header without waiting for its RECEIPT (a frame
    /// inside a transaction is answered when the transaction ends); returns the id.
    pub async fn send_deferred(&mut self, f: Frame) -> String {
        let id = self.receipt_id();
        self.send_frame(&f.with_header("receipt", id.clone())).await;
        id
    }

    /// Sends COMMIT or ABORT `f` with a receipt and waits for it; returns the
    /// receipt ids that arrived before it, in order (other frames are kept for
    /// the next reads).
    pub async fn end_transaction(&mut self, f: Frame) -> Vec<String> {
        let id = self.receipt_id();
        self.send_frame(&f.with_header("receipt", id.clone())).await;
        let mut receipts = Vec::new();
        let mut others = Vec::new();
        loop {
            let got = match self.read(WAIT).await {
                Received::Frame(f) => f,
                other => panic!("expected RECEIPT {id}, got {other:?}"),
            };
            assert_ne!(got.command, Command::Error, "ERROR: {got:?}");
            if got.command != Command::Receipt {
                others.push(got);
                continue;
            }
            let receipt = got.header("receipt-id").unwrap_or_default().to_string();
            if receipt == id {
                self.stash.extend(others);
                return receipts;
            }
            receipts.push(receipt);
        }
    }

    /// SUBSCRIBE (with receipt); `ack` is auto, client or client-individual.
    pub async fn subscribe(&mut self, id: &str, destination: &str, ack: &str) {
        let f = frame(
            Command::Subscribe,
            &[("id", id), ("destination", destination), ("ack", ack)],
            b"",
        );
        self.send_with_receipt(f).await;
    }

    /// SEND with extra headers, waiting for the RECEIPT.
    pub async fn send(&mut self, destination: &str, body: &[u8], headers: &[(&str, &str)]) {
        let mut all = vec![("destination", destination)];
        all.extend_from_slice(headers);
        let f = frame(Command::Send, &all, body);
        self.send_with_receipt(f).await;
    }

    /// ACK or NACK of a MESSAGE, in this connection's version's form, with receipt.
    pub async fn ack_message(&mut self, command: Command, message: &Frame, extra: &[(&str, &str)]) {
        let f = self.ack_frame(command, message, extra);
        self.send_with_receipt(f).await;
    }

    /// The ACK/NACK frame for `message` (no receipt).
    pub fn ack_frame(&self, command: Command, message: &Frame, extra: &[(&str, &str)]) -> Frame {
        let mut f = Frame::new(command);
        match self.version {
            Version::V1_2 => {
                f = f.with_header("id", message.header("ack").expect("ack header"));
            }
            _ => {
                f = f
                    .with_header(
                        "message-id",
                        message.header("message-id").expect("message-id"),
                    )
                    .with_header(
                        "subscription",
                        message.header("subscription").expect("subscription"),
                    );
            }
        }
        for (name, value) in extra {
            f = f.with_header(*name, *value);
        }
        f
    }

    /// DISCONNECT with receipt, then the close.
    pub async fn disconnect(mut self) {
        let id = self.receipt_id();
        self.send_frame(&frame(Command::Disconnect, &[("receipt", &id)], b""))
            .await;
        let f = self.expect(Command::Receipt).await;
        assert_eq!(f.header("receipt-id"), Some(id.as_str()));
        self.expect_closed().await;
    }
}

/// The body of a frame as text.
pub fn body(f: &Frame) -> String {
    String::from_utf8_lossy(&f.body).into_owned()
}

/// Runs each listed case, an `async fn case(version: &str)`, as one test per
/// STOMP version (`case::v1_0`, `case::v1_1`, `case::v1_2`): for behaviour
/// meant to be the same in every version.
#[macro_export]
macro_rules! each_stomp_version {
    ($($case:ident),* $(,)?) => {
        $(
            mod $case {
                #[tokio::test]
                async fn v1_0() {
                    super::$case("1.0").await
                }

                #[tokio::test]
                async fn v1_1() {
                    super::$case("1.1").await
                }

                #[tokio::test]
                async fn v1_2() {
                    super::$case("1.2").await
                }
            }
        )*
    };
}
