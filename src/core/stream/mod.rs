//! Durable topic streams: every message published to a stream's topics is
//! kept, in publish order, at a dense 64-bit offset with its publish time,
//! until retention removes it; readers replay from any position and go on
//! with live messages without a gap or a duplicate.
//!
//! - `settings.rs`: `[[stream]]` and its limits;
//! - `position.rs`: start positions and stream filters (`$stream/<name>/…`);
//! - `log.rs`: one stream's offsets, recent messages and live readers;
//! - `reader.rs`: one stream subscription, replaying from the store in batches;
//! - `declared.rs`: streams created and deleted through the admin API, kept in the store;
//! - `group.rs`: the readers of one named consumer sharing the stream;
//! - `covering.rs`: which stream keeps every message of some filters (HTTP resume);
//! - `retention.rs`: the oldest messages removed, a batch at a time;
//! - `shared.rs`: streams in a store other nodes append to (the NATS backend).
//!
//! Messages live in the store (appended in the same group commit as the rest
//! of the publish, so an acknowledged publish is in the stream); only the
//! newest few and each reader's current batch are in memory.

mod covering;
mod declared;
mod group;
mod log;
pub mod position;
mod reader;
mod retention;
pub mod settings;
mod shared;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;

use crate::core::commit::Commit;
use crate::core::exceptions::Exceptions;
use crate::core::message::{Message, MessageProperties, QoS};
use crate::core::router::persist::{message_from_record, message_record_ref};
use crate::core::session::Session;
use crate::store::encode_stream_record;
use crate::store::record::{unix_ms_now, StreamRecord, StreamRecordRef, StreamState};
use crate::store::{Store, StoreOp, StreamLimits};

use group::Group;
use log::StreamLog;
pub use position::{
    is_stream_filter, parse_stream_filter, StartPosition, StreamError, StreamFilter, STREAM_PREFIX,
};
use reader::Reader;
pub use settings::{Retention, StreamSettings};

/// The user property that carries a streamed message's offset (MQTT 5
/// `stream-offset`; STOMP shows it as `x-stream-offset`).
pub const OFFSET_PROPERTY: &str = "stream-offset";

/// How a subscription reads a stream.
#[derive(Debug, Clone)]
pub struct StreamSubscription {
    /// The filter as the session keeps it (`$stream/<name>/…`).
    pub filter: Arc<str>,
    pub parsed: StreamFilter,
    /// Given by the protocol (header, user property); the filter's own `@…` wins.
    pub position: Option<StartPosition>,
    pub consumer: Option<String>,
    pub qos: QoS,
    pub subscription_id: Option<u32>,
    /// Topics the subscriber may not read (ACL), skipped.
    pub exceptions: Exceptions,
    /// Messages it does not match are skipped.
    pub selector: Option<Arc<crate::core::selector::Selector>>,
}

/// What an operator sees of one stream.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StreamInfo {
    pub name: String,
    pub topics: Vec<String>,
    pub first_offset: u64,
    /// None while the stream holds nothing.
    pub last_offset: Option<u64>,
    pub next_offset: u64,
    pub messages: u64,
    pub bytes: u64,
    pub readers: usize,
    pub consumers: Vec<ConsumerInfo>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ConsumerInfo {
    pub name: String,
    /// Last offset acknowledged.
    pub acked: u64,
    /// Messages after it.
    pub lag: u64,
}

/// A session (by address) and its stream filter.
type ReaderKey = (usize, Arc<str>);
/// A stream subscription's stream and reader.
type ReaderEntry = (Arc<StreamLog>, Arc<Reader>);
/// A stream and a consumer name.
type ConsumerKey = (Arc<str>, Arc<str>);

/// Every stream of the broker.
#[derive(Debug)]
pub struct Streams {
    /// Few (declared by operators): a publish checks each one's filters.
    logs: RwLock<Vec<Arc<StreamLog>>>,
    /// Whether `logs` holds any (streams are never removed): a publish on a
    /// broker without streams reads this, not the lock, whose reader count
    /// every publishing thread would write.
    any: AtomicBool,
    store: Option<Arc<Store>>,
    /// Each session's stream subscriptions, by session and filter.
    readers: Mutex<HashMap<ReaderKey, ReaderEntry>>,
    /// Named consumers' committed offsets, by stream and name.
    consumers: Mutex<HashMap<ConsumerKey, u64>>,
    /// The named consumers being read now, each a group of one or more readers.
    groups: Mutex<HashMap<ConsumerKey, Arc<Group>>>,
    /// Streams created through the admin API (the others come from the config file).
    created: Mutex<HashSet<String>>,
    /// Held through a group's membership change, so changes apply one at a time.
    group_changes: Mutex<()>,
    /// Offsets and bytes the store reported at start, for streams declared later.
    restored: Mutex<HashMap<String, StreamState>>,
    retention_wake: Notify,
}

/// A core message rebuilt from a stream record, carrying its offset.
pub(crate) fn message_at(record: StreamRecord, offset: u64) -> Message {
    // Built in place from the decoded record: no second message, and the
    // payload is moved, not shared.
    let mut message = message_from_record(record.message);
    let mut properties = match message.properties.take() {
        Some(shared) => Arc::try_unwrap(shared).unwrap_or_else(|p| (*p).clone()),
        None => MessageProperties::NONE,
    };
    stamp_offset(&mut properties, offset);
    message.properties = Some(Arc::new(properties));
    message.retain = false;
    message.expires_at = None;
    message
}

/// Sets the offset property (any the publisher sent of that name replaced).
fn stamp_offset(properties: &mut MessageProperties, offset: u64) {
    properties
        .user_properties
        .retain(|(k, _)| k != OFFSET_PROPERTY);
    properties
        .user_properties
        .push((OFFSET_PROPERTY.to_string(), offset.to_string()));
}

/// `message` with the offset property (any the publisher sent of that name replaced).
fn with_offset(message: &Message, offset: u64) -> Message {
    let mut properties: MessageProperties = message.properties().clone();
    stamp_offset(&mut properties, offset);
    Message {
        topic: Arc::clone(&message.topic),
        payload: message.payload.clone(),
        qos: message.qos,
        retain: false,
        expires_at: None,
        properties: Some(Arc::new(properties)),
        publisher: message.publisher.clone(),
    }
}

/// The offset a streamed message carries, if it is one.
pub fn offset_of(message: &Message) -> Option<u64> {
    message
        .properties()
        .user_properties
        .iter()
        .rev()
        .find(|(k, _)| k == OFFSET_PROPERTY)
        .and_then(|(_, v)| v.parse().ok())
}

fn session_key(session: &Arc<Session>, filter: &str) -> ReaderKey {
    (Arc::as_ptr(session) as usize, Arc::from(filter))
}

impl Streams {
    pub fn new(store: Option<Arc<Store>>) -> Streams {
        Streams {
            logs: RwLock::new(Vec::new()),
            any: AtomicBool::new(false),
            store,
            readers: Mutex::new(HashMap::new()),
            consumers: Mutex::new(HashMap::new()),
            groups: Mutex::new(HashMap::new()),
            created: Mutex::new(HashSet::new()),
            group_changes: Mutex::new(()),
            restored: Mutex::new(HashMap::new()),
            retention_wake: Notify::new(),
        }
    }

    pub(crate) fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }

    fn log(&self, name: &str) -> Option<Arc<StreamLog>> {
        self.logs.read().iter().find(|l| &*l.name == name).cloned()
    }

    /// Offsets, bytes and consumers the store kept (at start, before serving).
    pub fn restore(&self, states: Vec<StreamState>, consumers: Vec<(String, String, u64)>) {
        for state in states {
            // Not under `restored`'s lock: `declare` takes `logs` first, then it.
            if let Some(log) = self.log(&state.name) {
                apply_state(&log, &state);
            }
            self.restored.lock().insert(state.name.clone(), state);
        }
        let mut map = self.consumers.lock();
        for (stream, consumer, offset) in consumers {
            map.insert((Arc::from(stream), Arc::from(consumer)), offset);
        }
    }

    /// Adds a stream (config or admin API); it continues from what the store kept of it.
    pub fn declare(&self, settings: &StreamSettings) -> Result<(), StreamError> {
        if self.store.is_none() {
            return Err(StreamError::NoStore(settings.name.clone()));
        }
        let (filters, retention) = settings
            .check()
            .map_err(|e| StreamError::Invalid(e.to_string()))?;
        let mut logs = self.logs.write();
        if logs.iter().any(|l| *l.name == *settings.name) {
            return Err(StreamError::Exists(settings.name.clone()));
        }
        if let Some(store) = &self.store {
            store.configure_stream(
                &settings.name,
                StreamLimits {
                    max_age: retention.max_age,
                    max_messages: retention.max_messages,
                    max_bytes: retention.max_bytes,
                },
            );
        }
        let log = Arc::new(StreamLog::new(&settings.name, filters, retention));
        if let Some(state) = self.restored.lock().get(&settings.name) {
            apply_state(&log, state);
        }
        logs.push(log);
        self.any.store(true, Ordering::Release);
        Ok(())
    }

    /// Keeps `message` in every stream whose topics it matches: called by the
    /// router as part of the publish, which includes the returned commit in
    /// its own, so the publisher's acknowledgement covers the append.
    pub fn append(&self, message: &Arc<Message>) -> Commit {
        let mut commit = Commit::NONE;
        if !self.any.load(Ordering::Acquire) {
            return commit;
        }
        let logs = self.logs.read();
        for log in logs.iter().filter(|l| l.keeps(&message.topic)) {
            let now = unix_ms_now();
            let size = (message.topic.len() + message.payload.len()) as u64;
            // Encoded once, here, from the message itself (no owned copy of it).
            let entry = match &self.store {
                None => None,
                Some(_) => match encode_stream_record(&StreamRecordRef {
                    time_ms: now,
                    size,
                    message: message_record_ref(message),
                }) {
                    Ok(entry) => Some(entry),
                    Err(e) => {
                        tracing::error!(stream = %log.name, error = %e, "cannot encode a stream message");
                        continue;
                    }
                },
            };
            let mut state = log.state.lock();
            let offset = state.next;
            state.next += 1;
            state.bytes += size;
            if state.count() == 1 {
                state.first_time_ms = now;
            }
            if let (Some(store), Some(entry)) = (&self.store, entry) {
                // Under the stream's lock: offsets reach the store in order.
                let ticket = store.submit([StoreOp::AppendStream {
                    stream: Arc::clone(&log.name),
                    offset,
                    size,
                    entry,
                }]);
                commit.include(Commit::of_ticket(ticket));
            }
            // The tail keeps the message as published, while the stream has
            // a reader (`log.rs`); the copy carrying its offset is made only
            // for live readers.
            state.push_tail(offset, message);
            if !state.live.is_empty() {
                let stamped = Arc::new(with_offset(message, offset));
                state.live.retain(|reader| reader.offer(offset, &stamped));
            }
            if log.over_limits(&state, now) {
                self.retention_wake.notify_one();
            }
        }
        commit
    }

    /// Starts a reader for `session`; its task replays and then goes live.
    pub fn subscribe(
        self: &Arc<Self>,
        session: &Arc<Session>,
        sub: StreamSubscription,
    ) -> Result<(), StreamError> {
        let log = self
            .log(&sub.parsed.stream)
            .ok_or_else(|| StreamError::UnknownStream(sub.parsed.stream.clone()))?;
        let consumer: Option<Arc<str>> = sub.consumer.as_deref().map(Arc::from);
        let committed = consumer.as_ref().and_then(|c| {
            self.consumers
                .lock()
                .get(&(Arc::clone(&log.name), Arc::clone(c)))
                .copied()
        });
        let position = sub
            .parsed
            .position
            .or(sub.position)
            .unwrap_or(StartPosition::Next);
        let from = match committed {
            Some(acked) => acked + 1,
            None => self.resolve(&log, position)?,
        };
        let reader = Arc::new(Reader::new(
            Arc::clone(session),
            Arc::clone(&sub.filter),
            sub.parsed.topics.clone(),
            sub.exceptions,
            sub.selector,
            sub.qos,
            sub.subscription_id,
            consumer.clone(),
        ));
        let key = session_key(session, &sub.filter);
        let old = self
            .readers
            .lock()
            .insert(key.clone(), (Arc::clone(&log), Arc::clone(&reader)));
        if let Some((old_log, old_reader)) = old {
            self.end_reader(&old_log, &old_reader);
        }
        match consumer {
            // The group's readers (this one's too) start from its first offset not done.
            Some(consumer) => self.join_group(&log, consumer, key, from),
            None => {
                tokio::spawn(reader::run(Arc::clone(self), log, reader, from));
            }
        }
        Ok(())
    }

    /// Stops a reader that has left the readers map (and its group, if any).
    fn end_reader(self: &Arc<Self>, log: &Arc<StreamLog>, reader: &Arc<Reader>) {
        reader.cancel();
        log.state.lock().remove_live(reader);
        self.leave_group(log, reader);
    }

    /// The offset a start position means now.
    fn resolve(&self, log: &StreamLog, position: StartPosition) -> Result<u64, StreamError> {
        if let Some(store) = self.store.as_ref().filter(|s| s.is_shared()) {
            // On one core the once-a-second refresh has to do.
            let _ = shared::blocking(|| shared::refresh(store, log));
        }
        let (first, next) = {
            let state = log.state.lock();
            (state.first, state.next)
        };
        let at_time = |ms: u64| -> Result<u64, StreamError> {
            let found = match &self.store {
                Some(store) if store.is_shared() => {
                    shared::blocking(|| store.find_stream_time(&log.name, ms))
                        .ok_or_else(|| {
                            StreamError::Invalid(
                                "a time position needs more than one core with the nats store"
                                    .into(),
                            )
                        })?
                        .map_err(|e| StreamError::Invalid(e.to_string()))?
                }
                Some(store) => store
                    .find_stream_time(&log.name, ms)
                    .map_err(|e| StreamError::Invalid(e.to_string()))?,
                None => None,
            };
            Ok(found.unwrap_or(next).max(first))
        };
        match position {
            StartPosition::First => Ok(first),
            StartPosition::Last => Ok(if next > first { next - 1 } else { next }),
            StartPosition::Next => Ok(next),
            StartPosition::Offset(n) if n > next => {
                Err(StreamError::OffsetBeyondEnd { offset: n, next })
            }
            StartPosition::Offset(n) => Ok(n.max(first)),
            StartPosition::Timestamp(ms) if ms > unix_ms_now() + 1000 => {
                Err(StreamError::TimestampInFuture(ms / 1000))
            }
            StartPosition::Timestamp(ms) => at_time(ms),
            StartPosition::Ago(ago) => {
                let ago = u64::try_from(ago.as_millis()).unwrap_or(u64::MAX);
                at_time(unix_ms_now().saturating_sub(ago))
            }
        }
    }

    /// Ends the reader of `session`'s subscription `filter`; false if there was none.
    pub fn unsubscribe(self: &Arc<Self>, session: &Arc<Session>, filter: &str) -> bool {
        let removed = self.readers.lock().remove(&session_key(session, filter));
        match removed {
            Some((log, reader)) => {
                self.end_reader(&log, &reader);
                true
            }
            None => false,
        }
    }

    /// Ends every reader of `session` (it ends, or starts clean).
    pub fn drop_session(self: &Arc<Self>, session: &Arc<Session>) {
        let ptr = Arc::as_ptr(session) as usize;
        let mut gone = Vec::new();
        self.readers.lock().retain(|(s, _), entry| {
            if *s == ptr {
                gone.push(entry.clone());
                false
            } else {
                true
            }
        });
        for (log, reader) in gone {
            self.end_reader(&log, &reader);
        }
    }

    /// The client acknowledged a streamed message of `session`'s subscription
    /// `filter`: a named consumer's offset moves on (and is stored).
    pub fn acked(&self, session: &Arc<Session>, filter: &str, message: &Message) {
        let Some(offset) = offset_of(message) else {
            return;
        };
        let entry = self
            .readers
            .lock()
            .get(&session_key(session, filter))
            .cloned();
        let Some((log, reader)) = entry else {
            return;
        };
        let (Some(consumer), Some(seat)) = (&reader.consumer, &reader.seat) else {
            return;
        };
        if let Some(committed) = seat.group.ack(offset) {
            self.commit_consumer(&log.name, consumer, committed);
        }
    }

    /// Removes every message of `name`; its offsets go on from where they were.
    pub fn purge(&self, name: &str) -> Result<u64, StreamError> {
        let log = self
            .log(name)
            .ok_or_else(|| StreamError::UnknownStream(name.to_string()))?;
        let mut state = log.state.lock();
        let removed = state.count();
        let next = state.next;
        state.first = next;
        state.bytes = 0;
        state.first_time_ms = 0;
        state.trim_tail(next);
        if let Some(store) = &self.store {
            store.submit([StoreOp::TrimStream {
                stream: name.to_string(),
                below: next,
            }]);
        }
        Ok(removed)
    }

    /// What operators see of every stream.
    pub fn info(&self) -> Vec<StreamInfo> {
        let logs = self.logs.read().clone();
        let readers = self.readers.lock();
        let consumers = self.consumers.lock();
        logs.iter()
            .map(|log| {
                let state = log.state.lock();
                let mut named: Vec<ConsumerInfo> = consumers
                    .iter()
                    .filter(|((s, _), _)| *s == log.name)
                    .map(|((_, c), acked)| ConsumerInfo {
                        name: c.to_string(),
                        acked: *acked,
                        lag: state.next.saturating_sub(acked + 1),
                    })
                    .collect();
                named.sort_by(|a, b| a.name.cmp(&b.name));
                StreamInfo {
                    name: log.name.to_string(),
                    topics: log.filters.iter().map(|f| f.as_str().to_string()).collect(),
                    first_offset: state.first,
                    last_offset: (state.next > state.first).then(|| state.next - 1),
                    next_offset: state.next,
                    messages: state.count(),
                    bytes: state.bytes,
                    readers: readers
                        .values()
                        .filter(|(l, _)| Arc::ptr_eq(l, log))
                        .count(),
                    consumers: named,
                }
            })
            .collect()
    }

    /// Removes what retention says must go, a batch at a time, whenever an
    /// append passes a limit and once a second (for age). Runs until the
    /// runtime ends.
    pub async fn retention_loop(self: Arc<Self>) {
        if let Some(store) = self.store.as_ref().filter(|s| s.is_shared()) {
            // The store enforces the limits; this node follows its heads.
            return self.refresh_loop(Arc::clone(store)).await;
        }
        loop {
            let _ =
                tokio::time::timeout(Duration::from_secs(1), self.retention_wake.notified()).await;
            let logs = self.logs.read().clone();
            for log in logs {
                retention::enforce(&self, &log).await;
            }
        }
    }
}

fn apply_state(log: &StreamLog, state: &StreamState) {
    let mut s = log.state.lock();
    s.first = state.first;
    s.next = state.next;
    s.bytes = state.bytes;
    s.first_time_ms = state.first_time_ms;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::MessageRecord;

    #[test]
    fn a_replayed_message_carries_its_offset_and_nothing_of_its_first_publish() {
        let record = StreamRecord {
            time_ms: 1,
            size: 5,
            message: MessageRecord {
                topic: "a/b".into(),
                payload: b"xy".to_vec(),
                qos: 1,
                retain: true,
                expires_at_ms: Some(unix_ms_now() + 60_000),
                payload_is_utf8: true,
                content_type: None,
                response_topic: None,
                correlation_data: None,
                user_properties: vec![
                    (OFFSET_PROPERTY.into(), "forged".into()),
                    ("k".into(), "v".into()),
                ],
                publisher: Some("alice".into()),
            },
        };
        let m = message_at(record, 42);
        assert_eq!((&*m.topic, &m.payload[..]), ("a/b", &b"xy"[..]));
        assert_eq!((m.retain, m.expires_at), (false, None));
        assert_eq!(m.publisher.as_deref(), Some("alice"));
        assert_eq!(
            m.properties().user_properties,
            vec![
                ("k".to_string(), "v".to_string()),
                (OFFSET_PROPERTY.to_string(), "42".to_string())
            ]
        );
        assert_eq!(offset_of(&m), Some(42));
        // A message without properties gets the offset alone.
        let plain = Message::new("t", bytes::Bytes::from_static(b"p"), QoS::AtMostOnce, false);
        assert_eq!(offset_of(&with_offset(&plain, 7)), Some(7));
        assert!(plain.properties().user_properties.is_empty());
    }
}
