//! The content model: a message as selectors (filter on subscribe) and schemas
//! (validate on publish) see it. Names, not protocols: a STOMP custom header
//! and an MQTT 5 user property are both a "property" here.
//!
//! The JSON payload is parsed lazily, at most once per message, and only when
//! something asks for a `payload.<path>` field; a caller that parsed it
//! already (schema validation on publish) hands it over with
//! [`MessageView::with_json`], so one parse serves both.

use std::borrow::Cow;
use std::cell::OnceCell;

use crate::core::message::Message;

/// One message seen through the content model; lives for one publish.
#[derive(Debug)]
pub struct MessageView<'a> {
    message: &'a Message,
    /// `Some(None)`: parsed, not JSON. Unset: not parsed yet.
    json: OnceCell<Option<serde_json::Value>>,
}

/// What a name evaluates to for one message; `Null` when it is missing.
#[derive(Debug, Clone, PartialEq)]
pub enum ContentValue<'a> {
    Null,
    Bool(bool),
    Number(f64),
    Str(Cow<'a, str>),
}

impl<'a> MessageView<'a> {
    pub fn new(message: &'a Message) -> MessageView<'a> {
        MessageView {
            message,
            json: OnceCell::new(),
        }
    }

    /// A view whose payload was parsed already (`None`: it is not JSON), so
    /// it is not parsed again.
    pub fn with_json(message: &'a Message, json: Option<serde_json::Value>) -> MessageView<'a> {
        MessageView {
            message,
            json: OnceCell::from(json),
        }
    }

    pub fn message(&self) -> &'a Message {
        self.message
    }

    /// The payload as JSON, parsed on first use; None when it is not JSON.
    pub fn json(&self) -> Option<&serde_json::Value> {
        self.json
            .get_or_init(|| serde_json::from_slice(&self.message.payload).ok())
            .as_ref()
    }

    /// True once the payload was parsed (or handed over with [`MessageView::with_json`]).
    pub fn json_parsed(&self) -> bool {
        self.json.get().is_some()
    }

    /// The value of one content field for this message.
    pub fn get(&self, field: &Field) -> ContentValue<'_> {
        let message = self.message;
        let properties = message.properties();
        match field {
            Field::Topic => ContentValue::Str(Cow::Borrowed(&message.topic)),
            Field::TopicLevel(index) => match message.topic.split('/').nth(*index) {
                Some(level) => ContentValue::Str(Cow::Borrowed(level)),
                None => ContentValue::Null,
            },
            Field::Qos => ContentValue::Number(f64::from(message.qos as u8)),
            Field::Retain => ContentValue::Bool(message.retain),
            Field::ContentType => optional_str(properties.content_type.as_deref()),
            Field::CorrelationId => match properties.correlation_data.as_deref() {
                Some(bytes) => match std::str::from_utf8(bytes) {
                    Ok(text) => ContentValue::Str(Cow::Borrowed(text)),
                    Err(_) => ContentValue::Null,
                },
                None => ContentValue::Null,
            },
            Field::ResponseTopic => optional_str(properties.response_topic.as_deref()),
            Field::PayloadSize => ContentValue::Number(message.payload.len() as f64),
            Field::Payload(path) => {
                let mut value = match self.json() {
                    Some(value) => value,
                    None => return ContentValue::Null,
                };
                for segment in path {
                    value = match value {
                        serde_json::Value::Object(map) => match map.get(segment.as_str()) {
                            Some(inner) => inner,
                            None => return ContentValue::Null,
                        },
                        serde_json::Value::Array(items) => {
                            match segment.parse::<usize>().ok().and_then(|i| items.get(i)) {
                                Some(inner) => inner,
                                None => return ContentValue::Null,
                            }
                        }
                        _ => return ContentValue::Null,
                    };
                }
                match value {
                    serde_json::Value::Bool(b) => ContentValue::Bool(*b),
                    serde_json::Value::Number(n) => match n.as_f64() {
                        Some(f) if f.is_finite() => ContentValue::Number(f),
                        _ => ContentValue::Null,
                    },
                    serde_json::Value::String(s) => ContentValue::Str(Cow::Borrowed(s)),
                    // null, objects and arrays are not comparable values.
                    _ => ContentValue::Null,
                }
            }
            Field::Property(name) => {
                match properties
                    .user_properties
                    .iter()
                    .find(|(key, _)| key == name)
                {
                    Some((_, value)) => ContentValue::Str(Cow::Borrowed(value)),
                    None => ContentValue::Null,
                }
            }
        }
    }
}

fn optional_str(value: Option<&str>) -> ContentValue<'_> {
    match value {
        Some(text) => ContentValue::Str(Cow::Borrowed(text)),
        None => ContentValue::Null,
    }
}

/// A name of the content model. The reserved names (see [`Field::from_name`])
/// come first; every other name is a user property / custom header.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Field {
    /// `topic`: the whole topic.
    Topic,
    /// `topic.<n>`: level n of the topic, from 0 (`topic.1` of `a/b/c` is `b`).
    TopicLevel(usize),
    /// `qos`: 0, 1 or 2.
    Qos,
    /// `retain`: TRUE or FALSE.
    Retain,
    /// `content-type` / `content_type`.
    ContentType,
    /// `correlation-id` / `correlation_id` (NULL when not UTF-8).
    CorrelationId,
    /// `reply-to` / `response-topic` / `response_topic`.
    ResponseTopic,
    /// `payload-size` / `payload_size`: bytes.
    PayloadSize,
    /// `payload.<a>.<b>`: a field of a JSON payload (array items by index).
    Payload(Vec<String>),
    /// Any other name: a user property / custom header (its first value).
    Property(String),
}

impl Field {
    /// The field a bare name stands for; None when it is malformed (an empty
    /// `payload.` path segment, say).
    pub fn from_name(name: &str) -> Option<Field> {
        let field = match name {
            "topic" => Field::Topic,
            "qos" => Field::Qos,
            "retain" => Field::Retain,
            "content-type" | "content_type" => Field::ContentType,
            "correlation-id" | "correlation_id" => Field::CorrelationId,
            "reply-to" | "response-topic" | "response_topic" => Field::ResponseTopic,
            "payload-size" | "payload_size" => Field::PayloadSize,
            _ => {
                if let Some(path) = name.strip_prefix("payload.") {
                    let segments: Vec<String> = path.split('.').map(str::to_owned).collect();
                    if segments.iter().any(String::is_empty) {
                        return None;
                    }
                    Field::Payload(segments)
                } else if let Some(level) = name.strip_prefix("topic.") {
                    Field::TopicLevel(level.parse().ok()?)
                } else {
                    Field::Property(name.to_owned())
                }
            }
        };
        Some(field)
    }

    /// The canonical bare name of a reserved field; None for a property.
    pub fn canonical_name(&self) -> Option<String> {
        Some(match self {
            Field::Topic => "topic".to_owned(),
            Field::TopicLevel(n) => format!("topic.{n}"),
            Field::Qos => "qos".to_owned(),
            Field::Retain => "retain".to_owned(),
            Field::ContentType => "content-type".to_owned(),
            Field::CorrelationId => "correlation-id".to_owned(),
            Field::ResponseTopic => "reply-to".to_owned(),
            Field::PayloadSize => "payload-size".to_owned(),
            Field::Payload(path) => format!("payload.{}", path.join(".")),
            Field::Property(_) => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::message::{MessageProperties, QoS};
    use bytes::Bytes;

    fn message(payload: &str) -> Message {
        let mut message = Message::new(
            "sensors/room1/temp",
            Bytes::copy_from_slice(payload.as_bytes()),
            QoS::AtLeastOnce,
            true,
        );
        message.properties = MessageProperties {
            content_type: Some("application/json".into()),
            response_topic: Some("replies/1".into()),
            correlation_data: Some(Bytes::from_static(b"abc")),
            user_properties: vec![("x-kind".into(), "a".into()), ("x-kind".into(), "b".into())],
            ..MessageProperties::NONE
        }
        .shared();
        message
    }

    fn field(name: &str) -> Field {
        Field::from_name(name).unwrap()
    }

    #[test]
    fn every_reserved_name_reads_its_part_of_the_message() {
        let message = message(r#"{"temp": 21.5, "device": {"id": "d1"}, "list": [1, 2]}"#);
        let view = MessageView::new(&message);
        let s = |v: &str| ContentValue::Str(Cow::Owned(v.to_owned()));
        assert_eq!(view.get(&field("topic")), s("sensors/room1/temp"));
        assert_eq!(view.get(&field("topic.1")), s("room1"));
        assert_eq!(view.get(&field("topic.7")), ContentValue::Null);
        assert_eq!(view.get(&field("qos")), ContentValue::Number(1.0));
        assert_eq!(view.get(&field("retain")), ContentValue::Bool(true));
        assert_eq!(view.get(&field("content_type")), s("application/json"));
        assert_eq!(view.get(&field("content-type")), s("application/json"));
        assert_eq!(view.get(&field("correlation-id")), s("abc"));
        assert_eq!(view.get(&field("reply-to")), s("replies/1"));
        assert_eq!(
            view.get(&field("x-kind")),
            s("a"),
            "first value of a repeated property"
        );
        assert_eq!(view.get(&field("missing")), ContentValue::Null);
        assert!(!view.json_parsed(), "no payload field asked for yet");
        assert_eq!(
            view.get(&field("payload-size")),
            ContentValue::Number(message.payload.len() as f64)
        );
        assert!(!view.json_parsed());
        assert_eq!(view.get(&field("payload.temp")), ContentValue::Number(21.5));
        assert!(view.json_parsed());
        assert_eq!(view.get(&field("payload.device.id")), s("d1"));
        assert_eq!(
            view.get(&field("payload.list.1")),
            ContentValue::Number(2.0)
        );
        assert_eq!(view.get(&field("payload.device")), ContentValue::Null);
        assert_eq!(view.get(&field("payload.nothing.here")), ContentValue::Null);
    }

    #[test]
    fn a_payload_that_is_not_json_has_no_fields() {
        let message = message("not json {");
        let view = MessageView::new(&message);
        assert_eq!(view.get(&field("payload.temp")), ContentValue::Null);
        assert!(view.json().is_none());
    }

    #[test]
    fn a_json_value_handed_over_is_used_instead_of_parsing() {
        // The payload is not JSON: a value found must be the one handed over.
        let message = message("not json {");
        let view = MessageView::with_json(&message, Some(serde_json::json!({"temp": 3})));
        assert!(view.json_parsed());
        assert_eq!(view.get(&field("payload.temp")), ContentValue::Number(3.0));
    }

    #[test]
    fn malformed_names_are_refused() {
        assert_eq!(Field::from_name("payload."), None);
        assert_eq!(Field::from_name("payload.a..b"), None);
        assert_eq!(Field::from_name("topic.x"), None);
    }
}
