//! Protocol versions and `accept-version` negotiation.

/// A STOMP protocol version. Ordered so that `max()` picks the newest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// STOMP 1.0: no header escaping, no heart-beat negotiation.
    V1_0,
    /// STOMP 1.1: header escaping (`\n`, `\c`, `\\`), heart-beats, NACK.
    V1_1,
    /// STOMP 1.2: adds the `\r` escape and CRLF line endings.
    V1_2,
}

impl Version {
    /// Every supported version, oldest first.
    pub const ALL: [Version; 3] = [Version::V1_0, Version::V1_1, Version::V1_2];

    /// The wire spelling used in `accept-version` / `version` headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1_0 => "1.0",
            Version::V1_1 => "1.1",
            Version::V1_2 => "1.2",
        }
    }

    /// Parses one exact version token (`"1.2"`); anything else is `None`.
    pub fn parse(s: &str) -> Option<Version> {
        Version::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Picks the highest version both sides speak from an `accept-version` value
    /// such as `"1.0,1.1,1.2"`.
    ///
    /// A missing header means a 1.0 client (spec: "assume 1.0"). Unknown tokens are
    /// ignored and surrounding blanks tolerated; `None` means there is no common
    /// version and the server must reply with an ERROR frame.
    pub fn negotiate(accept_version: Option<&str>) -> Option<Version> {
        match accept_version {
            None => Some(Version::V1_0),
            Some(list) => list
                .split(',')
                .filter_map(|token| Version::parse(token.trim()))
                .max(),
        }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_str_and_parse_round_trip() {
        for v in Version::ALL {
            assert_eq!(Version::parse(v.as_str()), Some(v));
        }
        assert_eq!(Version::parse("1.3"), None);
        assert_eq!(Version::parse(" 1.2"), None);
    }

    #[test]
    fn negotiate_picks_highest_common() {
        assert_eq!(Version::negotiate(None), Some(Version::V1_0));
        assert_eq!(Version::negotiate(Some("1.0,1.1,1.2")), Some(Version::V1_2));
        assert_eq!(Version::negotiate(Some("1.1,1.0")), Some(Version::V1_1));
        assert_eq!(Version::negotiate(Some("1.2, 2.0")), Some(Version::V1_2));
        assert_eq!(Version::negotiate(Some("1.0")), Some(Version::V1_0));
        assert_eq!(Version::negotiate(Some("2.0,3.0")), None);
        assert_eq!(Version::negotiate(Some("")), None);
    }

    #[test]
    fn ordering_is_chronological() {
        assert!(Version::V1_0 < Version::V1_1 && Version::V1_1 < Version::V1_2);
    }
}
