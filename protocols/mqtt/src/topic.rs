//! Topic name checks shared by PUBLISH and the CONNECT will.

use crate::error::DecodeError;

/// A topic name (not filter) must be non-empty and free of wildcards [MQTT-4.7.3-1, MQTT-3.3.2-2].
pub(crate) fn check_topic_name(topic: &str) -> Result<(), DecodeError> {
    if topic.is_empty() {
        return Err(DecodeError::TopicNameInvalid("empty topic name"));
    }
    if topic.contains(['+', '#']) {
        return Err(DecodeError::TopicNameInvalid("wildcard in topic name"));
    }
    Ok(())
}
