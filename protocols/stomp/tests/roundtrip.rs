//! Property tests: `decode(encode(f)) == f` for random valid frames, however the
//! encoding is chunked, and encoding never lets header contents break framing.
//!
//! The encoder appends `content-length` when the body is non-empty, so the
//! expected frame is the input plus that header (see [`expected`]).

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;
use tern_stomp::{encode, encode_heartbeat, Command, Decoder, Frame, Item, Limits, Version};

/// True when `frame` is sent without escaping under `version`.
fn is_raw(version: Version, command: Command) -> bool {
    version == Version::V1_0
        || matches!(
            command,
            Command::Connect | Command::Stomp | Command::Connected
        )
}

fn any_version() -> impl Strategy<Value = Version> {
    prop::sample::select(Version::ALL.to_vec())
}

fn any_command() -> impl Strategy<Value = Command> {
    prop::sample::select(Command::ALL.to_vec())
}

/// Text biased towards the bytes that matter to the codec.
fn text(min: usize) -> impl Strategy<Value = String> {
    let ch = prop_oneof![
        4 => prop::sample::select(vec![':', '\\', '\n', '\r', ' ', 'c', 'n', 'r', '\0']),
        3 => any::<char>(),
    ];
    prop::collection::vec(ch, min..12).prop_map(|v| v.into_iter().collect())
}

/// A header that survives the round trip under the given rules: see the crate
/// docs for what raw (1.0/handshake) and 1.1 frames cannot carry.
fn valid_header(raw: bool, version: Version) -> impl Strategy<Value = (String, String)> {
    (text(1), text(0)).prop_filter("not representable", move |(name, value)| {
        if name == "content-length" {
            return false;
        }
        let trailing_cr = value.ends_with('\r');
        if raw {
            !name.contains([':', '\n']) && !value.contains('\n') && !trailing_cr
        } else {
            version == Version::V1_2 || !trailing_cr
        }
    })
}

fn body() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        1 => Just(Vec::new()),
        4 => prop::collection::vec(prop_oneof![Just(0u8), Just(b'\n'), any::<u8>()], 0..64),
    ]
    .prop_map(Bytes::from)
}

fn frame_for(version: Version) -> impl Strategy<Value = Frame> {
    any_command().prop_flat_map(move |command| {
        let raw = is_raw(version, command);
        (
            prop::collection::vec(valid_header(raw, version), 0..8),
            body(),
        )
            .prop_map(move |(headers, body)| Frame {
                command,
                headers,
                body,
            })
    })
}

fn valid_frame() -> impl Strategy<Value = (Version, Frame)> {
    any_version().prop_flat_map(|version| (Just(version), frame_for(version)))
}

/// A version and a few frames valid under it.
fn valid_stream() -> impl Strategy<Value = (Version, Vec<Frame>)> {
    any_version().prop_flat_map(|version| {
        (
            Just(version),
            prop::collection::vec(frame_for(version), 1..4),
        )
    })
}

fn expected(frame: &Frame) -> Frame {
    if frame.body.is_empty() {
        frame.clone()
    } else {
        frame
            .clone()
            .with_header("content-length", frame.body.len().to_string())
    }
}

fn wire(frame: &Frame, version: Version) -> BytesMut {
    let mut buf = BytesMut::new();
    encode(frame, version, &mut buf);
    buf
}

fn decoder(version: Version) -> Decoder {
    let mut dec = Decoder::new(Limits::default());
    dec.set_version(version);
    dec
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn decode_inverts_encode((version, frame) in valid_frame()) {
        let mut buf = wire(&frame, version);
        let item = decoder(version).decode(&mut buf).unwrap();
        prop_assert_eq!(item, Some(Item::Frame(expected(&frame))));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn any_split_point_gives_same_frame((version, frame) in valid_frame()) {
        let bytes = wire(&frame, version);
        let want = Some(Item::Frame(expected(&frame)));
        for split in 0..bytes.len() {
            let mut dec = decoder(version);
            let mut buf = BytesMut::from(&bytes[..split]);
            prop_assert_eq!(dec.decode(&mut buf).unwrap(), None, "split at {}", split);
            prop_assert_eq!(buf.len(), split);
            buf.put_slice(&bytes[split..]);
            prop_assert_eq!(dec.decode(&mut buf).unwrap(), want.clone(), "split at {}", split);
            prop_assert!(buf.is_empty());
        }
    }

    #[test]
    fn byte_at_a_time_stream_of_frames(
        (version, frames) in valid_stream(),
        beats in prop::collection::vec(0usize..3, 4),
    ) {
        let mut bytes = BytesMut::new();
        let mut want = Vec::new();
        for (frame, &n) in frames.iter().zip(&beats) {
            for _ in 0..n {
                encode_heartbeat(&mut bytes);
                want.push(Item::HeartBeat);
            }
            encode(frame, version, &mut bytes);
            want.push(Item::Frame(expected(frame)));
        }
        let mut dec = decoder(version);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for &b in bytes.iter() {
            buf.put_u8(b);
            while let Some(item) = dec.decode(&mut buf).unwrap() {
                got.push(item);
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got, want);
    }

    /// Whatever a header contains, the encoding stays one well-formed frame with
    /// the same header count, command and body (no header injection).
    #[test]
    fn encoding_never_breaks_framing(
        version in any_version(),
        command in any_command(),
        headers in prop::collection::vec((text(1), text(0)), 0..8),
        body in body(),
    ) {
        let headers: Vec<_> = headers.into_iter().filter(|(n, _)| n != "content-length").collect();
        let frame = Frame { command, headers, body };
        let mut buf = wire(&frame, version);
        let item = decoder(version).decode(&mut buf).unwrap();
        let Some(Item::Frame(got)) = item else {
            return Err(TestCaseError::fail("no frame"));
        };
        prop_assert!(buf.is_empty());
        prop_assert_eq!(got.command, frame.command);
        prop_assert_eq!(&got.body, &frame.body);
        prop_assert_eq!(got.headers.len(), expected(&frame).headers.len());
    }
}
