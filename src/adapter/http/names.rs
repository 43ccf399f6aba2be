//! HTTP paths and query strings ⇄ core names; pure functions.
//!
//! - `/v1/topics/{topic}`: the rest of the path is the core topic, its levels
//!   as path segments, each percent-decoded; `%2F` is also a `/`, so a level
//!   separator may be written either way, and empty levels and a leading `/`
//!   are written `%2F` (`/v1/topics/%2Fa//b` is topic `/a//b`). The topic must
//!   be UTF-8 and a valid topic name (not empty, no `+` or `#`, no NUL), within
//!   `limits.max_topic_levels` / `max_topic_length`.
//! - `/v1/queues/{q}/…`: `{q}` is one segment, percent-decoded; it is queue
//!   `{q}`, core topic `$queue/{q}` (STOMP `/queue/{q}`); `%2F` gives a `/` in
//!   the name. Not empty, no `+` or `#`.
//! - `/v1/events?topic={filter}`: the query value is a core filter (wildcards allowed).

use std::borrow::Cow;

use crate::core::queue::QUEUE_PREFIX;
use crate::core::topic::{validate_topic_name, Filter};
use crate::core::topic_limits::TopicLimits;

use super::reply::HttpError;

/// Percent-decodes `raw` (a path part) into UTF-8.
pub fn decode(raw: &str) -> Result<String, HttpError> {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(Cow::into_owned)
        .map_err(|_| HttpError::bad("the name is not UTF-8 once percent-decoded"))
}

/// The core topic of the path after `/v1/topics/` (publish: no wildcards).
pub fn topic_from_path(raw: &str, limits: &TopicLimits) -> Result<String, HttpError> {
    let topic = decode(raw)?;
    validate_topic_name(&topic)
        .map_err(|e| HttpError::bad(format!("invalid topic {:?}: {e}", shorten(&topic))))?;
    limits
        .check(&topic)
        .map_err(|e| HttpError::bad(format!("invalid topic {:?}: {e}", shorten(&topic))))?;
    Ok(topic)
}

/// The queue name of one path segment (after `/v1/queues/`).
pub fn queue_from_segment(raw: &str) -> Result<String, HttpError> {
    let name = decode(raw)?;
    if name.is_empty() {
        return Err(HttpError::bad("invalid queue name: empty"));
    }
    if name.contains(['+', '#', '\0']) {
        return Err(HttpError::bad(format!(
            "invalid queue name {:?}: no '+', '#' or NUL in a queue name",
            shorten(&name)
        )));
    }
    Ok(name)
}

/// The core topic of queue `name`.
pub fn queue_topic(name: &str) -> String {
    format!("{QUEUE_PREFIX}{name}")
}

/// A subscription filter from a query value (server-sent events).
pub fn filter_from_query(raw: &str, limits: &TopicLimits) -> Result<Filter, HttpError> {
    let filter = Filter::parse(raw)
        .map_err(|e| HttpError::bad(format!("invalid topic filter {:?}: {e}", shorten(raw))))?;
    limits
        .check_filter(&filter)
        .map_err(|e| HttpError::bad(format!("invalid topic filter {:?}: {e}", shorten(raw))))?;
    Ok(filter)
}

/// At most 200 characters of a name, for error messages.
pub fn shorten(name: &str) -> String {
    name.chars().take(200).collect()
}

/// A request's query parameters, decoded, in order, repeats kept.
#[derive(Debug, Default)]
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(query: Option<&str>) -> Query {
        Query(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }

    /// A whole number parameter, or `default` when absent; 400 naming it when not a number.
    pub fn number(&self, name: &str, default: u64) -> Result<u64, HttpError> {
        match self.get(name) {
            None => Ok(default),
            Some(value) => value.trim().parse::<u64>().map_err(|_| {
                HttpError::bad(format!(
                    "query parameter {name}={:?}: must be a whole number",
                    shorten(value)
                ))
            }),
        }
    }

    /// Refuses a parameter not in `known` (and not starting with `property.`
    /// when `properties`), so a typo is a 400, not a silently ignored option.
    pub fn only(&self, known: &[&str], properties: bool) -> Result<(), HttpError> {
        for (name, _) in &self.0 {
            let ok =
                known.contains(&name.as_str()) || (properties && name.starts_with("property."));
            if !ok {
                return Err(HttpError::bad(format!(
                    "unknown query parameter {:?} (known: {})",
                    shorten(name),
                    known.join(", ")
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> TopicLimits {
        TopicLimits {
            max_levels: 8,
            max_length: 100,
        }
    }

    #[test]
    fn path_segments_are_topic_levels_and_percent_2f_is_a_slash_too() {
        let l = limits();
        assert_eq!(
            topic_from_path("sensors/room1/temp", &l).unwrap(),
            "sensors/room1/temp"
        );
        assert_eq!(topic_from_path("a%2Fb/c", &l).unwrap(), "a/b/c");
        assert_eq!(topic_from_path("%2Fa//b", &l).unwrap(), "/a//b");
        assert_eq!(
            topic_from_path("caf%C3%A9%20au%20lait", &l).unwrap(),
            "café au lait"
        );
    }

    #[test]
    fn invalid_topics_name_the_rule() {
        let l = limits();
        let wildcard = topic_from_path("a/%2B/b", &l).unwrap_err().to_string();
        assert!(wildcard.contains("wildcard"), "{wildcard}");
        assert!(topic_from_path("a/#", &l).is_err());
        assert!(topic_from_path("", &l)
            .unwrap_err()
            .to_string()
            .contains("empty"));
        assert!(topic_from_path("%FF", &l)
            .unwrap_err()
            .to_string()
            .contains("UTF-8"));
        assert!(topic_from_path("a%00b", &l).is_err());
        let deep = topic_from_path("1/2/3/4/5/6/7/8/9", &l)
            .unwrap_err()
            .to_string();
        assert!(deep.contains("levels"), "{deep}");
    }

    #[test]
    fn a_queue_is_one_segment() {
        assert_eq!(queue_from_segment("jobs").unwrap(), "jobs");
        assert_eq!(queue_from_segment("a%2Fb").unwrap(), "a/b");
        assert!(queue_from_segment("").is_err());
        assert!(queue_from_segment("a%2B").is_err());
        assert_eq!(queue_topic("jobs"), "$queue/jobs");
    }

    #[test]
    fn query_keeps_repeats_and_refuses_unknown_names() {
        let q = Query::parse(Some("topic=a%2Fb&topic=c/%23&max=5&property.x=1"));
        assert_eq!(q.all("topic").collect::<Vec<_>>(), ["a/b", "c/#"]);
        assert_eq!(q.number("max", 1).unwrap(), 5);
        assert_eq!(q.number("wait", 7).unwrap(), 7);
        assert!(q.only(&["topic", "max"], true).is_ok());
        assert!(q.only(&["topic", "max"], false).is_err());
        assert!(Query::parse(Some("max=x")).number("max", 1).is_err());
    }
}
