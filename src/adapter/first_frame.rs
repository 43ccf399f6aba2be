//! The CONNECT phase's read: waiting, within the connect timeout and the
//! broker's buffer budget, for a connection's first frame.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use super::budget::{OverBudget, PartialFrame};
use super::buffers::QUIET_READ;
use super::Context;

/// How the wait for a connection's first frame (its CONNECT) ended.
pub(crate) enum FirstFrame<T, E> {
    Frame(T),
    /// The client went away (or the read failed) first.
    Closed,
    /// The decoder refused what arrived.
    Invalid(E),
    /// The frame under way would take the broker's buffer budget over its limit.
    OverBudget(OverBudget),
    /// Nothing complete within `limits.connect_timeout_secs`.
    TimedOut,
}

/// Reads until `decode` gives the first frame, within `limits.connect_timeout_secs`,
/// growing the read buffer until the frame fits; the frame under way counts
/// against the broker's buffer budget until it is whole. `decode` is called
/// before each read (bytes may have come with the connection).
pub(crate) async fn read_first_frame<S, T, E, D>(
    stream: &mut S,
    read_buf: &mut BytesMut,
    ctx: &Context,
    mut decode: D,
) -> FirstFrame<T, E>
where
    S: AsyncRead + Unpin,
    D: FnMut(&mut BytesMut) -> Result<Option<T>, E>,
{
    let timeout = Duration::from_secs(ctx.limits().connect_timeout_secs);
    let read = async {
        let mut partial = PartialFrame::default();
        loop {
            match decode(read_buf) {
                Ok(Some(frame)) => return FirstFrame::Frame(frame),
                Ok(None) => {}
                Err(e) => return FirstFrame::Invalid(e),
            }
            let now = Instant::now();
            if let Err(over) = partial.update(&ctx.buffer_budget, read_buf.len(), false, now) {
                return FirstFrame::OverBudget(over);
            }
            if read_buf.capacity() - read_buf.len() < 1024 {
                read_buf.reserve(QUIET_READ);
            }
            match stream.read_buf(read_buf).await {
                Ok(0) | Err(_) => return FirstFrame::Closed,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or(FirstFrame::TimedOut)
}
