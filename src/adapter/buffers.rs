//! Per-connection buffer sizing: small while a connection is quiet, so an idle
//! client costs little memory; 64 KiB reads once traffic fills the small one,
//! so a busy client is still read and parsed in large batches.

use bytes::BytesMut;

/// Read size of a quiet connection (a PINGREQ, a heart-beat, a few small packets).
pub(crate) const QUIET_READ: usize = 256;
/// Read size under load: every complete packet in it is parsed in place.
pub(crate) const BUSY_READ: usize = 64 * 1024;
/// Write buffers above this are given back once a connection goes quiet.
const QUIET_WRITE_CAPACITY: usize = 4 * 1024;

/// Tracks whether a connection's reads fill their buffer (load) or not (quiet).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ReadSizing {
    busy: bool,
}

impl ReadSizing {
    /// Makes room for the next read: a quiet chunk, or a busy one under load.
    pub(crate) fn prepare(&self, buf: &mut BytesMut) {
        let want = if self.busy { BUSY_READ } else { QUIET_READ };
        if buf.capacity() - buf.len() < want / 4 {
            buf.reserve(want);
        }
    }

    /// Notes a read of `n` bytes. Call after the buffered packets were handled:
    /// a quiet connection with nothing left over gives a big buffer back.
    pub(crate) fn settle(&mut self, buf: &mut BytesMut, n: usize) {
        self.busy = n >= QUIET_READ;
        if !self.busy && buf.is_empty() && buf.capacity() > QUIET_READ * 4 {
            *buf = BytesMut::new();
        }
    }
}

/// After a write: a big write buffer that carried little is given back, so
/// memory taken by one burst does not stay with an idle connection.
pub(crate) fn settle_write(buf: &mut BytesMut, written: usize) {
    if buf.is_empty() && written < QUIET_READ && buf.capacity() > QUIET_WRITE_CAPACITY {
        *buf = BytesMut::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_reads_stay_small_and_busy_reads_grow() {
        let mut sizing = ReadSizing::default();
        let mut buf = BytesMut::new();
        sizing.prepare(&mut buf);
        assert!(buf.capacity() >= QUIET_READ && buf.capacity() < BUSY_READ);
        // A read that filled the quiet buffer: the next one may take 64 KiB.
        buf.extend_from_slice(&[0; QUIET_READ]);
        buf.clear();
        sizing.settle(&mut buf, QUIET_READ);
        sizing.prepare(&mut buf);
        assert!(buf.capacity() >= BUSY_READ);
        // Traffic calms down: the big buffer is given back.
        sizing.settle(&mut buf, 2);
        assert_eq!(buf.capacity(), 0);
        sizing.prepare(&mut buf);
        assert!(buf.capacity() < BUSY_READ);
    }

    #[test]
    fn leftover_bytes_keep_the_buffer() {
        let mut sizing = ReadSizing::default();
        let mut buf = BytesMut::with_capacity(BUSY_READ);
        buf.extend_from_slice(b"partial packet");
        sizing.settle(&mut buf, 14);
        assert_eq!(&buf[..], b"partial packet");
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
