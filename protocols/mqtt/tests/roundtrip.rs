//! Property tests: every valid packet of every version survives encode → decode unchanged,
//! `encoded_len` is exact, and a byte stream decodes the same however it is chunked.

mod common;

use bytes::BytesMut;
use common::{packet, version};
use proptest::collection::vec;
use proptest::prelude::*;
use tern_mqtt::{decode, encode, encoded_len, Packet, ProtocolVersion};

fn versioned_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
    version().prop_flat_map(|v| packet(v).prop_map(move |p| (v, p)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decode_of_encode_is_identity((v, p) in versioned_packet()) {
        let mut buf = BytesMut::new();
        encode(&p, v, &mut buf).unwrap();
        prop_assert_eq!(encoded_len(&p, v).unwrap(), buf.len());
        let total = buf.len();
        let decoded = decode(&mut buf, v, total).unwrap();
        prop_assert_eq!(decoded, Some(p));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn every_strict_prefix_is_incomplete((v, p) in versioned_packet()) {
        let mut full = BytesMut::new();
        encode(&p, v, &mut full).unwrap();
        for cut in 0..full.len() {
            let mut buf = BytesMut::from(&full[..cut]);
            prop_assert_eq!(decode(&mut buf, v, usize::MAX), Ok(None));
            prop_assert_eq!(&buf[..], &full[..cut]);
        }
    }

    #[test]
    fn a_stream_decodes_the_same_however_it_is_chunked(
        (v, packets) in version().prop_flat_map(|v| (Just(v), vec(packet(v), 1..8))),
        chunk in 1usize..64,
    ) {
        let mut wire = BytesMut::new();
        for p in &packets {
            encode(p, v, &mut wire).unwrap();
        }
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in wire.chunks(chunk) {
            buf.extend_from_slice(piece);
            while let Some(p) = decode(&mut buf, v, usize::MAX).unwrap() {
                out.push(p);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(out, packets);
    }
}
