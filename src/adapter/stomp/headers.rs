//! STOMP headers ⇄ core message properties, both ways; pure functions.
//!
//! SEND → core:
//! - `content-type` → content type; `reply-to` → response topic (see
//!   `destination.rs`); `correlation-id` → correlation data (its UTF-8 bytes);
//!   `expires` (ms since the Unix epoch, ActiveMQ style, `0` = never) → expiry;
//!   `qos` (`0`, `1`, `2`; default 1) → QoS; `retain` (`true`/`false`) → retain.
//! - `destination`, `content-length`, `receipt`, `transaction` are frame-level.
//! - Every other header is a custom header → a user property, order and
//!   repeats kept.
//!
//! core → MESSAGE: `destination`, `message-id`, `subscription`, `ack` (1.2, when
//! the subscription acks), `content-type`, `content-length`, `reply-to`,
//! `correlation-id` (non-UTF-8 data is converted lossily), `expires`,
//! `retain:true` for retained messages sent on subscribe, then the user
//! properties, except those whose names the broker sets itself or are empty.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tern_stomp::{Command, Frame};

use super::destination::{destination_of, reply_topic};
use super::error::StompAdapterError;
use crate::core::message::{Delivery, Message, MessageProperties, QoS};

/// The value of `header`, which the frame must carry.
pub(super) fn required<'a>(
    frame: &'a Frame,
    header: &'static str,
) -> Result<&'a str, StompAdapterError> {
    frame
        .header(header)
        .ok_or(StompAdapterError::MissingHeader {
            command: frame.command,
            header,
        })
}

/// SEND headers the broker interprets; the others are custom headers.
const MAPPED_ON_SEND: [&str; 10] = [
    "destination",
    "content-length",
    "content-type",
    "receipt",
    "transaction",
    "reply-to",
    "correlation-id",
    "expires",
    "qos",
    "retain",
];

/// MESSAGE headers the broker writes; a user property with one of these names is not repeated.
const SET_ON_MESSAGE: [&str; 10] = [
    "destination",
    "message-id",
    "subscription",
    "ack",
    "content-type",
    "content-length",
    "reply-to",
    "correlation-id",
    "expires",
    "retain",
];

/// Clocks read once per frame: expiry needs both (STOMP speaks wall-clock time,
/// the core monotonic time).
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock {
    pub(super) now: Instant,
    pub(super) wall: SystemTime,
}

impl Clock {
    pub(super) fn now() -> Clock {
        Clock {
            now: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// `expires` (ms since the epoch; 0 = never) as a core expiry. A time already
    /// past expires now; one too far away never does.
    pub(super) fn expires_at(&self, epoch_ms: u64) -> Option<Instant> {
        if epoch_ms == 0 {
            return None;
        }
        let at = UNIX_EPOCH.checked_add(Duration::from_millis(epoch_ms))?;
        match at.duration_since(self.wall) {
            Ok(left) => self.now.checked_add(left),
            Err(_) => Some(self.now),
        }
    }

    /// A core expiry as `expires` (ms since the epoch).
    pub(super) fn epoch_ms(&self, at: Instant) -> u64 {
        let left = at.saturating_duration_since(self.now);
        self.wall
            .checked_add(left)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(u64::MAX, |d| {
                u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
            })
    }
}

/// Builds the core message of a SEND to `topic` (the module doc lists the header
/// rules); a malformed `qos`, `retain`, `expires` or `reply-to` is an error
/// naming the header.
pub(super) fn message_from_send(
    frame: &Frame,
    topic: String,
    publisher: Arc<str>,
    clock: Clock,
) -> Result<Message, StompAdapterError> {
    let qos = match frame.header("qos") {
        None => QoS::AtLeastOnce,
        Some(value) => value
            .parse::<u8>()
            .ok()
            .and_then(QoS::from_u8)
            .ok_or_else(|| invalid("qos", value, "must be 0, 1 or 2"))?,
    };
    let retain = match frame.header("retain") {
        None | Some("false") => false,
        Some("true") => true,
        Some(value) => return Err(invalid("retain", value, "must be true or false")),
    };
    let expires_at = match frame.header("expires") {
        None => None,
        Some(value) => {
            let ms = value.trim().parse::<u64>().map_err(|_| {
                invalid(
                    "expires",
                    value,
                    "must be milliseconds since the Unix epoch",
                )
            })?;
            clock.expires_at(ms)
        }
    };
    let response_topic = match frame.header("reply-to") {
        None => None,
        Some(reply_to) => Some(reply_topic(reply_to)?),
    };
    let properties = MessageProperties {
        payload_is_utf8: false,
        content_type: frame.header("content-type").map(str::to_string),
        response_topic,
        correlation_data: frame
            .header("correlation-id")
            .map(|id| Bytes::copy_from_slice(id.as_bytes())),
        user_properties: frame
            .headers
            .iter()
            .filter(|(name, _)| !MAPPED_ON_SEND.contains(&name.as_str()))
            .cloned()
            .collect(),
    };
    Ok(Message {
        topic: Arc::from(topic),
        payload: frame.body.clone(),
        qos,
        retain,
        expires_at,
        properties: properties.shared(),
        publisher: Some(publisher),
    })
}

/// What identifies one MESSAGE frame to its client.
#[derive(Debug, Clone, Copy)]
pub(super) struct MessageIds<'a> {
    pub(super) message_id: &'a str,
    pub(super) subscription: &'a str,
    /// The 1.2 `ack` header, for subscriptions that acknowledge.
    pub(super) ack: Option<&'a str>,
}

/// The MESSAGE frame for one delivery to one subscription, headers in this order:
///
/// - `destination`: the topic as a destination (`destination.rs`);
///   `message-id`, `subscription`: from `ids`; `ack`: the 1.2 ack id, only for
///   subscriptions that acknowledge.
/// - `content-type` when the message has one; `content-length`: the body's length.
/// - `reply-to`: the response topic as a destination; `correlation-id`: the
///   correlation data, non-UTF-8 bytes converted lossily.
/// - `expires`: the expiry as ms since the Unix epoch, by `clock`; absent when
///   the message never expires.
/// - `retain:true` for a retained message sent on subscribe (absent otherwise).
/// - then the user properties, order and repeats kept, except empty names and
///   the names above ([`SET_ON_MESSAGE`]), which the broker sets itself.
/// - The body is the payload, shared (not copied).
pub(super) fn message_frame(delivery: &Delivery, ids: MessageIds<'_>, clock: Clock) -> Frame {
    let message = &delivery.message;
    let shared = message.properties();
    let mut headers = Vec::with_capacity(8 + shared.user_properties.len());
    headers.push(("destination".to_string(), destination_of(&message.topic)));
    headers.push(("message-id".to_string(), ids.message_id.to_string()));
    headers.push(("subscription".to_string(), ids.subscription.to_string()));
    if let Some(ack) = ids.ack {
        headers.push(("ack".to_string(), ack.to_string()));
    }
    if let Some(content_type) = &shared.content_type {
        headers.push(("content-type".to_string(), content_type.clone()));
    }
    headers.push((
        "content-length".to_string(),
        message.payload.len().to_string(),
    ));
    if let Some(topic) = &shared.response_topic {
        headers.push(("reply-to".to_string(), destination_of(topic)));
    }
    if let Some(data) = &shared.correlation_data {
        headers.push((
            "correlation-id".to_string(),
            String::from_utf8_lossy(data).into_owned(),
        ));
    }
    if let Some(at) = message.expires_at {
        headers.push(("expires".to_string(), clock.epoch_ms(at).to_string()));
    }
    if delivery.retain {
        headers.push(("retain".to_string(), "true".to_string()));
    }
    let from_stream = delivery
        .filter
        .as_deref()
        .is_some_and(crate::core::stream::is_stream_filter);
    headers.extend(
        shared
            .user_properties
            .iter()
            .filter(|(name, _)| !name.is_empty() && !SET_ON_MESSAGE.contains(&name.as_str()))
            .map(|(name, value)| {
                if from_stream && name == crate::core::stream::OFFSET_PROPERTY {
                    (super::stream::OFFSET_HEADER.to_string(), value.clone())
                } else {
                    (name.clone(), value.clone())
                }
            }),
    );
    Frame {
        command: Command::Message,
        headers,
        body: message.payload.clone(),
    }
}

fn invalid(header: &'static str, value: &str, reason: &'static str) -> StompAdapterError {
    StompAdapterError::InvalidHeader {
        header,
        value: value.chars().take(64).collect(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(headers: &[(&str, &str)]) -> Frame {
        let mut frame = Frame::new(Command::Send).with_body(Bytes::from_static(b"a\0b"));
        for (name, value) in headers {
            frame = frame.with_header(*name, *value);
        }
        frame
    }

    fn build(frame: &Frame) -> Result<Message, StompAdapterError> {
        message_from_send(frame, "t".into(), Arc::from("p"), Clock::now())
    }

    #[test]
    fn send_headers_become_core_properties() {
        let frame = send(&[
            ("destination", "/topic/t"),
            ("content-type", "application/json"),
            ("reply-to", "/topic/replies/1"),
            ("correlation-id", "c-9"),
            ("x-a", "1"),
            ("x-a", "2"),
            ("receipt", "r"),
        ]);
        let m = build(&frame).unwrap();
        assert_eq!(m.qos, QoS::AtLeastOnce);
        assert!(!m.retain);
        assert_eq!(&m.payload[..], b"a\0b");
        let p = m.properties();
        assert_eq!(p.content_type.as_deref(), Some("application/json"));
        assert_eq!(p.response_topic.as_deref(), Some("replies/1"));
        assert_eq!(p.correlation_data.as_deref(), Some(&b"c-9"[..]));
        assert_eq!(
            p.user_properties,
            vec![("x-a".into(), "1".into()), ("x-a".into(), "2".into())]
        );
    }

    #[test]
    fn qos_retain_and_expires_are_checked() {
        assert_eq!(build(&send(&[("qos", "0")])).unwrap().qos, QoS::AtMostOnce);
        assert_eq!(build(&send(&[("qos", "2")])).unwrap().qos, QoS::ExactlyOnce);
        assert!(build(&send(&[("qos", "3")])).is_err());
        assert!(build(&send(&[("retain", "true")])).unwrap().retain);
        assert!(build(&send(&[("retain", "yes")])).is_err());
        assert!(build(&send(&[("expires", "soon")])).is_err());
        assert!(build(&send(&[("expires", "0")]))
            .unwrap()
            .expires_at
            .is_none());
        let past = build(&send(&[("expires", "1000")])).unwrap();
        assert!(past.is_expired(Instant::now()));
        assert!(build(&send(&[("reply-to", "/nowhere/x")])).is_err());
    }

    #[test]
    fn expires_round_trips_through_the_clock() {
        let clock = Clock::now();
        let wall_ms = clock.wall.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let at = clock.expires_at(wall_ms + 60_000).unwrap();
        let back = clock.epoch_ms(at);
        assert!(
            (wall_ms + 59_999..=wall_ms + 60_001).contains(&back),
            "{back}"
        );
    }

    #[test]
    fn message_frame_maps_properties_and_skips_reserved_names() {
        let mut m = Message::new(
            "$queue/jobs",
            Bytes::from_static(b"hi"),
            QoS::AtLeastOnce,
            false,
        );
        m.properties = Some(Arc::new(MessageProperties {
            payload_is_utf8: true,
            content_type: Some("text/plain".into()),
            response_topic: Some("replies".into()),
            correlation_data: Some(Bytes::from_static(b"c1")),
            user_properties: vec![
                ("k".into(), "v".into()),
                ("destination".into(), "evil".into()),
                ("".into(), "empty".into()),
            ],
        }));
        let delivery = Delivery {
            message: Arc::new(m),
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_ids: vec![],
            filter: Some(Arc::from("$queue/jobs")),
            seq: 0,
        };
        let ids = MessageIds {
            message_id: "m-1",
            subscription: "s",
            ack: Some("m-1"),
        };
        let f = message_frame(&delivery, ids, Clock::now());
        assert_eq!(f.header("destination"), Some("/queue/jobs"));
        assert_eq!(f.header("message-id"), Some("m-1"));
        assert_eq!(f.header("subscription"), Some("s"));
        assert_eq!(f.header("ack"), Some("m-1"));
        assert_eq!(f.header("content-type"), Some("text/plain"));
        assert_eq!(f.header("content-length"), Some("2"));
        assert_eq!(f.header("reply-to"), Some("/topic/replies"));
        assert_eq!(f.header("correlation-id"), Some("c1"));
        assert_eq!(f.header("k"), Some("v"));
        assert_eq!(
            f.headers.iter().filter(|(n, _)| n == "destination").count(),
            1
        );
        assert!(f.headers.iter().all(|(n, _)| !n.is_empty()));
    }

    fn plain_delivery(message: Message, retain: bool) -> Delivery {
        Delivery {
            message: Arc::new(message),
            qos: QoS::AtMostOnce,
            retain,
            subscription_ids: vec![],
            filter: None,
            seq: 0,
        }
    }

    const IDS: MessageIds<'static> = MessageIds {
        message_id: "m-2",
        subscription: "s",
        ack: None,
    };

    #[test]
    fn a_plain_message_carries_only_the_frame_headers() {
        let m = Message::new("a/b", Bytes::from_static(b"xyz"), QoS::AtMostOnce, false);
        let f = message_frame(&plain_delivery(m, false), IDS, Clock::now());
        let names: Vec<&str> = f.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "destination",
                "message-id",
                "subscription",
                "content-length"
            ]
        );
        assert_eq!(f.header("destination"), Some("/topic/a/b"));
        assert_eq!(f.header("content-length"), Some("3"));
        assert_eq!(&f.body[..], b"xyz");
    }

    #[test]
    fn expires_is_the_expiry_in_epoch_ms_and_retain_marks_a_retained_delivery() {
        let clock = Clock::now();
        let mut m = Message::new("t", Bytes::new(), QoS::AtMostOnce, true);
        m.expires_at = Some(clock.now + Duration::from_secs(30));
        let f = message_frame(&plain_delivery(m.clone(), true), IDS, clock);
        let wall_ms = clock.wall.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        let expires: u64 = f.header("expires").unwrap().parse().unwrap();
        assert!(expires.abs_diff(wall_ms + 30_000) <= 1, "{expires}");
        assert_eq!(f.header("retain"), Some("true"));
        // A live delivery of a message published with retain is not marked.
        let f = message_frame(&plain_delivery(m, false), IDS, clock);
        assert_eq!(f.header("retain"), None);
    }

    #[test]
    fn non_utf8_correlation_data_is_converted_lossily() {
        let mut m = Message::new("t", Bytes::new(), QoS::AtMostOnce, false);
        m.properties = MessageProperties {
            correlation_data: Some(Bytes::from_static(b"c\xff1")),
            ..MessageProperties::default()
        }
        .shared();
        let f = message_frame(&plain_delivery(m, false), IDS, Clock::now());
        assert_eq!(f.header("correlation-id"), Some("c\u{fffd}1"));
    }

    #[test]
    fn user_properties_keep_order_and_repeats_after_the_broker_headers() {
        let mut m = Message::new("t", Bytes::new(), QoS::AtMostOnce, false);
        m.properties = MessageProperties {
            user_properties: vec![
                ("b".into(), "1".into()),
                ("a".into(), "2".into()),
                ("b".into(), "3".into()),
                ("expires".into(), "0".into()),
            ],
            ..MessageProperties::default()
        }
        .shared();
        let f = message_frame(&plain_delivery(m, false), IDS, Clock::now());
        let tail: Vec<(&str, &str)> = f.headers[4..]
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        assert_eq!(tail, [("b", "1"), ("a", "2"), ("b", "3")]);
    }

    #[test]
    fn frame_level_send_headers_are_not_user_properties() {
        let frame = send(&[
            ("destination", "/topic/t"),
            ("content-length", "3"),
            ("receipt", "r"),
            ("transaction", "tx"),
            ("qos", "0"),
            ("retain", "false"),
            ("expires", "0"),
            ("x", "y"),
        ]);
        let m = build(&frame).unwrap();
        assert_eq!(
            m.properties().user_properties,
            vec![("x".to_string(), "y".to_string())]
        );
        assert!(!m.retain);
        assert_eq!(m.publisher.as_deref(), Some("p"));
        assert_eq!(&*m.topic, "t");
    }
}
