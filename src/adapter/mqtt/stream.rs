//! SUBSCRIBE to a durable stream: `$stream/<name>/<filter>` (the filter over
//! the original topics), the start position in the subscription's user
//! property `stream-offset` (EMQX's name) or, for MQTT 3.1.1 which has no
//! properties, in the filter: `$stream/<name>/@<position>/<filter>`. A named
//! consumer is the user property `stream-consumer`. Each PUBLISH has the
//! original topic and (MQTT 5) a `stream-offset` user property.

use std::sync::Arc;

use tern_mqtt::{reason, Properties};

use super::connection::Connection;
use super::core_qos;
use crate::core::selector::Selector;
use crate::core::stream::{parse_stream_filter, StreamError, StreamSubscription};

const POSITION_PROPERTY: &str = "stream-offset";
const CONSUMER_PROPERTY: &str = "stream-consumer";

fn user_property<'a>(properties: &'a Properties, name: &str) -> Option<&'a str> {
    properties
        .user_properties
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Starts a reader for one stream filter of a SUBSCRIBE; returns its reason
/// code, and on a refusal why (for the SUBACK's reason string).
pub(super) fn subscribe(
    conn: &mut Connection,
    raw_filter: &str,
    qos: tern_mqtt::QoS,
    properties: &Properties,
    subscription_id: Option<u32>,
    selector: Option<Arc<Selector>>,
) -> Result<u8, (u8, String)> {
    let v5 = conn.is_v5();
    let refuse = |code: u8, e: &dyn std::fmt::Display| {
        (if v5 { code } else { reason::UNSPECIFIED }, e.to_string())
    };
    let parsed = match parse_stream_filter(raw_filter) {
        Some(Ok(parsed)) => parsed,
        Some(Err(e)) => return Err(refuse(reason::TOPIC_FILTER_INVALID, &e)),
        None => {
            let e = StreamError::BadFilter(raw_filter.to_string());
            return Err(refuse(reason::TOPIC_FILTER_INVALID, &e));
        }
    };
    let position = match user_property(properties, POSITION_PROPERTY).map(str::parse) {
        None => None,
        Some(Ok(position)) => Some(position),
        Some(Err(e)) => return Err(refuse(reason::IMPLEMENTATION_SPECIFIC, &e)),
    };
    let username = conn.username.as_deref();
    let Some(exceptions) =
        conn.ctx
            .subscription_exceptions(username, &conn.session.client_id, parsed.topics.as_str())
    else {
        return Err(refuse(reason::NOT_AUTHORIZED, &"denied by ACL"));
    };
    let sub = StreamSubscription {
        filter: Arc::from(raw_filter),
        parsed,
        position,
        consumer: user_property(properties, CONSUMER_PROPERTY).map(str::to_string),
        qos: core_qos(qos),
        subscription_id,
        exceptions,
        selector,
    };
    match conn.ctx.router.subscribe_stream(&conn.session, sub) {
        Ok(()) => Ok(qos as u8),
        Err(e @ StreamError::UnknownStream(_)) => Err(refuse(reason::TOPIC_FILTER_INVALID, &e)),
        Err(e) => Err(refuse(reason::IMPLEMENTATION_SPECIFIC, &e)),
    }
}
