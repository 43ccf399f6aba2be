//! Unit tests of the incremental decoder.

use bytes::{BufMut, Bytes, BytesMut};

use super::*;

fn limits(max_frame_size: usize, max_headers: usize, max_header_len: usize) -> Limits {
    Limits {
        max_frame_size,
        max_headers,
        max_header_len,
    }
}

/// Decodes everything in `input` (given at once) with `version` rules.
fn decode_all(input: &[u8], version: Version) -> Result<Vec<Item>, StompError> {
    let mut dec = Decoder::default();
    dec.set_version(version);
    let mut buf = BytesMut::from(input);
    let mut items = Vec::new();
    while let Some(item) = dec.decode(&mut buf)? {
        items.push(item);
    }
    Ok(items)
}

fn one_frame(input: &[u8], version: Version) -> Frame {
    match decode_all(input, version).unwrap().as_slice() {
        [Item::Frame(f)] => f.clone(),
        other => panic!("expected one frame, got {other:?}"),
    }
}

fn first_error(input: &[u8], lim: Limits) -> StompError {
    let mut dec = Decoder::new(lim);
    let mut buf = BytesMut::from(input);
    loop {
        match dec.decode(&mut buf) {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("no error, buffer left: {buf:?}"),
            Err(e) => return e,
        }
    }
}

#[test]
fn basic_frame() {
    let f = one_frame(b"SEND\ndestination:/queue/a\n\nhello\0", Version::V1_2);
    assert_eq!(f.command, Command::Send);
    assert_eq!(f.header("destination"), Some("/queue/a"));
    assert_eq!(&f.body[..], b"hello");
}

#[test]
fn crlf_lines() {
    let f = one_frame(b"SEND\r\ndestination:/q\r\n\r\nhi\0", Version::V1_2);
    assert_eq!(f.headers, vec![("destination".into(), "/q".into())]);
    assert_eq!(&f.body[..], b"hi");
}

#[test]
fn no_headers_no_body() {
    let f = one_frame(b"DISCONNECT\n\n\0", Version::V1_2);
    assert_eq!(f, Frame::new(Command::Disconnect));
}

#[test]
fn heart_beats_one_per_eol() {
    let items = decode_all(b"\n\r\n\nSEND\n\n\0\n\r\n", Version::V1_2).unwrap();
    assert_eq!(
        items,
        vec![
            Item::HeartBeat,
            Item::HeartBeat,
            Item::HeartBeat,
            Item::Frame(Frame::new(Command::Send)),
            Item::HeartBeat,
            Item::HeartBeat,
        ]
    );
}

#[test]
fn lone_cr_waits() {
    let mut dec = Decoder::default();
    let mut buf = BytesMut::from(&b"\r"[..]);
    assert_eq!(dec.decode(&mut buf), Ok(None));
    buf.put_u8(b'\n');
    assert_eq!(dec.decode(&mut buf), Ok(Some(Item::HeartBeat)));
    assert!(buf.is_empty());
}

#[test]
fn empty_buffer_needs_more() {
    let mut dec = Decoder::default();
    let mut buf = BytesMut::new();
    assert_eq!(dec.decode(&mut buf), Ok(None));
}

#[test]
fn content_length_body_with_nuls() {
    let f = one_frame(b"SEND\ncontent-length:5\n\na\0b\0c\0", Version::V1_2);
    assert_eq!(&f.body[..], b"a\0b\0c");
}

#[test]
fn content_length_zero() {
    let f = one_frame(b"SEND\ncontent-length:0\n\n\0", Version::V1_2);
    assert!(f.body.is_empty());
}

#[test]
fn content_length_must_be_followed_by_nul() {
    let e = first_error(b"SEND\ncontent-length:2\n\nabc\0", Limits::default());
    assert_eq!(e, StompError::MissingNul);
}

#[test]
fn invalid_content_length() {
    let e = first_error(b"SEND\ncontent-length:abc\n\n\0", Limits::default());
    assert_eq!(e, StompError::InvalidContentLength("abc".into()));
    let e = first_error(b"SEND\ncontent-length:-1\n\n\0", Limits::default());
    assert!(matches!(e, StompError::InvalidContentLength(_)));
}

#[test]
fn first_content_length_wins() {
    let f = one_frame(
        b"SEND\ncontent-length:1\ncontent-length:x\n\na\0",
        Version::V1_2,
    );
    assert_eq!(&f.body[..], b"a");
    assert_eq!(f.header("content-length"), Some("1"));
    assert_eq!(f.headers.len(), 2);
}

#[test]
fn repeated_headers_kept_in_order() {
    let f = one_frame(b"MESSAGE\nfoo:1\nbar:2\nfoo:3\n\n\0", Version::V1_2);
    assert_eq!(
        f.headers,
        vec![
            ("foo".into(), "1".into()),
            ("bar".into(), "2".into()),
            ("foo".into(), "3".into())
        ]
    );
    assert_eq!(f.header("foo"), Some("1"));
}

#[test]
fn unescape_depends_on_version() {
    let input = b"SEND\nk\\c:a\\nb\\\\c\n\n\0";
    let f = one_frame(input, Version::V1_2);
    assert_eq!(f.headers, vec![("k:".into(), "a\nb\\c".into())]);
    let f = one_frame(input, Version::V1_1);
    assert_eq!(f.headers, vec![("k:".into(), "a\nb\\c".into())]);
    let f = one_frame(input, Version::V1_0);
    assert_eq!(f.headers, vec![("k\\c".into(), "a\\nb\\\\c".into())]);
}

#[test]
fn v1_0_keeps_colons_in_value() {
    let f = one_frame(b"SEND\nurl:http://x:80\n\n\0", Version::V1_0);
    assert_eq!(f.header("url"), Some("http://x:80"));
}

#[test]
fn handshake_frames_are_not_unescaped() {
    for cmd in ["CONNECT", "STOMP", "CONNECTED"] {
        let input = format!("{cmd}\npasscode:a\\tb\\c\n\n\0");
        let f = one_frame(input.as_bytes(), Version::V1_2);
        assert_eq!(f.header("passcode"), Some("a\\tb\\c"), "{cmd}");
    }
}

#[test]
fn invalid_escape() {
    let e = first_error(b"SEND\nk:a\\tb\n\n\0", Limits::default());
    assert_eq!(e, StompError::InvalidEscape("\\t".into()));
}

#[test]
fn whitespace_not_trimmed() {
    let f = one_frame(b"SEND\n k : v \n\n\0", Version::V1_2);
    assert_eq!(f.headers, vec![(" k ".into(), " v ".into())]);
}

#[test]
fn header_without_colon() {
    let e = first_error(b"SEND\nnocolon\n\n\0", Limits::default());
    assert_eq!(e, StompError::MalformedHeader("nocolon".into()));
}

#[test]
fn invalid_utf8_header() {
    let e = first_error(b"SEND\nk:\xc3\x28\n\n\0", Limits::default());
    assert_eq!(e, StompError::InvalidUtf8);
}

#[test]
fn unknown_and_lowercase_commands() {
    let e = first_error(b"FOO\n\n\0", Limits::default());
    assert_eq!(e, StompError::UnknownCommand("FOO".into()));
    let e = first_error(b"send\n\n\0", Limits::default());
    assert_eq!(e, StompError::UnknownCommand("send".into()));
}

#[test]
fn overlong_command_rejected_before_eol() {
    let mut dec = Decoder::default();
    let mut buf = BytesMut::from(&b"SUBSCRIBE"[..]);
    assert_eq!(dec.decode(&mut buf), Ok(None));
    buf.put_slice(b"XXXXXXXX");
    assert!(matches!(
        dec.decode(&mut buf),
        Err(StompError::UnknownCommand(_))
    ));
}

#[test]
fn pipelined_frames() {
    let items = decode_all(b"SEND\ncontent-length:1\n\nx\0SEND\n\ny\0", Version::V1_2).unwrap();
    assert_eq!(items.len(), 2);
}

#[test]
fn byte_at_a_time() {
    let input = b"\nSEND\r\na:b\r\ncontent-length:3\r\n\r\nx\0y\0\nMESSAGE\n\nbody\0";
    let mut dec = Decoder::default();
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    for &b in input.iter() {
        buf.put_u8(b);
        while let Some(item) = dec.decode(&mut buf).unwrap() {
            items.push(item);
        }
    }
    assert!(buf.is_empty());
    assert_eq!(decode_all(input, Version::V1_2).unwrap(), items);
    assert_eq!(items.len(), 4);
}

#[test]
fn incomplete_frame_leaves_buffer_untouched() {
    let mut dec = Decoder::default();
    let mut buf = BytesMut::from(&b"SEND\nk:v\n\nbody"[..]);
    assert_eq!(dec.decode(&mut buf), Ok(None));
    assert_eq!(&buf[..], b"SEND\nk:v\n\nbody");
    buf.put_u8(0);
    let item = dec.decode(&mut buf).unwrap().unwrap();
    assert!(matches!(item, Item::Frame(f) if &f.body[..] == b"body"));
}

#[test]
fn frame_too_large_without_content_length() {
    let lim = limits(32, 64, 1024);
    let mut dec = Decoder::new(lim);
    let mut buf = BytesMut::from(&b"SEND\n\n"[..]);
    buf.put_slice(&[b'x'; 25]);
    assert_eq!(dec.decode(&mut buf), Ok(None));
    buf.put_u8(b'x');
    assert!(matches!(
        dec.decode(&mut buf),
        Err(StompError::FrameTooLarge { max: 32, .. })
    ));
}

#[test]
fn frame_exactly_at_limit_is_accepted() {
    // "SEND\n\n" (6) + 25 body bytes + NUL = 32.
    let mut input = b"SEND\n\n".to_vec();
    input.extend_from_slice(&[b'x'; 25]);
    input.push(0);
    let mut dec = Decoder::new(limits(32, 64, 1024));
    let mut buf = BytesMut::from(&input[..]);
    assert!(matches!(dec.decode(&mut buf), Ok(Some(Item::Frame(_)))));
}

#[test]
fn content_length_over_limit_rejected_immediately() {
    let e = first_error(b"SEND\ncontent-length:1000\n\n", limits(100, 64, 1024));
    assert_eq!(
        e,
        StompError::FrameTooLarge {
            size: 1027,
            max: 100
        }
    );
}

#[test]
fn huge_content_length_does_not_overflow() {
    let input = format!("SEND\ncontent-length:{}\n\n", usize::MAX);
    let e = first_error(input.as_bytes(), Limits::default());
    assert!(matches!(e, StompError::FrameTooLarge { .. }));
}

#[test]
fn headers_count_toward_frame_size() {
    let e = first_error(b"SEND\naaaaaaaaaaaaaaaaaaaa:b\n", limits(16, 64, 1024));
    assert!(matches!(e, StompError::FrameTooLarge { max: 16, .. }));
}

#[test]
fn too_many_headers() {
    let e = first_error(b"SEND\na:1\nb:2\nc:3\n", limits(1024, 2, 1024));
    assert_eq!(e, StompError::TooManyHeaders { max: 2 });
    let f = one_frame(b"SEND\na:1\nb:2\n\n\0", Version::V1_2);
    assert_eq!(f.headers.len(), 2);
}

#[test]
fn header_too_long_even_incomplete() {
    let mut dec = Decoder::new(limits(1 << 20, 64, 8));
    let mut buf = BytesMut::from(&b"SEND\nabc:efgh"[..]);
    assert_eq!(dec.decode(&mut buf), Ok(None));
    buf.put_u8(b'\r'); // could still be "abc:efgh\r\n" = 8 content bytes
    assert_eq!(dec.decode(&mut buf), Ok(None));
    buf.put_u8(b'\n');
    assert!(matches!(dec.decode(&mut buf), Ok(None)));
    buf.put_slice(b"abc:efghi");
    assert_eq!(
        dec.decode(&mut buf),
        Err(StompError::HeaderTooLong { max: 8 })
    );
}

#[test]
fn header_too_long_complete_line() {
    let e = first_error(b"SEND\nabc:efghi\n\n\0", limits(1 << 20, 64, 8));
    assert_eq!(e, StompError::HeaderTooLong { max: 8 });
}

#[test]
fn set_version_switches_escaping() {
    let mut dec = Decoder::default();
    assert_eq!(dec.version(), Version::V1_2);
    let mut buf = BytesMut::from(&b"SEND\nk:a\\cb\n\n\0"[..]);
    dec.set_version(Version::V1_0);
    let Some(Item::Frame(f)) = dec.decode(&mut buf).unwrap() else {
        panic!("expected frame")
    };
    assert_eq!(f.header("k"), Some("a\\cb"));
}

#[test]
fn body_is_zero_copy_slice() {
    let mut dec = Decoder::default();
    let mut buf = BytesMut::from(&b"SEND\n\nabc\0rest"[..]);
    let Some(Item::Frame(f)) = dec.decode(&mut buf).unwrap() else {
        panic!("expected frame")
    };
    assert_eq!(f.body, Bytes::from_static(b"abc"));
    assert_eq!(&buf[..], b"rest");
}

#[test]
fn recovers_state_after_error() {
    let mut dec = Decoder::default();
    let mut buf = BytesMut::from(&b"BAD\n"[..]);
    assert!(dec.decode(&mut buf).is_err());
    let mut fresh = BytesMut::from(&b"SEND\n\n\0"[..]);
    assert!(matches!(dec.decode(&mut fresh), Ok(Some(Item::Frame(_)))));
}

/// Byte-at-a-time feeding of a big body must stay linear; a decoder that
/// re-scanned from the start on every byte would take minutes here.
#[test]
fn byte_at_a_time_is_linear() {
    let body_len = 1 << 20;
    let mut input = b"SEND\n".to_vec();
    for i in 0..60 {
        input.extend_from_slice(format!("h{i}:{}\n", "v".repeat(4000)).as_bytes());
    }
    input.push(b'\n');
    input.resize(input.len() + body_len, b'x');
    input.push(0);
    let mut dec = Decoder::new(limits(8 << 20, 64, 8 << 10));
    let mut buf = BytesMut::with_capacity(input.len());
    let mut frames = 0;
    for &b in &input {
        buf.put_u8(b);
        if let Some(Item::Frame(f)) = dec.decode(&mut buf).unwrap() {
            assert_eq!(f.body.len(), body_len);
            assert_eq!(f.headers.len(), 60);
            frames += 1;
        }
    }
    assert_eq!(frames, 1);
}

/// A 16 MB frame fed in 64 KiB chunks, as a connection reads it: every call
/// looks only at the bytes that arrived since the last one (the decoder keeps
/// its place), so the work is linear in the frame, not quadratic.
#[test]
fn a_16_mb_frame_fed_in_64_kib_chunks_is_scanned_once() {
    const BODY: usize = 16_000_000;
    const CHUNK: usize = 64 * 1024;
    let mut input = b"SEND\ndestination:/queue/big\n\n".to_vec();
    input.resize(input.len() + BODY, b'x');
    input.push(0);
    for with_content_length in [false, true] {
        let mut wire = input.clone();
        if with_content_length {
            let header = format!("SEND\ndestination:/queue/big\ncontent-length:{BODY}\n");
            wire.splice(..b"SEND\ndestination:/queue/big\n".len(), header.bytes());
        }
        let mut dec = Decoder::new(limits(16 * 1024 * 1024, 64, 8192));
        let mut buf = BytesMut::new();
        let mut examined = 0;
        let mut frame = None;
        for chunk in wire.chunks(CHUNK) {
            buf.extend_from_slice(chunk);
            let before = dec.partial.scanned;
            match dec.decode(&mut buf).unwrap() {
                Some(Item::Frame(f)) => frame = Some(f),
                Some(other) => panic!("unexpected {other:?}"),
                None => {
                    let after = dec.partial.scanned;
                    assert!(after >= before, "the decoder went back");
                    // Without a content-length every new byte is looked at once;
                    // with one, none of the body is.
                    examined += after - before;
                    assert!(after - before <= CHUNK, "looked at old bytes again");
                }
            }
        }
        let frame = frame.expect("the frame, once its last chunk arrived");
        assert_eq!(frame.body.len(), BODY);
        assert!(buf.is_empty());
        assert!(examined <= wire.len(), "{examined} bytes examined");
    }
}
