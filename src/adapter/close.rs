//! Closing a connection so that its last words reach the peer.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::serve::Stream;

/// How long a closing connection keeps reading what the peer still sends.
const LINGER: Duration = Duration::from_secs(1);
/// Bytes per read while lingering (small: at shutdown every connection lingers at once).
const LINGER_READ: usize = 4096;

/// Ends a connection so that its last words (DISCONNECT, refusing CONNACK,
/// STOMP ERROR) reach the peer: shuts the write side down (FIN after them),
/// then reads and discards until the peer closes or [`LINGER`] passes. Closing
/// at once with unread bytes in the receive buffer makes the kernel send a
/// reset and drop what the peer had not read yet, the reason code among it.
pub(crate) async fn close_gracefully<S: Stream>(stream: &mut S, read_buf: &mut BytesMut) {
    let _ = stream.shutdown().await;
    let discard = async {
        loop {
            read_buf.clear();
            read_buf.reserve(LINGER_READ);
            match stream.read_buf(read_buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, discard).await;
}
