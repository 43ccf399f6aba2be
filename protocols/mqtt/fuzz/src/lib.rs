//! The property the `decode` fuzz target checks, kept in a library so the main crate's
//! test suite can compile and exercise it without libFuzzer (tests/fuzz_smoke.rs).

use bytes::BytesMut;
use tern_mqtt::{decode, encode, encoded_len, ProtocolVersion};

const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V31,
    ProtocolVersion::V311,
    ProtocolVersion::V5,
];

/// Decodes `data` as a stream for every version. Decoding must never panic; `Ok(None)` must
/// leave the buffer untouched; every decoded packet must re-encode (with `encoded_len`
/// agreeing) and decode back to itself.
pub fn check(data: &[u8]) {
    for v in VERSIONS {
        let mut buf = BytesMut::from(data);
        loop {
            let before = buf.clone();
            match decode(&mut buf, v, 1 << 16) {
                Ok(Some(p)) => {
                    assert!(buf.len() < before.len(), "a packet consumes bytes");
                    let mut out = BytesMut::new();
                    encode(&p, v, &mut out).expect("a decoded packet re-encodes");
                    assert_eq!(encoded_len(&p, v).ok(), Some(out.len()));
                    let again = decode(&mut out, v, usize::MAX)
                        .expect("re-encoded packet decodes")
                        .expect("re-encoded packet is complete");
                    assert_eq!(again, p);
                    assert!(out.is_empty(), "re-encoded packet decodes exactly");
                }
                Ok(None) => {
                    assert_eq!(buf, before, "incomplete input is left untouched");
                    break;
                }
                Err(_) => break,
            }
        }
    }
}
