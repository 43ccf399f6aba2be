//! `[[stream]]`: a durable stream declared in the config file, and the
//! parsing of its retention limits (`max_age = "7d"`, `max_bytes = "10GiB"`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::core::topic::Filter;

/// One `[[stream]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSettings {
    /// One topic level: `/stream/<name>` (STOMP), `$stream/<name>/…` (MQTT).
    pub name: String,
    /// Topic filters whose messages the stream keeps.
    pub topics: Vec<String>,
    /// Oldest message kept, as a duration (`"30s"`, `"10m"`, `"12h"`, `"7d"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
    /// Most messages kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_messages: Option<u64>,
    /// Most topic plus payload bytes kept (`"512MiB"`, `"10GiB"`, `"1000000"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<String>,
}

/// A stream's retention limits; none set keeps everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    pub max_age: Option<Duration>,
    pub max_messages: Option<u64>,
    pub max_bytes: Option<u64>,
}

/// A `[[stream]]` table that cannot be used, naming the key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("stream {stream:?}: `{key}` {reason}")]
pub struct StreamSettingsError {
    pub stream: String,
    pub key: &'static str,
    pub reason: String,
}

impl StreamSettings {
    fn error(&self, key: &'static str, reason: impl Into<String>) -> StreamSettingsError {
        StreamSettingsError {
            stream: self.name.clone(),
            key,
            reason: reason.into(),
        }
    }

    /// Checks the name, the filters and the limits.
    pub fn check(&self) -> Result<(Vec<Filter>, Retention), StreamSettingsError> {
        if !valid_name(&self.name) {
            return Err(self.error(
                "name",
                "must be one topic level: not empty, without '/', '+', '#', '@' or '$' first",
            ));
        }
        if self.topics.is_empty() {
            return Err(self.error("topics", "must name at least one topic filter"));
        }
        let mut filters = Vec::with_capacity(self.topics.len());
        for topic in &self.topics {
            let filter = Filter::parse(topic)
                .map_err(|e| self.error("topics", format!("{topic:?} is not a filter: {e}")))?;
            if filter.share_group().is_some() {
                return Err(self.error("topics", format!("{topic:?} is a shared subscription")));
            }
            filters.push(filter);
        }
        let max_age = match &self.max_age {
            None => None,
            Some(text) => Some(parse_duration(text).ok_or_else(|| {
                self.error("max_age", format!("{text:?} is not a duration like \"7d\""))
            })?),
        };
        let max_bytes = match &self.max_bytes {
            None => None,
            Some(text) => Some(parse_size(text).ok_or_else(|| {
                self.error(
                    "max_bytes",
                    format!("{text:?} is not a size like \"10GiB\""),
                )
            })?),
        };
        if self.max_messages == Some(0) || max_bytes == Some(0) || max_age == Some(Duration::ZERO) {
            return Err(self.error("max_*", "a limit of 0 would keep nothing"));
        }
        Ok((
            filters,
            Retention {
                max_age,
                max_messages: self.max_messages,
                max_bytes,
            },
        ))
    }
}

/// A stream name is one topic level a filter can hold.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('$')
        && !name.contains(['/', '+', '#', '@', '\0'])
}

/// `"500ms"`, `"30s"`, `"10m"`, `"12h"`, `"7d"`, `"2w"`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let seconds = match unit.trim() {
        "ms" => return Some(Duration::from_millis(n)),
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return None,
    };
    n.checked_mul(seconds).map(Duration::from_secs)
}

/// `"1000"`, `"64KB"`, `"64KiB"`, `"512MB"`, `"10GiB"`, `"1TiB"` (case-insensitive).
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" => 1 << 10,
        "mb" => 1_000_000,
        "mib" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(name: &str, topics: &[&str]) -> StreamSettings {
        StreamSettings {
            name: name.into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            max_age: None,
            max_messages: None,
            max_bytes: None,
        }
    }

    #[test]
    fn durations_and_sizes_parse_with_their_units() {
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("10m"), Some(Duration::from_secs(600)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("45"), Some(Duration::from_secs(45)));
        assert_eq!(parse_duration("7 days"), None);
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_size("10GiB"), Some(10 << 30));
        assert_eq!(parse_size("64kb"), Some(64_000));
        assert_eq!(parse_size("1000"), Some(1000));
        assert_eq!(parse_size("1.5GB"), None);
    }

    #[test]
    fn a_bad_table_names_the_key() {
        let mut s = stream("a/b", &["x/#"]);
        assert_eq!(s.check().unwrap_err().key, "name");
        s = stream("sensors", &[]);
        assert_eq!(s.check().unwrap_err().key, "topics");
        s = stream("sensors", &["a/#/b"]);
        assert_eq!(s.check().unwrap_err().key, "topics");
        s = stream("sensors", &["sensors/#"]);
        s.max_age = Some("a week".into());
        assert_eq!(s.check().unwrap_err().key, "max_age");
        s.max_age = Some("7d".into());
        s.max_bytes = Some("lots".into());
        assert_eq!(s.check().unwrap_err().key, "max_bytes");
        s.max_bytes = Some("10GiB".into());
        let (filters, retention) = s.check().unwrap();
        assert_eq!(filters.len(), 1);
        assert_eq!(retention.max_bytes, Some(10 << 30));
    }
}
