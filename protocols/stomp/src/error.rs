//! Decoding errors. Their `Display` text is meant for the `message` header of the
//! ERROR frame the broker sends before closing the connection.

/// Why a byte stream is not a valid STOMP frame sequence. Every error is fatal
/// for the connection.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StompError {
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    #[error("malformed header line {0:?}: expected name:value")]
    MalformedHeader(String),
    #[error("invalid escape sequence {0:?} in header")]
    InvalidEscape(String),
    #[error("frame of {size} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge { size: usize, max: usize },
    #[error("too many headers: the limit is {max}")]
    TooManyHeaders { max: usize },
    #[error("header line too long: the limit is {max} bytes")]
    HeaderTooLong { max: usize },
    #[error("invalid content-length {0:?}")]
    InvalidContentLength(String),
    #[error("frame body is not terminated by NUL after content-length bytes")]
    MissingNul,
    #[error("header is not valid UTF-8")]
    InvalidUtf8,
}

/// Longest peer-supplied snippet quoted in an error, so error messages (and the
/// ERROR frames built from them) stay small.
const SNIPPET_MAX: usize = 64;

/// Renders untrusted bytes for an error message: lossy UTF-8, truncated.
pub(crate) fn snippet(bytes: &[u8]) -> String {
    let cut = bytes.get(..SNIPPET_MAX).unwrap_or(bytes);
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if cut.len() < bytes.len() {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_human_readable() {
        let e = StompError::FrameTooLarge { size: 10, max: 5 };
        assert_eq!(
            e.to_string(),
            "frame of 10 bytes exceeds the limit of 5 bytes"
        );
        let e = StompError::UnknownCommand("FOO".into());
        assert_eq!(e.to_string(), "unknown command \"FOO\"");
    }

    #[test]
    fn snippet_truncates() {
        assert_eq!(snippet(b"abc"), "abc");
        let long = [b'x'; 100];
        assert_eq!(snippet(&long).chars().count(), SNIPPET_MAX + 1);
    }
}
