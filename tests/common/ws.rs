//! WebSocket test clients (tokio-tungstenite) and a raw HTTP request helper.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::WAIT;

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens `ws://addr{path}` offering `protocols` (comma-joined) and `origin` when given.
/// Ok: the socket and the subprotocol the server chose; Err: the tungstenite error
/// (`Error::Http(response)` when the server refused the upgrade).
pub async fn try_open(
    addr: SocketAddr,
    path: &str,
    protocols: &[&str],
    origin: Option<&str>,
) -> Result<(Ws, Option<String>), Error> {
    let mut request = format!("ws://{addr}{path}").into_client_request()?;
    if !protocols.is_empty() {
        let value = HeaderValue::from_str(&protocols.join(", ")).expect("header");
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", value);
    }
    if let Some(origin) = origin {
        let value = HeaderValue::from_str(origin).expect("header");
        request.headers_mut().insert("Origin", value);
    }
    let (ws, response) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("handshake in time")?;
    let chosen = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .map(|v| v.to_str().expect("ascii").to_string());
    Ok((ws, chosen))
}

/// Opens a WebSocket that must be accepted.
pub async fn open(addr: SocketAddr, path: &str, protocols: &[&str]) -> Ws {
    try_open(addr, path, protocols, None)
        .await
        .expect("WebSocket accepted")
        .0
}

/// The HTTP status of a refused upgrade.
pub async fn refused_status(
    addr: SocketAddr,
    path: &str,
    protocols: &[&str],
    origin: Option<&str>,
) -> (u16, String) {
    match try_open(addr, path, protocols, origin).await {
        Ok((_, chosen)) => panic!("upgrade accepted (subprotocol {chosen:?})"),
        Err(Error::Http(response)) => {
            let body = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            (response.status().as_u16(), body)
        }
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
    }
}

/// Sends one binary message.
pub async fn send_binary(ws: &mut Ws, bytes: &[u8]) {
    ws.send(Message::binary(bytes.to_vec()))
        .await
        .expect("send binary");
}

/// Sends one text message.
pub async fn send_text(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.expect("send text");
}

/// What the server sent next.
#[derive(Debug)]
pub enum Got {
    Binary(Vec<u8>),
    Text(String),
    Pong(Vec<u8>),
    Close(Option<CloseFrame>),
    /// The connection ended without a Close frame.
    Ended,
}

/// The next message (pings are answered by tungstenite and skipped); panics after WAIT.
pub async fn next(ws: &mut Ws) -> Got {
    loop {
        let item = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message in time");
        return match item {
            None | Some(Err(_)) => Got::Ended,
            Some(Ok(Message::Binary(b))) => Got::Binary(b.to_vec()),
            Some(Ok(Message::Text(t))) => Got::Text(t.to_string()),
            Some(Ok(Message::Pong(p))) => Got::Pong(p.to_vec()),
            Some(Ok(Message::Close(frame))) => Got::Close(frame),
            Some(Ok(Message::Ping(_) | Message::Frame(_))) => continue,
        };
    }
}

/// Reads binary messages until `len` bytes arrived (MQTT packets may come in one or several).
pub async fn read_binary(ws: &mut Ws, len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < len {
        match next(ws).await {
            Got::Binary(b) => out.extend_from_slice(&b),
            other => panic!("expected binary data, got {other:?} after {out:02x?}"),
        }
    }
    out
}

/// Waits for the server's Close frame and returns its code and reason.
pub async fn expect_close(ws: &mut Ws) -> (u16, String) {
    loop {
        match next(ws).await {
            Got::Close(Some(frame)) => return (frame.code.into(), frame.reason.to_string()),
            Got::Close(None) => return (1005, String::new()),
            Got::Ended => panic!("connection ended without a Close frame"),
            _ => {}
        }
    }
}

/// One HTTP/1.1 request over a fresh connection; returns (status, headers, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, head, raw[split + 4..].to_vec())
}
