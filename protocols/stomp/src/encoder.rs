//! Frame serialization.

use bytes::{BufMut, BytesMut};

use crate::escape::{escape_into, Escaping};
use crate::parse::content_length;
use crate::{Frame, Version};

/// Appends `frame` to `buf` in the wire format of `version`.
///
/// Headers are escaped per version and command (see the crate docs). The first
/// `content-length` header always states the real body length: it is added when
/// the body is non-empty and the header is missing, and its value is rewritten
/// if it disagrees with the body (a wrong length would corrupt the stream).
/// Lines end with `\n`; the frame ends with NUL.
pub fn encode(frame: &Frame, version: Version, buf: &mut BytesMut) {
    let mode = Escaping::for_frame(version, frame.command);
    let body_len = frame.body.len();
    let headers_len: usize = frame
        .headers
        .iter()
        .map(|(n, v)| n.len() + v.len() + 2)
        .sum();
    buf.reserve(frame.command.as_str().len() + headers_len + body_len + 32);

    buf.put_slice(frame.command.as_str().as_bytes());
    buf.put_u8(b'\n');
    let mut has_length = false;
    for (name, value) in &frame.headers {
        escape_into(buf, name, mode, true);
        buf.put_u8(b':');
        if !has_length && name == "content-length" {
            has_length = true;
            if content_length(value) == Ok(body_len) {
                buf.put_slice(value.as_bytes());
            } else {
                buf.put_slice(body_len.to_string().as_bytes());
            }
        } else {
            escape_into(buf, value, mode, false);
        }
        buf.put_u8(b'\n');
    }
    if !has_length && body_len > 0 {
        buf.put_slice(b"content-length:");
        buf.put_slice(body_len.to_string().as_bytes());
        buf.put_u8(b'\n');
    }
    buf.put_u8(b'\n');
    buf.put_slice(&frame.body);
    buf.put_u8(0);
}

/// Appends one heart-beat (a bare EOL).
pub fn encode_heartbeat(buf: &mut BytesMut) {
    buf.put_u8(b'\n');
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::Command;

    fn wire(frame: &Frame, version: Version) -> Vec<u8> {
        let mut buf = BytesMut::new();
        encode(frame, version, &mut buf);
        buf.to_vec()
    }

    #[test]
    fn minimal_frame() {
        assert_eq!(
            wire(&Frame::new(Command::Disconnect), Version::V1_2),
            b"DISCONNECT\n\n\0"
        );
    }

    #[test]
    fn adds_content_length_for_body() {
        let f = Frame::new(Command::Send)
            .with_header("destination", "/q")
            .with_body(Bytes::from_static(b"a\0b"));
        assert_eq!(
            wire(&f, Version::V1_2),
            b"SEND\ndestination:/q\ncontent-length:3\n\na\0b\0"
        );
    }

    #[test]
    fn keeps_or_fixes_existing_content_length() {
        let body = Bytes::from_static(b"abc");
        let ok = Frame::new(Command::Send)
            .with_header("content-length", "003")
            .with_body(body.clone());
        assert_eq!(
            wire(&ok, Version::V1_2),
            b"SEND\ncontent-length:003\n\nabc\0"
        );
        let wrong = Frame::new(Command::Send)
            .with_header("content-length", "99")
            .with_body(body);
        assert_eq!(
            wire(&wrong, Version::V1_2),
            b"SEND\ncontent-length:3\n\nabc\0"
        );
    }

    #[test]
    fn escapes_per_version_and_command() {
        let f = Frame::new(Command::Message).with_header("k:", "a\\b\nc\r");
        assert_eq!(
            wire(&f, Version::V1_2),
            b"MESSAGE\nk\\c:a\\\\b\\nc\\r\n\n\0"
        );
        assert_eq!(wire(&f, Version::V1_1), b"MESSAGE\nk\\c:a\\\\b\\nc\r\n\n\0");
        assert_eq!(wire(&f, Version::V1_0), b"MESSAGE\nk :a\\b c\r\n\n\0");
        let c = Frame::new(Command::Connected).with_header("server", "x:y\\z");
        assert_eq!(wire(&c, Version::V1_2), b"CONNECTED\nserver:x:y\\z\n\n\0");
    }

    #[test]
    fn heartbeat_is_lf() {
        let mut buf = BytesMut::new();
        encode_heartbeat(&mut buf);
        assert_eq!(&buf[..], b"\n");
    }
}
