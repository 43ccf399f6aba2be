//! The fuzz target's oracle as a property test (cargo-fuzz is optional): any
//! frame the decoder accepts from arbitrary bytes must re-encode and decode back
//! to itself, and decoding must never panic or stall.

use bytes::BytesMut;
use proptest::prelude::*;
use tern_stomp::{encode, Command, Decoder, Frame, Item, Limits, Version};

const LIMITS: Limits = Limits {
    max_frame_size: 4096,
    max_headers: 8,
    max_header_len: 64,
};

/// Re-decoding uses no limits: escaping may legitimately grow a frame.
const UNLIMITED: Limits = Limits {
    max_frame_size: usize::MAX,
    max_headers: usize::MAX,
    max_header_len: usize::MAX,
};

/// Bytes that matter to the codec, plus some random ones.
fn token() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => prop::sample::select(vec![
            &b"\n"[..],
            b"\r\n",
            b"\r",
            b"\0",
            b":",
            b"\\",
            b"\\c",
            b"\\n",
            b"\\r",
            b"\\\\",
            b"\\t",
            b"content-length:",
            b"1",
            b"3",
            b"dest",
            b" ",
            b"\xff",
            b"\xc3\xa9",
        ])
        .prop_map(<[u8]>::to_vec),
        1 => prop::collection::vec(any::<u8>(), 0..4),
    ]
}

fn tokens(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(token(), 0..max).prop_map(|t| t.concat())
}

/// Frame-shaped input (EOLs, command, header lines, blank line, body, NUL)
/// filled with noisy tokens, so most cases get past the command line.
fn stompish() -> impl Strategy<Value = Vec<u8>> {
    let eol = || prop::sample::select(vec![&b"\n"[..], b"\r\n"]).prop_map(<[u8]>::to_vec);
    let command = prop_oneof![
        5 => prop::sample::select(Command::ALL.to_vec()).prop_map(|c| c.as_str().as_bytes().to_vec()),
        1 => tokens(3),
    ];
    let header =
        (tokens(4), tokens(4), eol()).prop_map(|(n, v, e)| [n, b":".to_vec(), v, e].concat());
    let frame = (
        prop::collection::vec(eol(), 0..2),
        command,
        eol(),
        prop::collection::vec(header, 0..6),
        eol(),
        tokens(6),
    )
        .prop_map(|(beats, cmd, e1, headers, e2, body)| {
            [beats.concat(), cmd, e1, headers.concat(), e2, body, vec![0]].concat()
        });
    prop::collection::vec(frame, 1..4).prop_map(|f| f.concat())
}

fn expected(frame: &Frame, version: Version) -> Frame {
    let raw_cr = version != Version::V1_2
        || matches!(
            frame.command,
            Command::Connect | Command::Stomp | Command::Connected
        );
    let mut want = frame.clone();
    if raw_cr {
        for (_, value) in &mut want.headers {
            if value.ends_with('\r') {
                value.pop();
            }
        }
    }
    if !want.body.is_empty() && want.header("content-length").is_none() {
        let len = want.body.len().to_string();
        want = want.with_header("content-length", len);
    }
    want
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn accepted_frames_reencode_identically(
        version in prop::sample::select(Version::ALL.to_vec()),
        input in stompish(),
    ) {
        let mut decoder = Decoder::new(LIMITS);
        decoder.set_version(version);
        let mut buf = BytesMut::from(&input[..]);
        loop {
            let before = buf.len();
            let frame = match decoder.decode(&mut buf) {
                Ok(Some(Item::Frame(frame))) => frame,
                Ok(Some(Item::HeartBeat)) => {
                    prop_assert!(buf.len() < before);
                    continue;
                }
                Ok(None) | Err(_) => break,
            };
            prop_assert!(buf.len() < before);
            let mut wire = BytesMut::new();
            encode(&frame, version, &mut wire);
            let mut again = Decoder::new(UNLIMITED);
            again.set_version(version);
            let got = again.decode(&mut wire).unwrap();
            prop_assert_eq!(got, Some(Item::Frame(expected(&frame, version))));
            prop_assert!(wire.is_empty());
        }
    }
}
