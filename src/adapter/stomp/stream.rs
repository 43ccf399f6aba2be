//! SUBSCRIBE to a durable stream, RabbitMQ's way: destination
//! `/stream/<name>[/<filter>]` (the filter over the original topics), start
//! position in `x-stream-offset` (`first`, `last`, `next`, `offset=N` or a
//! bare `N`, `timestamp=T`, `-10m`), a named consumer in `x-stream-consumer`.
//! `prefetch-count` (with `ack: client`/`client-individual`) caps the
//! connection's unacknowledged messages. Each MESSAGE carries `x-stream-offset`. The core filter is
//! `$stream/<name>[/<filter>]`, the same as MQTT's.

use std::sync::Arc;

use tern_stomp::Frame;

use super::connection::Connection;
use super::error::StompAdapterError;
use super::subscribe::{AckMode, Subscription};
use crate::core::selector::Selector;
use crate::core::stream::{parse_stream_filter, StreamError, StreamSubscription, STREAM_PREFIX};

/// STOMP destinations of streams.
pub(super) const STREAM_DEST_PREFIX: &str = "/stream/";
/// The MESSAGE header with the offset (RabbitMQ's name).
pub(super) const OFFSET_HEADER: &str = "x-stream-offset";
const CONSUMER_HEADER: &str = "x-stream-consumer";
const PREFETCH_HEADER: &str = "prefetch-count";

/// Subscribes `id` to the stream `destination` names (`rest` follows `/stream/`).
pub(super) fn subscribe(
    conn: &mut Connection,
    frame: &Frame,
    id: &str,
    ack: AckMode,
    destination: &str,
    rest: &str,
    selector: Option<Arc<Selector>>,
) -> Result<(), StompAdapterError> {
    let filter: Arc<str> = Arc::from(format!("{STREAM_PREFIX}{rest}"));
    let parsed = parse_stream_filter(&filter)
        .unwrap_or_else(|| Err(StreamError::BadFilter(destination.to_string())))?;
    // RabbitMQ's stream consumers must say how many unacknowledged messages
    // they take; here it narrows the connection's window (one stream
    // subscription per connection is the usual shape).
    let prefetch = match frame.header(PREFETCH_HEADER) {
        None => None,
        Some(value) => match value.trim().parse::<usize>() {
            Ok(n) if n > 0 => Some(n),
            _ => {
                return Err(StompAdapterError::InvalidHeader {
                    header: PREFETCH_HEADER,
                    value: value.chars().take(64).collect(),
                    reason: "must be a positive integer",
                })
            }
        },
    };
    let position = frame.header(OFFSET_HEADER).map(str::parse).transpose()?;
    let username = conn.username.as_deref();
    // A reader sees only the topics it may read: the ACL decides on the filter
    // over the original topics, as for a plain subscription.
    let Some(exceptions) =
        conn.ctx
            .subscription_exceptions(username, &conn.session.client_id, parsed.topics.as_str())
    else {
        return Err(StompAdapterError::Denied {
            action: "subscribe to",
            destination: destination.chars().take(256).collect(),
        });
    };
    let sub = StreamSubscription {
        filter: Arc::clone(&filter),
        parsed,
        position,
        consumer: frame.header(CONSUMER_HEADER).map(str::to_string),
        qos: ack.qos(),
        subscription_id: None,
        exceptions,
        selector: reader_selector(conn, &filter, selector.as_ref()),
    };
    conn.ctx.router.subscribe_stream(&conn.session, sub)?;
    if let (Some(prefetch), true) = (prefetch, ack.acks()) {
        conn.protocol.max_unacked = conn.protocol.max_unacked.min(prefetch);
    }
    conn.protocol.subscriptions.insert(Subscription {
        id: Arc::from(id),
        filter,
        queue: None,
        ack,
        selector,
    });
    tracing::debug!(client_id = %conn.session.client_id, id, destination, "subscribed to a stream");
    conn.write_receipt();
    Ok(())
}

/// The selector of the (one) reader of `filter`: a new subscription's, unless
/// the connection's other subscriptions on it have another one or none (the
/// reader then passes everything and `deliver.rs` applies each selector).
fn reader_selector(
    conn: &Connection,
    filter: &str,
    selector: Option<&Arc<Selector>>,
) -> Option<Arc<Selector>> {
    let selector = selector?;
    let others = conn.protocol.subscriptions.for_filter(filter);
    others
        .iter()
        .all(|other| {
            other
                .selector
                .as_ref()
                .is_some_and(|s| Arc::ptr_eq(s, selector))
        })
        .then(|| Arc::clone(selector))
}
