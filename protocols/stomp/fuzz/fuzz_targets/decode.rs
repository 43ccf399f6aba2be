//! Decodes arbitrary bytes; every frame that decodes must re-encode and decode
//! back to itself (modulo the documented encoder normalisations).
//!
//! Run with `cargo fuzz run decode` from `protocols/stomp`.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tern_stomp::{encode, Command, Decoder, Frame, Item, Limits, Version};

/// Small limits so the fuzzer reaches the limit paths quickly.
const LIMITS: Limits = Limits {
    max_frame_size: 64 * 1024,
    max_headers: 32,
    max_header_len: 1024,
};

/// Re-decoding uses no limits: escaping may legitimately grow a frame.
const UNLIMITED: Limits = Limits {
    max_frame_size: usize::MAX,
    max_headers: usize::MAX,
    max_header_len: usize::MAX,
};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the version so every escaping mode is exercised.
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    let version = Version::ALL[usize::from(selector) % Version::ALL.len()];
    let mut decoder = Decoder::new(LIMITS);
    decoder.set_version(version);
    let mut buf = BytesMut::from(input);
    loop {
        let before = buf.len();
        match decoder.decode(&mut buf) {
            Ok(Some(Item::Frame(frame))) => check_round_trip(&frame, version),
            Ok(Some(Item::HeartBeat)) => {}
            Ok(None) | Err(_) => break,
        }
        assert!(buf.len() < before, "an item must consume input");
    }
});

fn check_round_trip(frame: &Frame, version: Version) {
    let mut wire = BytesMut::new();
    encode(frame, version, &mut wire);
    let mut decoder = Decoder::new(UNLIMITED);
    decoder.set_version(version);
    let again = decoder
        .decode(&mut wire)
        .expect("re-encoded frame must decode");
    assert_eq!(again, Some(Item::Frame(expected(frame, version))));
    assert!(wire.is_empty(), "re-encoding must be exactly one frame");
}

/// What re-decoding must give: a `content-length` is added to a non-empty body
/// without one, and where CR is written raw (1.0, 1.1, handshakes) a value's
/// trailing CR merges into the EOL.
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
