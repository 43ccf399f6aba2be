//! The one helper every integration test uses: a real Tern server on
//! ephemeral ports, plus small client utilities.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use tern::{Server, Settings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A running server; shut down when dropped.
pub struct TestServer {
    pub server: Option<Server>,
    pub mqtt: SocketAddr,
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
    TestServer {
        server: Some(server),
        mqtt,
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
