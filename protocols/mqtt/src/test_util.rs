//! Helpers shared by the unit tests.

use bytes::BytesMut;

use crate::{decode, encode, DecodeError, Packet, ProtocolVersion};

pub(crate) use crate::ProtocolVersion::{V31, V311, V5};

/// Decodes exactly one packet from `bytes`, asserting nothing is left over on success.
pub(crate) fn dec(bytes: &[u8], v: ProtocolVersion) -> Result<Packet, DecodeError> {
    let mut buf = BytesMut::from(bytes);
    match decode(&mut buf, v, usize::MAX)? {
        Some(p) => {
            assert!(buf.is_empty(), "bytes left over after {p:?}");
            Ok(p)
        }
        None => panic!("incomplete packet {bytes:02x?}"),
    }
}

pub(crate) fn enc(p: &Packet, v: ProtocolVersion) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode(p, v, &mut buf).unwrap();
    buf.to_vec()
}

/// Encodes then decodes and checks the result equals the input.
pub(crate) fn round_trip(p: &Packet, v: ProtocolVersion) {
    let bytes = enc(p, v);
    assert_eq!(&dec(&bytes, v).unwrap(), p, "bytes {bytes:02x?}");
}

pub(crate) fn is_malformed(r: Result<Packet, DecodeError>) -> bool {
    matches!(
        r,
        Err(DecodeError::MalformedPacket(_)) | Err(DecodeError::InvalidUtf8)
    )
}

pub(crate) fn is_protocol_error(r: Result<Packet, DecodeError>) -> bool {
    matches!(r, Err(DecodeError::ProtocolError(_)))
}

/// Prefixes `body` with a fixed header (first byte + remaining length).
pub(crate) fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let mut b = (len & 0x7F) as u8;
        len >>= 7;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

/// Two-byte length prefixed string.
pub(crate) fn s(v: &str) -> Vec<u8> {
    let mut out = (v.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(v.as_bytes());
    out
}
