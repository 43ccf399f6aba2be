//! Primitive wire types: a bounds-checked reader over a received frame and a byte sink
//! that either writes or only counts, so `encode` and `encoded_len` share one code path.

use bytes::{Buf, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};

/// Largest value a variable byte integer can carry (also the remaining length limit).
pub(crate) const VARINT_MAX: usize = 268_435_455;

const TOO_SHORT: DecodeError = DecodeError::MalformedPacket("packet shorter than its fields");

/// Cursor over one packet body; every read is checked, so truncated input is an error, never a panic.
pub(crate) struct Reader {
    buf: Bytes,
}

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Reader {
        Reader { buf }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        if self.buf.is_empty() {
            return Err(TOO_SHORT);
        }
        Ok(self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        if self.buf.len() < 2 {
            return Err(TOO_SHORT);
        }
        Ok(self.buf.get_u16())
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        if self.buf.len() < 4 {
            return Err(TOO_SHORT);
        }
        Ok(self.buf.get_u32())
    }

    /// Variable byte integer: at most 4 bytes, minimally encoded [MQTT-1.5.5-1].
    pub(crate) fn varint(&mut self) -> Result<u32, DecodeError> {
        match parse_varint(&self.buf)? {
            Some((value, len)) => {
                self.buf.advance(len);
                Ok(value)
            }
            None => Err(TOO_SHORT),
        }
    }

    /// Zero-copy slice of the next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        if self.buf.len() < n {
            return Err(TOO_SHORT);
        }
        Ok(self.buf.split_to(n))
    }

    /// Two-byte length prefixed binary data.
    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// Two-byte length prefixed UTF-8 string without U+0000 [MQTT-1.5.4-1, MQTT-1.5.4-2].
    pub(crate) fn string(&mut self) -> Result<String, DecodeError> {
        let raw = self.binary()?;
        let s = std::str::from_utf8(&raw).map_err(|_| DecodeError::InvalidUtf8)?;
        if s.contains('\0') {
            return Err(DecodeError::MalformedPacket("string contains U+0000"));
        }
        Ok(s.to_owned())
    }

    /// Everything left (PUBLISH payload, SUBACK codes).
    pub(crate) fn rest(&mut self) -> Bytes {
        self.buf.split_off(0)
    }

    /// Bytes left over inside the remaining length are malformed.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::MalformedPacket(
                "unexpected bytes at end of packet",
            ))
        }
    }
}

/// Parses a variable byte integer at the start of `buf`.
/// `Ok(None)` when more bytes are needed; errors on a 5th byte or a non-minimal encoding.
pub(crate) fn parse_varint(buf: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value: u32 = 0;
    for i in 0..4 {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        value |= u32::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            if b == 0 && i > 0 {
                return Err(DecodeError::MalformedPacket(
                    "variable byte integer not minimally encoded",
                ));
            }
            return Ok(Some((value, i + 1)));
        }
    }
    Err(DecodeError::MalformedPacket(
        "variable byte integer longer than 4 bytes",
    ))
}

/// Number of bytes the variable byte integer encoding of `v` takes (`v <= VARINT_MAX`).
pub(crate) fn varint_len(v: usize) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Destination of encoded bytes.
pub(crate) trait Sink {
    fn put_slice(&mut self, bytes: &[u8]);

    fn put_u8(&mut self, v: u8) {
        self.put_slice(&[v]);
    }

    fn put_u16(&mut self, v: u16) {
        self.put_slice(&v.to_be_bytes());
    }

    fn put_u32(&mut self, v: u32) {
        self.put_slice(&v.to_be_bytes());
    }

    fn put_varint(&mut self, v: usize, field: &'static str) -> Result<(), EncodeError> {
        if v > VARINT_MAX {
            return Err(EncodeError::ValueTooLarge { field, value: v });
        }
        let mut v = v;
        loop {
            // Masked to 7 bits, so the cast cannot lose data.
            let mut b = (v & 0x7F) as u8;
            v >>= 7;
            if v > 0 {
                b |= 0x80;
            }
            self.put_u8(b);
            if v == 0 {
                return Ok(());
            }
        }
    }

    /// Length-prefixed binary; errors instead of truncating past 65,535 bytes.
    fn put_binary(&mut self, v: &[u8], field: &'static str) -> Result<(), EncodeError> {
        let len = u16::try_from(v.len()).map_err(|_| EncodeError::FieldTooLong {
            field,
            len: v.len(),
        })?;
        self.put_u16(len);
        self.put_slice(v);
        Ok(())
    }

    fn put_string(&mut self, v: &str, field: &'static str) -> Result<(), EncodeError> {
        self.put_binary(v.as_bytes(), field)
    }
}

impl Sink for BytesMut {
    fn put_slice(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Sink that only measures, used to size lengths before writing them.
#[derive(Default)]
pub(crate) struct Counter(pub(crate) usize);

impl Sink for Counter {
    fn put_slice(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trips_at_boundaries() {
        for v in [
            0usize, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, VARINT_MAX,
        ] {
            let mut buf = BytesMut::new();
            buf.put_varint(v, "test").unwrap();
            assert_eq!(buf.len(), varint_len(v));
            assert_eq!(parse_varint(&buf).unwrap(), Some((v as u32, buf.len())));
        }
    }

    #[test]
    fn varint_longer_than_four_bytes_is_malformed() {
        assert!(parse_varint(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01]).is_err());
    }

    #[test]
    fn varint_not_minimally_encoded_is_malformed() {
        assert!(parse_varint(&[0x80, 0x00]).is_err());
    }

    #[test]
    fn varint_incomplete_needs_more_bytes() {
        assert_eq!(parse_varint(&[0x80, 0x80]).unwrap(), None);
    }

    #[test]
    fn varint_above_maximum_cannot_be_encoded() {
        let mut buf = BytesMut::new();
        assert!(buf.put_varint(VARINT_MAX + 1, "test").is_err());
    }

    #[test]
    fn string_too_long_is_an_encode_error() {
        let mut c = Counter::default();
        let s = "a".repeat(65_536);
        assert_eq!(
            c.put_string(&s, "topic"),
            Err(EncodeError::FieldTooLong {
                field: "topic",
                len: 65_536
            })
        );
    }

    #[test]
    fn string_with_nul_is_malformed() {
        let mut r = Reader::new(Bytes::from_static(b"\x00\x03a\x00b"));
        assert!(matches!(r.string(), Err(DecodeError::MalformedPacket(_))));
    }

    #[test]
    fn string_with_invalid_utf8_is_malformed() {
        let mut r = Reader::new(Bytes::from_static(b"\x00\x02\xC3\x28"));
        assert_eq!(r.string(), Err(DecodeError::InvalidUtf8));
        // Encoded surrogate U+D800 is not allowed either [MQTT-1.5.4-1].
        let mut r = Reader::new(Bytes::from_static(b"\x00\x03\xED\xA0\x80"));
        assert_eq!(r.string(), Err(DecodeError::InvalidUtf8));
    }

    #[test]
    fn string_length_past_end_is_malformed() {
        let mut r = Reader::new(Bytes::from_static(b"\x00\x05ab"));
        assert!(matches!(r.string(), Err(DecodeError::MalformedPacket(_))));
    }
}
