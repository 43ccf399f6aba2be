//! A WebSocket as a byte stream, so the MQTT and STOMP adapters serve it as
//! they serve TCP.
//!
//! - Reading yields the payloads of data messages in order, whatever their
//!   boundaries: a packet may span several messages, and one message may hold
//!   several packets. The part of a message the reader did not take is kept for
//!   the next read. A Close from the peer is the end of the stream.
//! - Writing collects bytes until `flush`, which sends them as one message:
//!   Binary for MQTT; for STOMP, Text when the bytes are UTF-8 (frames usually
//!   are), else Binary.
//! - Pings are answered by tungstenite while reading and writing.
//! - `shutdown` sends a Close frame with a reason: the read error that ended the
//!   connection, "server shutting down", or a normal close.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

/// Which protocol the stream carries: it decides the message type of writes
/// and which message types a client may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carried {
    /// MQTT over WebSocket: binary messages only, both ways (MQTT 3.1.1 §6).
    Mqtt,
    /// STOMP: text or binary messages from the client; text when UTF-8 to it.
    Stomp,
}

/// A WebSocket connection seen as `AsyncRead + AsyncWrite`.
#[derive(Debug)]
pub struct WsStream<T> {
    inner: WebSocketStream<T>,
    carried: Carried,
    /// The rest of the message being read.
    leftover: Bytes,
    /// Written since the last flush: the next message.
    pending: BytesMut,
    /// Why the connection ends, when a read found out (sent in the Close frame).
    close_reason: Option<CloseFrame>,
    /// Cancelled when the broker shuts down (the Close frame then says so).
    shutdown: CancellationToken,
    close_sent: bool,
    /// The peer's Close arrived: the closing handshake was done (or begun) by the client.
    close_received: bool,
}

impl<T> WsStream<T> {
    pub fn new(inner: WebSocketStream<T>, carried: Carried, shutdown: CancellationToken) -> Self {
        WsStream {
            inner,
            carried,
            leftover: Bytes::new(),
            pending: BytesMut::new(),
            close_reason: None,
            shutdown,
            close_sent: false,
            close_received: false,
        }
    }

    /// Whether the peer's Close has been read (by the adapter or through [`WsStream::get_mut`]).
    pub fn close_received(&self) -> bool {
        self.close_received
    }

    /// Notes that the peer's Close was read directly from the WebSocket.
    pub fn note_close_received(&mut self) {
        self.close_received = true;
    }

    /// The underlying WebSocket, to wait for the peer's Close after the adapter is done.
    pub fn get_mut(&mut self) -> &mut WebSocketStream<T> {
        &mut self.inner
    }

    /// Remembers why the connection fails (the first reason wins) and returns the error for the reader.
    fn fail(&mut self, code: CloseCode, reason: &'static str, error: io::Error) -> io::Error {
        self.close_reason.get_or_insert(CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        });
        error
    }

    fn closing_frame(&self) -> CloseFrame {
        if let Some(frame) = &self.close_reason {
            return frame.clone();
        }
        if self.shutdown.is_cancelled() {
            return CloseFrame {
                code: CloseCode::Away,
                reason: Utf8Bytes::from_static("server shutting down"),
            };
        }
        CloseFrame {
            code: CloseCode::Normal,
            reason: Utf8Bytes::from_static("connection closed by the server"),
        }
    }
}

/// A tungstenite error as an I/O error for the adapters (which log and close).
fn io_error(error: WsError) -> io::Error {
    match error {
        WsError::Io(e) => e,
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            io::Error::new(io::ErrorKind::BrokenPipe, "WebSocket closed")
        }
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

impl<T> AsyncRead for WsStream<T>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while this.leftover.is_empty() {
            let message = match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                None => return Poll::Ready(Ok(())),
                Some(Ok(message)) => message,
                Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                    return Poll::Ready(Ok(()))
                }
                Some(Err(WsError::Capacity(e))) => {
                    let why = match e {
                        CapacityError::MessageTooLong { .. } => "message too big",
                        CapacityError::TooManyHeaders => "too many headers",
                    };
                    let error = io::Error::new(io::ErrorKind::InvalidData, e);
                    return Poll::Ready(Err(this.fail(CloseCode::Size, why, error)));
                }
                Some(Err(WsError::Protocol(e))) => {
                    let error = io::Error::new(io::ErrorKind::InvalidData, e);
                    let why = "WebSocket protocol error";
                    return Poll::Ready(Err(this.fail(CloseCode::Protocol, why, error)));
                }
                Some(Err(WsError::Utf8(e))) => {
                    let error = io::Error::new(io::ErrorKind::InvalidData, e);
                    let why = "text message is not UTF-8";
                    return Poll::Ready(Err(this.fail(CloseCode::Invalid, why, error)));
                }
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
            };
            match message {
                Message::Binary(bytes) => this.leftover = bytes,
                Message::Text(text) if this.carried == Carried::Stomp => {
                    this.leftover = Bytes::from(text)
                }
                Message::Text(_) => {
                    let error = io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text message on an MQTT WebSocket",
                    );
                    let why = "MQTT over WebSocket takes binary messages only";
                    return Poll::Ready(Err(this.fail(CloseCode::Unsupported, why, error)));
                }
                // tungstenite queues the Close reply; for the adapter it is the end.
                Message::Close(_) => {
                    this.close_received = true;
                    return Poll::Ready(Ok(()));
                }
                // Answered by tungstenite (Ping), or nothing to do (Pong).
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
        let n = this.leftover.len().min(buf.remaining());
        buf.put_slice(&this.leftover[..n]);
        this.leftover.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<T> AsyncWrite for WsStream<T>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.pending.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.pending.is_empty() {
            ready!(Pin::new(&mut this.inner).poll_ready(cx)).map_err(io_error)?;
            let bytes = this.pending.split().freeze();
            let message = match this.carried {
                Carried::Mqtt => Message::Binary(bytes),
                Carried::Stomp => match Utf8Bytes::try_from(bytes.clone()) {
                    Ok(text) => Message::Text(text),
                    Err(_) => Message::Binary(bytes),
                },
            };
            Pin::new(&mut this.inner)
                .start_send(message)
                .map_err(io_error)?;
        }
        Pin::new(&mut this.inner).poll_flush(cx).map_err(io_error)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // What the adapter wrote last (an MQTT DISCONNECT, a STOMP ERROR) goes first;
        // a peer already gone cannot take it, and its Close is still worth a try.
        let _ = ready!(self.as_mut().poll_flush(cx));
        let this = &mut *self;
        if !this.close_sent {
            // Fails when the peer closed first: tungstenite has answered its Close already.
            let ready = ready!(Pin::new(&mut this.inner).poll_ready(cx));
            this.close_sent = true;
            let frame = this.closing_frame();
            let sent = ready
                .and_then(|()| Pin::new(&mut this.inner).start_send(Message::Close(Some(frame))));
            if sent.is_err() {
                return Poll::Ready(Ok(()));
            }
        }
        match ready!(Pin::new(&mut this.inner).poll_flush(cx)) {
            Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(io_error(e))),
        }
    }
}
