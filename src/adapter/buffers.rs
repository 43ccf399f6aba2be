//! Per-connection buffer sizing: none at all while a connection is quiet, so an
//! idle client costs little memory; 64 KiB reads once traffic fills a quiet
//! read, so a busy client is still read and parsed in large batches.

use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

/// Room a quiet connection's buffer keeps for a partial packet (and what it
/// may hold of one without counting against the buffer budget).
pub(crate) const QUIET_READ: usize = 256;
/// Read size of a quiet connection, through the stack: a PINGREQ, a
/// heart-beat or a device's message of a few hundred bytes in one read
/// (with 256 bytes, a 300-byte message took two reads, two system calls).
/// A read that fills it means load.
pub(crate) const QUIET_CHUNK: usize = 2 * 1024;
/// Read size under load: every complete packet in it is parsed in place.
pub(crate) const BUSY_READ: usize = 64 * 1024;

/// Tracks whether a connection's reads fill their buffer (load) or not (quiet).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ReadSizing {
    busy: bool,
}

impl ReadSizing {
    /// Makes room for the next read: a busy connection gets a big chunk; a quiet one
    /// keeps a small buffer only for a partial packet, and none when nothing is
    /// buffered (its next read lands on the stack, see [`read_quietly`]).
    pub(crate) fn prepare(&self, buf: &mut BytesMut) {
        if !self.busy && buf.is_empty() {
            // Even with no capacity left, an emptied buffer may still share the
            // allocation a decoded packet was split from: dropping it frees that.
            *buf = BytesMut::new();
            return;
        }
        let want = if self.busy { BUSY_READ } else { QUIET_READ };
        if buf.capacity() - buf.len() < want / 4 {
            buf.reserve(want);
        }
    }

    /// Notes a read of `n` bytes: one that filled a quiet read means load.
    pub(crate) fn settle(&mut self, n: usize) {
        self.busy = n >= QUIET_CHUNK;
    }
}

/// Reads into `buf`. A buffer with no room (as [`ReadSizing::prepare`] leaves a
/// quiet one) is read through a stack chunk of [`QUIET_CHUNK`] bytes, and only
/// what arrived is kept: waiting costs the connection no buffer.
pub(crate) async fn read_quietly<S>(stream: &mut S, buf: &mut BytesMut) -> std::io::Result<usize>
where
    S: AsyncRead + Unpin,
{
    if buf.capacity() > buf.len() {
        return stream.read_buf(buf).await;
    }
    std::future::poll_fn(|cx| {
        let mut chunk = [MaybeUninit::<u8>::uninit(); QUIET_CHUNK];
        let mut read = ReadBuf::uninit(&mut chunk);
        ready!(Pin::new(&mut *stream).poll_read(cx, &mut read))?;
        buf.extend_from_slice(read.filled());
        Poll::Ready(Ok(read.filled().len()))
    })
    .await
}

/// After a write: a quiet connection's emptied write buffer is given back, so
/// neither a burst nor a ping leaves memory with an idle connection; a busy one
/// keeps its buffer for the next batch.
pub(crate) fn settle_write(buf: &mut BytesMut, written: usize) {
    if buf.is_empty() && written < QUIET_READ {
        *buf = BytesMut::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn quiet_connections_hold_no_buffer_and_busy_reads_grow() {
        let mut sizing = ReadSizing::default();
        let mut buf = BytesMut::with_capacity(4096);
        sizing.prepare(&mut buf);
        assert_eq!(buf.capacity(), 0, "quiet and empty: no buffer");
        // A read that filled a quiet read: the next one may take 64 KiB.
        sizing.settle(QUIET_CHUNK);
        sizing.prepare(&mut buf);
        assert!(buf.capacity() >= BUSY_READ);
        // Traffic calms down: the big buffer is given back.
        sizing.settle(2);
        sizing.prepare(&mut buf);
        assert_eq!(buf.capacity(), 0);
    }

    #[test]
    fn a_quiet_buffer_emptied_by_a_split_lets_its_allocation_go() {
        let sizing = ReadSizing::default();
        let mut buf = BytesMut::new();
        buf.extend_from_slice(b"SUBSCRIBE");
        // As the decoder takes a packet that filled the buffer.
        let packet = buf.split_to(buf.len()).freeze();
        assert_eq!(buf.capacity(), 0, "split to the end: no room left");
        assert!(!packet.is_unique(), "the emptied buffer still shares it");
        sizing.prepare(&mut buf);
        assert!(packet.is_unique(), "a quiet connection keeps nothing of it");
    }

    #[test]
    fn a_partial_packet_keeps_a_small_buffer() {
        let mut sizing = ReadSizing::default();
        let mut buf = BytesMut::new();
        buf.extend_from_slice(b"partial packet");
        sizing.settle(14);
        sizing.prepare(&mut buf);
        assert_eq!(&buf[..], b"partial packet");
        assert!(buf.capacity() - buf.len() >= QUIET_READ / 4);
    }

    #[tokio::test]
    async fn a_quiet_read_keeps_only_what_arrived() {
        let (mut client, mut server) = tokio::io::duplex(2 * QUIET_CHUNK);
        client.write_all(&[7; QUIET_CHUNK + 44]).await.unwrap();
        let mut buf = BytesMut::new();
        let n = read_quietly(&mut server, &mut buf).await.unwrap();
        assert_eq!(n, QUIET_CHUNK, "one stack chunk at most");
        assert_eq!(&buf[..], &[7; QUIET_CHUNK][..]);
        // With room in the buffer, the rest is read into it directly.
        buf.reserve(BUSY_READ);
        let n = read_quietly(&mut server, &mut buf).await.unwrap();
        assert_eq!(n, 44);
        assert_eq!(buf.len(), QUIET_CHUNK + 44);
        drop(client);
        let mut empty = BytesMut::new();
        assert_eq!(read_quietly(&mut server, &mut empty).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_quiet_connection_reads_a_device_message_at_once() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        client.write_all(&[7; 324]).await.unwrap();
        let mut sizing = ReadSizing::default();
        let mut buf = BytesMut::new();
        sizing.prepare(&mut buf);
        let n = read_quietly(&mut server, &mut buf).await.unwrap();
        assert_eq!(n, 324, "one read");
        sizing.settle(n);
        buf.clear();
        sizing.prepare(&mut buf);
        assert_eq!(buf.capacity(), 0, "still quiet: no buffer held");
    }

    #[test]
    fn a_write_buffer_is_given_back_only_when_quiet() {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        settle_write(&mut buf, 50_000);
        assert!(buf.capacity() >= 64 * 1024, "kept under load");
        settle_write(&mut buf, 20);
        assert_eq!(buf.capacity(), 0);
    }
}
