//! Header escaping rules (STOMP 1.1/1.2 "Value Encoding").
//!
//! Which rule applies depends on the negotiated version and on the command: the
//! handshake frames are never escaped because they are exchanged before a version
//! is agreed.

use std::borrow::Cow;

use bytes::{BufMut, BytesMut};
use nom::branch::alt;
use nom::bytes::complete::{is_not, tag};
use nom::combinator::value;
use nom::sequence::preceded;
use nom::{IResult, Parser};

use crate::error::snippet;
use crate::{Command, StompError, Version};

/// The escaping convention of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Escaping {
    /// STOMP 1.0 and handshake frames: bytes are taken literally.
    Raw,
    /// STOMP 1.1: `\n`, `\c`, `\\` (the decoder also accepts 1.2's `\r`).
    V1_1,
    /// STOMP 1.2: `\r`, `\n`, `\c`, `\\`.
    V1_2,
}

impl Escaping {
    pub(crate) fn for_frame(version: Version, command: Command) -> Escaping {
        if command.is_handshake() {
            return Escaping::Raw;
        }
        match version {
            Version::V1_0 => Escaping::Raw,
            Version::V1_1 => Escaping::V1_1,
            Version::V1_2 => Escaping::V1_2,
        }
    }
}

type NomResult<'a, O> = IResult<&'a [u8], O>;

/// A run of bytes that needs no translation.
fn literal(input: &[u8]) -> NomResult<'_, &[u8]> {
    is_not("\\")(input)
}

/// One backslash escape. `\r` is accepted for 1.1 too: being lenient costs
/// nothing and some 1.1 clients emit it.
fn escape_seq(input: &[u8]) -> NomResult<'_, u8> {
    preceded(
        tag(&b"\\"[..]),
        alt((
            value(b'\\', tag(&b"\\"[..])),
            value(b'\n', tag(&b"n"[..])),
            value(b':', tag(&b"c"[..])),
            value(b'\r', tag(&b"r"[..])),
        )),
    )
    .parse(input)
}

/// Decodes the escapes of one header name or value. Borrows when nothing needs
/// decoding, which is the common case.
pub(crate) fn unescape(raw: &[u8], mode: Escaping) -> Result<Cow<'_, [u8]>, StompError> {
    if mode == Escaping::Raw || !raw.contains(&b'\\') {
        return Ok(Cow::Borrowed(raw));
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut input = raw;
    while !input.is_empty() {
        if let Ok((rest, run)) = literal(input) {
            out.extend_from_slice(run);
            input = rest;
            continue;
        }
        match escape_seq(input) {
            Ok((rest, byte)) => {
                out.push(byte);
                input = rest;
            }
            Err(_) => {
                // Undefined escapes are a fatal protocol error (1.1 and 1.2 spec).
                let bad = input.get(..2).unwrap_or(input);
                return Err(StompError::InvalidEscape(snippet(bad)));
            }
        }
    }
    Ok(Cow::Owned(out))
}

/// What one special byte becomes on the wire, `None` if it is written as is.
fn replacement(byte: u8, mode: Escaping, is_name: bool) -> Option<&'static [u8]> {
    match (mode, byte) {
        (Escaping::Raw, b'\n') => Some(b" "),
        // A ':' in a raw name would move the name/value split.
        (Escaping::Raw, b':') if is_name => Some(b" "),
        (Escaping::Raw, _) => None,
        (_, b'\\') => Some(b"\\\\"),
        (_, b'\n') => Some(b"\\n"),
        (_, b':') => Some(b"\\c"),
        (Escaping::V1_2, b'\r') => Some(b"\\r"),
        _ => None,
    }
}

/// Writes a header name or value with the escaping of `mode`.
///
/// Raw frames cannot carry a line feed (nor a ':' in a name), so those bytes are
/// replaced by a space: a value relayed from a 1.2 publisher to a 1.0 subscriber
/// must never be able to inject extra header lines.
pub(crate) fn escape_into(buf: &mut BytesMut, text: &str, mode: Escaping, is_name: bool) {
    let bytes = text.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if let Some(rep) = replacement(b, mode, is_name) {
            buf.put_slice(bytes.get(start..i).unwrap_or_default());
            buf.put_slice(rep);
            start = i + 1;
        }
    }
    buf.put_slice(bytes.get(start..).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(text: &str, mode: Escaping, is_name: bool) -> String {
        let mut buf = BytesMut::new();
        escape_into(&mut buf, text, mode, is_name);
        String::from_utf8(buf.to_vec()).unwrap()
    }

    #[test]
    fn unescape_all_sequences() {
        let out = unescape(br"a\nb\cc\\d\re", Escaping::V1_2).unwrap();
        assert_eq!(&out[..], b"a\nb:c\\d\re");
        let out = unescape(br"\r", Escaping::V1_1).unwrap();
        assert_eq!(&out[..], b"\r");
    }

    #[test]
    fn unescape_borrows_when_clean() {
        assert!(matches!(
            unescape(b"plain", Escaping::V1_2),
            Ok(Cow::Borrowed(_))
        ));
        assert!(matches!(
            unescape(br"a\tb", Escaping::Raw),
            Ok(Cow::Borrowed(_))
        ));
    }

    #[test]
    fn undefined_escape_is_an_error() {
        assert_eq!(
            unescape(br"a\tb", Escaping::V1_2),
            Err(StompError::InvalidEscape("\\t".into()))
        );
        assert_eq!(
            unescape(b"trailing\\", Escaping::V1_1),
            Err(StompError::InvalidEscape("\\".into()))
        );
    }

    #[test]
    fn escape_per_mode() {
        assert_eq!(esc("a:b\\c\nd\re", Escaping::V1_2, false), r"a\cb\\c\nd\re");
        assert_eq!(
            esc("a:b\\c\nd\re", Escaping::V1_1, false),
            "a\\cb\\\\c\\nd\re"
        );
        assert_eq!(esc("a:b\\c\nd", Escaping::Raw, false), "a:b\\c d");
        assert_eq!(esc("a:b\nc", Escaping::Raw, true), "a b c");
        assert_eq!(esc("", Escaping::V1_2, false), "");
    }

    #[test]
    fn handshake_frames_are_raw() {
        for v in Version::ALL {
            assert_eq!(Escaping::for_frame(v, Command::Connect), Escaping::Raw);
            assert_eq!(Escaping::for_frame(v, Command::Connected), Escaping::Raw);
            assert_eq!(Escaping::for_frame(v, Command::Stomp), Escaping::Raw);
        }
        assert_eq!(
            Escaping::for_frame(Version::V1_0, Command::Send),
            Escaping::Raw
        );
        assert_eq!(
            Escaping::for_frame(Version::V1_1, Command::Send),
            Escaping::V1_1
        );
        assert_eq!(
            Escaping::for_frame(Version::V1_2, Command::Send),
            Escaping::V1_2
        );
    }
}
