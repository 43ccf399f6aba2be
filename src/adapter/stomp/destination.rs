//! STOMP destinations ⇄ core topics and filters: small pure functions.
//!
//! Rules, every one of them:
//! - `/topic/<t>` is the core topic `<t>`: `/topic/sensors/room1/temp` ⇄
//!   `sensors/room1/temp`. `<t>` follows the core topic rules (non-empty, levels
//!   split on `/`, empty levels allowed, no NUL, at most 65535 bytes).
//! - In SEND, `<t>` must be a topic name: `+` and `#` are refused
//!   (`/topic/a/+` → error "SEND to a wildcard topic").
//! - In SUBSCRIBE, `<t>` is a filter: MQTT wildcards work (`/topic/sensors/+/temp`,
//!   `/topic/sensors/#`), as do shared subscriptions (`/topic/$share/g/jobs/#`).
//! - `/queue/<q>` is the point-to-point queue `<q>`, which is the core topic
//!   `$queue/<q>` (what MQTT clients use): `/queue/jobs` ⇄ `$queue/jobs`. `<q>` is
//!   a non-empty topic name without wildcards, in SEND and SUBSCRIBE alike.
//! - `/topic/$queue/...` is refused: a queue is named `/queue/...`, so one core
//!   name has one STOMP spelling.
//! - Any other destination (no prefix, `/exchange/x`, `/temp-queue/x`, `/topic/`
//!   with nothing after it) is refused with an error naming the known prefixes.
//! - Back to STOMP (MESSAGE `destination`, `reply-to`): core topic `$queue/<q>` →
//!   `/queue/<q>`, any other core topic `<t>` → `/topic/<t>`.
//! - `reply-to` on SEND uses the same two prefixes and becomes the core response
//!   topic (MQTT 5 response topic), so `/topic/replies/7` ⇄ `replies/7`.

use std::sync::Arc;

use crate::core::queue::{queue_name, QUEUE_PREFIX};
use crate::core::topic::{validate_topic_name, Filter, TopicError};

pub(super) const TOPIC_PREFIX: &str = "/topic/";
pub(super) const QUEUE_DEST_PREFIX: &str = "/queue/";

/// Why a destination cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    #[error("unknown destination {0:?}: use /topic/<name> or /queue/<name>")]
    UnknownPrefix(String),
    #[error("SEND to a wildcard topic {0:?}: '+' and '#' are only allowed in SUBSCRIBE")]
    WildcardInSend(String),
    #[error("invalid queue name in {0:?}: it must be non-empty and contain no '+' or '#'")]
    InvalidQueue(String),
    #[error("invalid destination {destination:?}: {reason}")]
    Invalid {
        destination: String,
        reason: TopicError,
    },
    #[error("destination {0:?} addresses a queue as a topic: use /queue/<name>")]
    QueueAsTopic(String),
    /// Over `limits.max_topic_levels` / `max_topic_length` (the destination is
    /// shortened: it may be 64 KB).
    #[error("destination {destination:?}...: {reason}")]
    OverLimit {
        destination: String,
        reason: crate::core::topic_limits::TopicLimitError,
    },
}

impl DestinationError {
    pub(super) fn over_limit(
        destination: &str,
        reason: crate::core::topic_limits::TopicLimitError,
    ) -> DestinationError {
        DestinationError::OverLimit {
            destination: destination.chars().take(64).collect(),
            reason,
        }
    }
}

/// What a subscription destination maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target {
    /// A topic filter, wildcards allowed.
    Topic(Filter),
    /// A queue; the filter is `$queue/<name>`.
    Queue { name: Arc<str>, filter: Filter },
}

impl Target {
    pub(super) fn filter(&self) -> &Filter {
        match self {
            Target::Topic(filter) | Target::Queue { filter, .. } => filter,
        }
    }
}

/// The core topic a SEND goes to.
pub(super) fn send_topic(destination: &str) -> Result<String, DestinationError> {
    if let Some(topic) = destination.strip_prefix(TOPIC_PREFIX) {
        if topic.starts_with(QUEUE_PREFIX) {
            return Err(DestinationError::QueueAsTopic(destination.to_string()));
        }
        return match validate_topic_name(topic) {
            Ok(()) => Ok(topic.to_string()),
            Err(TopicError::WildcardInName) => {
                Err(DestinationError::WildcardInSend(destination.to_string()))
            }
            Err(reason) => Err(DestinationError::Invalid {
                destination: destination.to_string(),
                reason,
            }),
        };
    }
    if let Some(name) = destination.strip_prefix(QUEUE_DEST_PREFIX) {
        return queue_topic(destination, name);
    }
    Err(DestinationError::UnknownPrefix(destination.to_string()))
}

/// What a SUBSCRIBE destination subscribes to.
pub(super) fn subscribe_target(destination: &str) -> Result<Target, DestinationError> {
    if let Some(filter) = destination.strip_prefix(TOPIC_PREFIX) {
        if filter.starts_with(QUEUE_PREFIX) {
            return Err(DestinationError::QueueAsTopic(destination.to_string()));
        }
        return Filter::parse(filter).map(Target::Topic).map_err(|reason| {
            DestinationError::Invalid {
                destination: destination.to_string(),
                reason,
            }
        });
    }
    if let Some(name) = destination.strip_prefix(QUEUE_DEST_PREFIX) {
        let topic = queue_topic(destination, name)?;
        let filter = Filter::parse(&topic).map_err(|reason| DestinationError::Invalid {
            destination: destination.to_string(),
            reason,
        })?;
        return Ok(Target::Queue {
            name: Arc::from(name),
            filter,
        });
    }
    Err(DestinationError::UnknownPrefix(destination.to_string()))
}

/// `$queue/<name>` after checking the name.
fn queue_topic(destination: &str, name: &str) -> Result<String, DestinationError> {
    let topic = format!("{QUEUE_PREFIX}{name}");
    if queue_name(&topic).is_none() {
        return Err(DestinationError::InvalidQueue(destination.to_string()));
    }
    validate_topic_name(&topic).map_err(|reason| DestinationError::Invalid {
        destination: destination.to_string(),
        reason,
    })?;
    Ok(topic)
}

/// The STOMP destination of a core topic (MESSAGE `destination`, `reply-to`).
pub(super) fn destination_of(topic: &str) -> String {
    match queue_name(topic) {
        Some(name) => format!("{QUEUE_DEST_PREFIX}{name}"),
        None => format!("{TOPIC_PREFIX}{topic}"),
    }
}

/// The core response topic of a `reply-to` header: same rules as SEND.
pub(super) fn reply_topic(reply_to: &str) -> Result<String, DestinationError> {
    send_topic(reply_to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_destinations_map_to_core_topics_and_back() {
        assert_eq!(
            send_topic("/topic/sensors/room1/temp").unwrap(),
            "sensors/room1/temp"
        );
        assert_eq!(send_topic("/topic//a/").unwrap(), "/a/");
        assert_eq!(
            destination_of("sensors/room1/temp"),
            "/topic/sensors/room1/temp"
        );
        assert_eq!(destination_of("$SYS/x"), "/topic/$SYS/x");
    }

    #[test]
    fn queue_destinations_map_to_dollar_queue_and_back() {
        assert_eq!(send_topic("/queue/jobs").unwrap(), "$queue/jobs");
        assert_eq!(send_topic("/queue/a/b").unwrap(), "$queue/a/b");
        assert_eq!(destination_of("$queue/jobs"), "/queue/jobs");
        match subscribe_target("/queue/jobs").unwrap() {
            Target::Queue { name, filter } => {
                assert_eq!(&*name, "jobs");
                assert_eq!(filter.as_str(), "$queue/jobs");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn send_refuses_wildcards_and_unknown_prefixes() {
        assert!(matches!(
            send_topic("/topic/a/+"),
            Err(DestinationError::WildcardInSend(_))
        ));
        assert!(matches!(
            send_topic("/topic/#"),
            Err(DestinationError::WildcardInSend(_))
        ));
        for bad in [
            "jobs",
            "/exchange/x",
            "/temp-queue/x",
            "/topic",
            "/queue",
            "",
        ] {
            assert!(
                matches!(send_topic(bad), Err(DestinationError::UnknownPrefix(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            send_topic("/topic/"),
            Err(DestinationError::Invalid { .. })
        ));
        assert!(matches!(
            send_topic("/queue/"),
            Err(DestinationError::InvalidQueue(_))
        ));
        assert!(matches!(
            send_topic("/queue/a/+"),
            Err(DestinationError::InvalidQueue(_))
        ));
        assert!(matches!(
            send_topic("/topic/$queue/jobs"),
            Err(DestinationError::QueueAsTopic(_))
        ));
    }

    #[test]
    fn subscribe_allows_wildcards_on_topics_only() {
        assert_eq!(
            subscribe_target("/topic/sensors/+/temp")
                .unwrap()
                .filter()
                .as_str(),
            "sensors/+/temp"
        );
        assert_eq!(subscribe_target("/topic/#").unwrap().filter().as_str(), "#");
        assert!(subscribe_target("/topic/a/#/b").is_err());
        assert!(subscribe_target("/queue/#").is_err());
        assert!(subscribe_target("/queue/").is_err());
        assert!(subscribe_target("/elsewhere/x").is_err());
    }

    #[test]
    fn reply_to_uses_the_same_prefixes() {
        assert_eq!(reply_topic("/topic/replies/7").unwrap(), "replies/7");
        assert_eq!(reply_topic("/queue/replies").unwrap(), "$queue/replies");
        assert!(reply_topic("/temp-queue/x").is_err());
    }
}
