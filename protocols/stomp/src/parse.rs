//! Grammar of complete lines (command line, header line) and of header values
//! with meaning to the codec. The incremental decoder finds line boundaries and
//! hands finished lines to these nom parsers.

use nom::bytes::complete::{tag, take_till1};
use nom::character::complete::digit1;
use nom::combinator::{all_consuming, rest};
use nom::sequence::separated_pair;
use nom::{IResult, Parser};

use crate::error::snippet;
use crate::escape::{unescape, Escaping};
use crate::{Command, StompError};

/// Parses the command line (EOL already stripped).
pub(crate) fn command_line(line: &[u8]) -> Result<Command, StompError> {
    Command::parse(line).ok_or_else(|| StompError::UnknownCommand(snippet(line)))
}

/// `name:value`, split at the first raw ':' (escaped colons are `\c`, so this is
/// right for every version). The name must not be empty; the value may contain
/// further ':' (STOMP 1.0 relies on that).
fn name_value(line: &[u8]) -> IResult<&[u8], (&[u8], &[u8])> {
    separated_pair(take_till1(|b| b == b':'), tag(&b":"[..]), rest).parse(line)
}

/// Parses one header line (EOL already stripped) into owned, unescaped strings.
/// Blanks are kept: the 1.2 spec forbids trimming.
pub(crate) fn header_line(line: &[u8], mode: Escaping) -> Result<(String, String), StompError> {
    let (_, (name, value)) =
        name_value(line).map_err(|_| StompError::MalformedHeader(snippet(line)))?;
    Ok((text(name, mode)?, text(value, mode)?))
}

fn text(raw: &[u8], mode: Escaping) -> Result<String, StompError> {
    let bytes = unescape(raw, mode)?.into_owned();
    String::from_utf8(bytes).map_err(|_| StompError::InvalidUtf8)
}

/// A `content-length` value: plain decimal digits only (no sign, no blanks).
pub(crate) fn content_length(value: &str) -> Result<usize, StompError> {
    let invalid = || StompError::InvalidContentLength(snippet(value.as_bytes()));
    let digits: IResult<&str, &str> = all_consuming(digit1).parse(value);
    let (_, digits) = digits.map_err(|_| invalid())?;
    digits.parse().map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_splits_at_first_colon() {
        let h = header_line(b"a:b:c", Escaping::Raw).unwrap();
        assert_eq!(h, ("a".into(), "b:c".into()));
        let h = header_line(b"a:", Escaping::V1_2).unwrap();
        assert_eq!(h, ("a".into(), "".into()));
    }

    #[test]
    fn header_keeps_blanks() {
        let h = header_line(b" a : b ", Escaping::V1_2).unwrap();
        assert_eq!(h, (" a ".into(), " b ".into()));
    }

    #[test]
    fn header_without_colon_or_name_is_malformed() {
        assert!(matches!(
            header_line(b"novalue", Escaping::V1_2),
            Err(StompError::MalformedHeader(_))
        ));
        assert!(matches!(
            header_line(b":v", Escaping::V1_2),
            Err(StompError::MalformedHeader(_))
        ));
    }

    #[test]
    fn header_unescapes_per_mode() {
        let h = header_line(br"a\cb:c\nd", Escaping::V1_2).unwrap();
        assert_eq!(h, ("a:b".into(), "c\nd".into()));
        let h = header_line(br"passcode:x\y", Escaping::Raw).unwrap();
        assert_eq!(h.1, r"x\y");
    }

    #[test]
    fn header_rejects_bad_utf8() {
        assert_eq!(
            header_line(b"a:\xff", Escaping::V1_2),
            Err(StompError::InvalidUtf8)
        );
    }

    #[test]
    fn content_length_values() {
        assert_eq!(content_length("0"), Ok(0));
        assert_eq!(content_length("0042"), Ok(42));
        for bad in [
            "",
            "-1",
            "+1",
            " 1",
            "1 ",
            "1a",
            "99999999999999999999999999",
        ] {
            assert!(
                matches!(
                    content_length(bad),
                    Err(StompError::InvalidContentLength(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn command_line_is_exact() {
        assert_eq!(command_line(b"SEND"), Ok(Command::Send));
        assert_eq!(
            command_line(b"Send"),
            Err(StompError::UnknownCommand("Send".into()))
        );
    }
}
