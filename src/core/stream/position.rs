//! Where a reader starts, and the stream filters that name a stream.
//!
//! Start positions (the same text on every protocol): `first`, `last` (the
//! last message), `next` (only new ones; the default), `offset=N` (or a bare
//! `N`), `timestamp=T` (seconds since the epoch: the first message at or
//! after T) and a duration back from now (`-10m`, `-2h`, `-7d`).
//!
//! Stream filters (core form, also MQTT's):
//! - `$stream/sensors` — every message of stream `sensors`;
//! - `$stream/sensors/sensors/room1/#` — those of its messages whose
//!   original topic matches `sensors/room1/#` (the filter after the name is
//!   over the original topics);
//! - `$stream/sensors/@first/#` — the start position inside the filter, for
//!   MQTT 3.1.1 which has no subscription properties.

use std::time::Duration;

use super::settings::{parse_duration, valid_name};
use crate::core::topic::Filter;

/// Prefix of a stream filter in the core (and in MQTT).
pub const STREAM_PREFIX: &str = "$stream/";

/// Where a new reader starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartPosition {
    First,
    Last,
    Next,
    Offset(u64),
    /// Unix milliseconds.
    Timestamp(u64),
    /// This long before now.
    Ago(Duration),
}

/// Why a stream subscription was refused; the text names the problem.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StreamError {
    #[error("unknown stream {0:?}")]
    UnknownStream(String),
    #[error("malformed stream position {0:?} (first, last, next, offset=N, timestamp=T or -10m)")]
    BadPosition(String),
    #[error("stream offset {offset} is beyond the end of the stream (next offset {next})")]
    OffsetBeyondEnd { offset: u64, next: u64 },
    #[error("stream timestamp {0} is in the future")]
    TimestampInFuture(u64),
    #[error("malformed stream filter {0:?}")]
    BadFilter(String),
    #[error("stream {0:?} cannot be read: the broker keeps no store")]
    NoStore(String),
    #[error("stream {0:?} already exists")]
    Exists(String),
    #[error("stream {0:?} is declared in the config file: remove it there")]
    Declared(String),
    #[error("{0}")]
    Invalid(String),
}

impl std::str::FromStr for StartPosition {
    type Err = StreamError;

    fn from_str(text: &str) -> Result<StartPosition, StreamError> {
        let bad = || StreamError::BadPosition(text.to_string());
        let trimmed = text.trim();
        Ok(match trimmed {
            "first" => StartPosition::First,
            "last" => StartPosition::Last,
            "next" => StartPosition::Next,
            _ => {
                if let Some(n) = trimmed.strip_prefix("offset=") {
                    StartPosition::Offset(n.parse().map_err(|_| bad())?)
                } else if let Some(t) = trimmed.strip_prefix("timestamp=") {
                    let seconds: u64 = t.parse().map_err(|_| bad())?;
                    StartPosition::Timestamp(seconds.checked_mul(1000).ok_or_else(bad)?)
                } else if let Some(ago) = trimmed.strip_prefix('-') {
                    StartPosition::Ago(parse_duration(ago).ok_or_else(bad)?)
                } else if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
                    StartPosition::Offset(trimmed.parse().map_err(|_| bad())?)
                } else {
                    return Err(bad());
                }
            }
        })
    }
}

/// A parsed stream filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamFilter {
    pub stream: String,
    /// Given in the filter itself (`@<position>`), MQTT 3.1.1's way.
    pub position: Option<StartPosition>,
    /// Over the original topics; `#` when the filter names only the stream.
    pub topics: Filter,
}

/// True for a core filter that names a stream.
pub fn is_stream_filter(raw: &str) -> bool {
    raw.starts_with(STREAM_PREFIX)
}

/// Parses `$stream/<name>[/@<position>][/<filter>]`; None when `raw` is not a
/// stream filter at all.
pub fn parse_stream_filter(raw: &str) -> Option<Result<StreamFilter, StreamError>> {
    let rest = raw.strip_prefix(STREAM_PREFIX)?;
    Some(parse_rest(raw, rest))
}

fn parse_rest(raw: &str, rest: &str) -> Result<StreamFilter, StreamError> {
    let (name, mut tail) = match rest.split_once('/') {
        Some((name, tail)) => (name, Some(tail)),
        None => (rest, None),
    };
    if !valid_name(name) {
        return Err(StreamError::BadFilter(raw.to_string()));
    }
    let mut position = None;
    if let Some(t) = tail {
        if let Some(after_at) = t.strip_prefix('@') {
            let (pos, more) = match after_at.split_once('/') {
                Some((pos, more)) => (pos, Some(more)),
                None => (after_at, None),
            };
            position = Some(pos.parse()?);
            tail = more;
        }
    }
    let topics = match tail {
        None | Some("") => "#",
        Some(t) => t,
    };
    let topics = Filter::parse(topics).map_err(|_| StreamError::BadFilter(raw.to_string()))?;
    if topics.share_group().is_some() {
        return Err(StreamError::BadFilter(raw.to_string()));
    }
    Ok(StreamFilter {
        stream: name.to_string(),
        position,
        topics,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_start_position_parses() {
        assert_eq!("first".parse(), Ok(StartPosition::First));
        assert_eq!("last".parse(), Ok(StartPosition::Last));
        assert_eq!("next".parse(), Ok(StartPosition::Next));
        assert_eq!("offset=42".parse(), Ok(StartPosition::Offset(42)));
        assert_eq!("42".parse(), Ok(StartPosition::Offset(42)));
        assert_eq!(
            "timestamp=1700000000".parse(),
            Ok(StartPosition::Timestamp(1_700_000_000_000))
        );
        assert_eq!(
            "-10m".parse(),
            Ok(StartPosition::Ago(Duration::from_secs(600)))
        );
        for bad in [
            "",
            "firstly",
            "offset=",
            "offset=-1",
            "timestamp=x",
            "-10x",
            "1.5",
        ] {
            assert_eq!(
                bad.parse::<StartPosition>(),
                Err(StreamError::BadPosition(bad.into())),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn stream_filters_name_the_stream_the_position_and_the_topics() {
        let f = parse_stream_filter("$stream/sensors").unwrap().unwrap();
        assert_eq!(
            (f.stream.as_str(), f.position, f.topics.as_str()),
            ("sensors", None, "#")
        );
        let f = parse_stream_filter("$stream/sensors/room1/+")
            .unwrap()
            .unwrap();
        assert_eq!(f.topics.as_str(), "room1/+");
        let f = parse_stream_filter("$stream/sensors/@offset=5/room1/#")
            .unwrap()
            .unwrap();
        assert_eq!(f.position, Some(StartPosition::Offset(5)));
        assert_eq!(f.topics.as_str(), "room1/#");
        let f = parse_stream_filter("$stream/sensors/@first")
            .unwrap()
            .unwrap();
        assert_eq!(
            (f.position, f.topics.as_str()),
            (Some(StartPosition::First), "#")
        );
        assert!(parse_stream_filter("sensors/#").is_none());
        assert!(matches!(
            parse_stream_filter("$stream/sensors/@soon/#"),
            Some(Err(StreamError::BadPosition(_)))
        ));
        assert!(matches!(
            parse_stream_filter("$stream/a+b/#"),
            Some(Err(StreamError::BadFilter(_)))
        ));
    }
}
