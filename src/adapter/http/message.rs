//! HTTP ⇄ core message properties, both ways; pure functions.
//!
//! A publish (`POST /v1/topics/{topic}`, `POST /v1/request/{topic}`) takes its
//! properties from query parameters or headers, with the names STOMP headers
//! have (a query parameter wins over a header):
//!
//! | property           | query parameter   | header                    | default |
//! |--------------------|-------------------|---------------------------|---------|
//! | QoS (0, 1, 2)      | `qos`             | `Tern-QoS`                | 1       |
//! | retain             | `retain`          | `Tern-Retain`             | false   |
//! | expiry, ms since the Unix epoch (STOMP `expires`) | `expires` | `Tern-Expires` | none |
//! | expiry, seconds from now (MQTT 5 interval) | `expiry` | `Tern-Expiry`  | none    |
//! | content type       | `content-type`    | `Content-Type`            | none    |
//! | correlation data   | `correlation-id`  | `Tern-Correlation-Id`     | none    |
//! | response topic     | `reply-to`        | `Tern-Reply-To`           | none    |
//! | user property `n`  | `property.n`      | `Tern-Property-n`         | none    |
//!
//! The response topic is a core topic (as in MQTT). Header names are
//! case-insensitive, so a user property from a header has a lower-case name.
//!
//! A message out (pull, server-sent events) is a JSON object: `topic`,
//! `payload` (UTF-8 text, or base64 when `encoding` is `"base64"`), `qos`,
//! `retain`, and when set `content_type`, `correlation_id` (text, or base64
//! with `correlation_encoding: "base64"`), `response_topic`, `expiry` (seconds
//! left), `user_properties` (`[[name, value], …]`).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use hyper::header::{HeaderMap, CONTENT_TYPE};

use super::names::{shorten, Query};
use super::reply::HttpError;
use crate::core::message::{Message, MessageProperties, QoS};

/// Query parameters a publish understands (besides `property.<name>`).
pub const PUBLISH_PARAMS: [&str; 7] = [
    "qos",
    "retain",
    "expires",
    "expiry",
    "content-type",
    "correlation-id",
    "reply-to",
];

const HEADER_PREFIX: &str = "tern-property-";

/// What a publish asks for besides its topic and payload.
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    pub qos: Option<QoS>,
    pub retain: bool,
    pub expires_at: Option<Instant>,
    pub properties: MessageProperties,
}

fn invalid(name: &str, value: &str, rule: &str) -> HttpError {
    HttpError::bad(format!("{name}={:?}: {rule}", shorten(value)))
}

pub fn parse_qos(name: &str, value: &str) -> Result<QoS, HttpError> {
    value
        .trim()
        .parse::<u8>()
        .ok()
        .and_then(QoS::from_u8)
        .ok_or_else(|| invalid(name, value, "must be 0, 1 or 2"))
}

fn parse_bool(name: &str, value: &str) -> Result<bool, HttpError> {
    match value.trim() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(invalid(name, value, "must be true or false")),
    }
}

/// `expires` (ms since the Unix epoch; 0: never) as a core expiry.
fn expires_at(name: &str, value: &str) -> Result<Option<Instant>, HttpError> {
    let ms = value
        .trim()
        .parse::<u64>()
        .map_err(|_| invalid(name, value, "must be milliseconds since the Unix epoch"))?;
    if ms == 0 {
        return Ok(None);
    }
    let now = Instant::now();
    let at = UNIX_EPOCH + Duration::from_millis(ms);
    Ok(match at.duration_since(SystemTime::now()) {
        Ok(left) => now.checked_add(left),
        Err(_) => Some(now),
    })
}

fn expiry_interval(name: &str, value: &str) -> Result<Option<Instant>, HttpError> {
    let secs = value
        .trim()
        .parse::<u32>()
        .map_err(|_| invalid(name, value, "must be whole seconds"))?;
    Ok(Message::expiry_from_interval(secs))
}

/// The options of a publish from its query and headers (the query wins).
pub fn options_from(query: &Query, headers: &HeaderMap) -> Result<PublishOptions, HttpError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let pick = |param: &'static str, head: &'static str| -> Option<(&'static str, String)> {
        if let Some(v) = query.get(param) {
            return Some((param, v.to_string()));
        }
        header(head).map(|v| (head, v.to_string()))
    };
    let mut options = PublishOptions::default();
    if let Some((name, v)) = pick("qos", "tern-qos") {
        options.qos = Some(parse_qos(name, &v)?);
    }
    if let Some((name, v)) = pick("retain", "tern-retain") {
        options.retain = parse_bool(name, &v)?;
    }
    if let Some((name, v)) = pick("expires", "tern-expires") {
        options.expires_at = expires_at(name, &v)?;
    }
    if let Some((name, v)) = pick("expiry", "tern-expiry") {
        options.expires_at = expiry_interval(name, &v)?;
    }
    let props = &mut options.properties;
    props.content_type = query.get("content-type").map(str::to_string).or_else(|| {
        headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    });
    props.correlation_data =
        pick("correlation-id", "tern-correlation-id").map(|(_, v)| Bytes::from(v.into_bytes()));
    if let Some((name, v)) = pick("reply-to", "tern-reply-to") {
        crate::core::topic::validate_topic_name(&v)
            .map_err(|e| invalid(name, &v, &format!("not a topic name: {e}")))?;
        props.response_topic = Some(v);
    }
    for (name, value) in query.pairs() {
        if let Some(key) = name.strip_prefix("property.") {
            props.user_properties.push((key.to_string(), value.clone()));
        }
    }
    for (name, value) in headers {
        if let Some(key) = name.as_str().strip_prefix(HEADER_PREFIX) {
            let value = value
                .to_str()
                .map_err(|_| HttpError::bad(format!("header {name}: not visible ASCII")))?;
            props
                .user_properties
                .push((key.to_string(), value.to_string()));
        }
    }
    Ok(options)
}

/// The core message of a publish.
pub fn build(
    topic: String,
    payload: Bytes,
    options: PublishOptions,
    publisher: &Arc<str>,
) -> Message {
    Message {
        topic: Arc::from(topic),
        payload,
        qos: options.qos.unwrap_or(QoS::AtLeastOnce),
        retain: options.retain,
        expires_at: options.expires_at,
        properties: options.properties.shared(),
        publisher: Some(Arc::clone(publisher)),
    }
}

/// One line of an NDJSON batch (`POST /v1/publish`).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchLine {
    pub topic: String,
    #[serde(default)]
    pub payload: Option<String>,
    /// `"base64"`: `payload` is base64.
    #[serde(default)]
    pub encoding: Option<String>,
    #[serde(default)]
    pub qos: Option<u8>,
    #[serde(default)]
    pub retain: bool,
    /// Seconds from now.
    #[serde(default)]
    pub expiry: Option<u32>,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub correlation_id: Option<String>,
    #[serde(default)]
    pub response_topic: Option<String>,
    #[serde(default)]
    pub user_properties: Vec<(String, String)>,
}

impl BatchLine {
    /// The payload and options of the line (its topic is checked by the caller).
    pub fn into_parts(self) -> Result<(String, Bytes, PublishOptions), HttpError> {
        let payload = match (self.payload, self.encoding.as_deref()) {
            (None, _) => Bytes::new(),
            (Some(text), None | Some("utf8") | Some("text")) => Bytes::from(text.into_bytes()),
            (Some(text), Some("base64")) => base64::engine::general_purpose::STANDARD
                .decode(text.as_bytes())
                .map(Bytes::from)
                .map_err(|e| HttpError::bad(format!("payload: invalid base64: {e}")))?,
            (Some(_), Some(other)) => {
                return Err(invalid("encoding", other, "must be base64 or utf8"));
            }
        };
        let qos = match self.qos {
            None => None,
            Some(q) => Some(
                QoS::from_u8(q)
                    .ok_or_else(|| invalid("qos", &q.to_string(), "must be 0, 1 or 2"))?,
            ),
        };
        if let Some(topic) = &self.response_topic {
            crate::core::topic::validate_topic_name(topic)
                .map_err(|e| invalid("response_topic", topic, &format!("not a topic name: {e}")))?;
        }
        let options = PublishOptions {
            qos,
            retain: self.retain,
            expires_at: self.expiry.and_then(Message::expiry_from_interval),
            properties: MessageProperties {
                payload_is_utf8: false,
                content_type: self.content_type,
                response_topic: self.response_topic,
                correlation_data: self.correlation_id.map(|c| Bytes::from(c.into_bytes())),
                user_properties: self.user_properties,
            },
        };
        Ok((self.topic, payload, options))
    }
}

/// Text borrowed as itself, other bytes as base64; true when base64.
fn text_or_base64(bytes: &[u8]) -> (Cow<'_, str>, bool) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (Cow::Borrowed(text), false),
        Err(_) => (
            Cow::Owned(base64::engine::general_purpose::STANDARD.encode(bytes)),
            true,
        ),
    }
}

/// A message as JSON (pull, server-sent events), serialized straight from the
/// message's fields: no copy of a UTF-8 payload and no map built per delivery.
#[derive(Debug, serde::Serialize)]
pub struct MessageView<'a> {
    topic: &'a str,
    payload: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    encoding: Option<&'static str>,
    qos: u8,
    retain: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    expiry: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_encoding: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_topic: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    user_properties: &'a [(String, String)],
}

impl<'a> MessageView<'a> {
    /// `message` as its subscriber sees it: `retain` is the delivery's flag.
    pub fn new(message: &'a Message, retain: bool, now: Instant) -> MessageView<'a> {
        let props = message.properties();
        let (payload, base64) = text_or_base64(&message.payload);
        let correlation = props.correlation_data.as_deref().map(text_or_base64);
        MessageView {
            topic: &message.topic,
            payload,
            encoding: base64.then_some("base64"),
            qos: message.qos as u8,
            retain,
            expiry: message.remaining_expiry(now),
            content_type: props.content_type.as_deref(),
            correlation_encoding: correlation
                .as_ref()
                .and_then(|(_, base64)| base64.then_some("base64")),
            correlation_id: correlation.map(|(id, _)| id),
            response_topic: props.response_topic.as_deref(),
            user_properties: &props.user_properties,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn query_and_headers_map_to_properties_like_stomp_headers() {
        let query = Query::parse(Some("qos=0&retain=true&reply-to=r/1&property.a=1"));
        let mut headers = HeaderMap::new();
        headers.insert("tern-qos", HeaderValue::from_static("2"));
        headers.insert("tern-correlation-id", HeaderValue::from_static("c-7"));
        headers.insert("tern-property-B", HeaderValue::from_static("2"));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let o = options_from(&query, &headers).unwrap();
        assert_eq!(o.qos, Some(QoS::AtMostOnce), "the query wins");
        assert!(o.retain);
        let p = &o.properties;
        assert_eq!(p.response_topic.as_deref(), Some("r/1"));
        assert_eq!(p.correlation_data.as_deref(), Some(&b"c-7"[..]));
        assert_eq!(p.content_type.as_deref(), Some("text/plain"));
        assert_eq!(
            p.user_properties,
            [
                ("a".to_string(), "1".to_string()),
                ("b".to_string(), "2".to_string())
            ]
        );
    }

    #[test]
    fn bad_values_name_the_parameter() {
        let headers = HeaderMap::new();
        for (query, name) in [
            ("qos=3", "qos"),
            ("retain=maybe", "retain"),
            ("expiry=-1", "expiry"),
            ("expires=soon", "expires"),
            ("reply-to=a/%23", "reply-to"),
        ] {
            let error = options_from(&Query::parse(Some(query)), &headers)
                .unwrap_err()
                .to_string();
            assert!(error.starts_with(name), "{query}: {error}");
        }
    }

    #[test]
    fn binary_payloads_are_base64_with_a_marker() {
        let json =
            |m: &Message| serde_json::to_value(MessageView::new(m, false, Instant::now())).unwrap();
        let m = Message::new(
            "t",
            Bytes::from_static(&[0xff, 0x00]),
            QoS::AtMostOnce,
            false,
        );
        assert_eq!(json(&m)["payload"], "/wA=");
        assert_eq!(json(&m)["encoding"], "base64");
        let mut m = Message::new("t", Bytes::from_static(b"hi"), QoS::AtMostOnce, false);
        m.properties = MessageProperties {
            correlation_data: Some(Bytes::from_static(&[0xfe])),
            user_properties: vec![("k".into(), "v".into())],
            ..MessageProperties::NONE
        }
        .shared();
        let out = json(&m);
        assert_eq!(out["payload"], "hi");
        assert!(out.get("encoding").is_none());
        assert_eq!(out["correlation_id"], "/g==");
        assert_eq!(out["correlation_encoding"], "base64");
        assert_eq!(out["user_properties"], serde_json::json!([["k", "v"]]));
        assert!(out.get("content_type").is_none());
    }

    #[test]
    fn a_batch_line_decodes_base64_payloads() {
        let line: BatchLine =
            serde_json::from_str(r#"{"topic":"a","payload":"/wA=","encoding":"base64","qos":0}"#)
                .unwrap();
        let (_, payload, options) = line.into_parts().unwrap();
        assert_eq!(&payload[..], &[0xff, 0x00]);
        assert_eq!(options.qos, Some(QoS::AtMostOnce));
    }
}
