//! MQTT and STOMP over WebSocket: the opening handshake (`ws://host:port/mqtt`
//! with subprotocol `mqtt`, or `/stomp` with `v12.stomp`), and a byte stream
//! over the WebSocket so the TCP handshake code runs over it unchanged.

use std::net::IpAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use anyhow::Context as _;
use bytes::{Buf, Bytes};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::client::{self, Login, HANDSHAKE_TIMEOUT};
use crate::Endpoint;

/// A WebSocket as a byte stream: each write is one binary message (MQTT and
/// STOMP both accept that), reads return messages' bytes in order.
pub struct WsStream {
    ws: WebSocketStream<TcpStream>,
    /// What is left of the last message read.
    pending: Bytes,
}

/// Connects over WebSocket and performs the protocol handshake of `endpoint`,
/// subscribing to `subscribe` if given.
pub async fn open(
    endpoint: &Endpoint,
    login: &Login,
    local: Option<IpAddr>,
    subscribe: Option<&str>,
) -> anyhow::Result<WsStream> {
    let (addr, path, subprotocol) = match endpoint {
        Endpoint::Mqtt { addr, .. } => (*addr, "mqtt", "mqtt"),
        Endpoint::Stomp { addr } => (*addr, "stomp", "v12.stomp"),
    };
    let tcp = client::tcp(addr, local).await?;
    let mut request = format!("ws://{addr}/{path}").into_client_request()?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(subprotocol),
    );
    let (ws, _response) = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        tokio_tungstenite::client_async(request, tcp),
    )
    .await
    .context("WebSocket handshake timed out")?
    .context("WebSocket handshake")?;
    let mut stream = WsStream {
        ws,
        pending: Bytes::new(),
    };
    client::handshake(&mut stream, endpoint, login, subscribe, None).await?;
    Ok(stream)
}

fn io_error(e: tokio_tungstenite::tungstenite::Error) -> std::io::Error {
    std::io::Error::other(e)
}

impl AsyncRead for WsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        while self.pending.is_empty() {
            match ready!(self.ws.poll_next_unpin(cx)) {
                Some(Ok(Message::Binary(bytes))) => self.pending = bytes,
                Some(Ok(Message::Text(text))) => self.pending = Bytes::from(text),
                // Pings are answered by tungstenite at the next write or flush.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Close(_))) | None => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
            }
        }
        let n = self.pending.len().min(buf.remaining());
        buf.put_slice(&self.pending[..n]);
        self.pending.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for WsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        ready!(self.ws.poll_ready_unpin(cx)).map_err(io_error)?;
        let message = Message::Binary(Bytes::copy_from_slice(buf));
        self.ws.start_send_unpin(message).map_err(io_error)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.ws.poll_flush_unpin(cx).map_err(io_error)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.ws.poll_close_unpin(cx).map_err(io_error)
    }
}
