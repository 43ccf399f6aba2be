//! A stream reader: one stream subscription of one session. A task reads the
//! store in batches from the reader's position, feeding the session's queue
//! only while it has room (so a slow client holds a bounded number of
//! messages in memory), then goes live at the boundary (`LogState::go_live`).
//! A live reader whose session queue fills up falls back to reading the
//! store from the offset it missed: never a gap, never a duplicate.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::group::Seat;
use super::log::{Boundary, StreamLog};
use super::{message_at, Streams};
use crate::core::content::MessageView;
use crate::core::exceptions::Exceptions;
use crate::core::message::{Delivery, Message, QoS};
use crate::core::selector::Selector;
use crate::core::session::{PushOutcome, Session};
use crate::core::topic::Filter;

/// Messages read from the store at a time.
const READ_BATCH: usize = 1024;
/// A reader feeds its session's queue while it holds fewer than this (the
/// connection then writes up to this many in one go: fewer wake-ups and
/// socket writes per message).
const FEED_WHILE_BELOW: usize = 256;
/// A live reader's session queue holding this many makes the reader fall back
/// to reading the store.
const LIVE_QUEUE_LIMIT: usize = 1024;

#[derive(Debug)]
pub(crate) struct Reader {
    pub session: Arc<Session>,
    /// The subscription's filter as the session knows it (deliveries carry it).
    pub filter: Arc<str>,
    /// Over the original topics.
    pub topics: Filter,
    pub exceptions: Exceptions,
    /// Only messages it matches are delivered (skipped like exceptions).
    pub selector: Option<Arc<Selector>>,
    pub qos: QoS,
    pub subscription_id: Option<u32>,
    /// Named consumer, if any.
    pub consumer: Option<Arc<str>>,
    /// A named consumer's place in its group (`group.rs`): which offsets it takes.
    pub seat: Option<Seat>,
    cancelled: AtomicBool,
    /// Set by the append path when this live reader fell behind: where to resume.
    resume: Mutex<Option<u64>>,
    wake: Notify,
}

impl Reader {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        session: Arc<Session>,
        filter: Arc<str>,
        topics: Filter,
        exceptions: Exceptions,
        selector: Option<Arc<Selector>>,
        qos: QoS,
        subscription_id: Option<u32>,
        consumer: Option<Arc<str>>,
    ) -> Reader {
        Reader {
            session,
            filter,
            topics,
            exceptions,
            selector,
            qos,
            subscription_id,
            consumer,
            seat: None,
            cancelled: AtomicBool::new(false),
            resume: Mutex::new(None),
            wake: Notify::new(),
        }
    }

    /// A new reader of the same subscription in `seat` (its group changed).
    pub fn renewed(&self, seat: Seat) -> Reader {
        let mut fresh = Reader::new(
            Arc::clone(&self.session),
            Arc::clone(&self.filter),
            self.topics.clone(),
            self.exceptions.clone(),
            self.selector.clone(),
            self.qos,
            self.subscription_id,
            self.consumer.clone(),
        );
        fresh.seat = Some(seat);
        fresh
    }

    /// Whether this reader delivers `offset`: one it wants, and in a group
    /// one the group hands it (see `group.rs`).
    fn takes(&self, offset: u64, message: &Message) -> bool {
        let wanted = self.wants(message);
        match &self.seat {
            None => wanted,
            Some(seat) => seat.group.take(seat, offset, &message.topic, wanted),
        }
    }

    /// Pushes a taken message; false (and given back to the group) if the
    /// session refused it.
    fn push_taken(&self, offset: u64, message: Arc<Message>) -> bool {
        let pushed = !matches!(
            self.session.push(self.delivery(message)),
            PushOutcome::Dropped
        );
        if let Some(seat) = &self.seat {
            if !pushed {
                seat.group.release(offset);
            } else if self.qos == QoS::AtMostOnce {
                // Nothing will acknowledge it: done once handed over.
                seat.group.ack(offset);
            }
        }
        pushed
    }

    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// True when this reader's client gets `message` (its topic, the ACL's
    /// exceptions, the selector).
    pub fn wants(&self, message: &Message) -> bool {
        let topic = &*message.topic;
        self.topics.matches(topic)
            && !self.exceptions.excludes(topic)
            && self
                .selector
                .as_ref()
                .is_none_or(|s| s.matches(&MessageView::new(message)))
    }

    fn delivery(&self, message: Arc<Message>) -> Delivery {
        Delivery {
            qos: self.qos.min(message.qos),
            message,
            retain: false,
            subscription_ids: self.subscription_id.into_iter().collect(),
            filter: Some(Arc::clone(&self.filter)),
            seq: 0,
        }
    }

    /// Called by the append path (under the stream's lock) for a live reader;
    /// false when the reader fell behind and must leave the live list.
    pub fn offer(&self, offset: u64, message: &Arc<Message>) -> bool {
        if self.seat.is_none() && !self.wants(message) {
            return true;
        }
        if self.session.pending_len() >= LIVE_QUEUE_LIMIT || self.session.is_full() {
            *self.resume.lock() = Some(offset);
            self.wake.notify_one();
            return false;
        }
        if !self.takes(offset, message) {
            return true;
        }
        let taken = self.push_taken(offset, Arc::clone(message));
        if !taken {
            *self.resume.lock() = Some(offset);
            self.wake.notify_one();
        }
        taken
    }

    /// Makes this reader, taken off the live list, read the store again
    /// from `offset` (other nodes appended: `shared.rs`).
    pub fn fall_back(&self, offset: u64) {
        let mut resume = self.resume.lock();
        *resume = Some(resume.map_or(offset, |o| o.min(offset)));
        drop(resume);
        self.wake.notify_one();
    }

    /// Waits until the session's queue has room for more (or the reader is cancelled).
    async fn room(&self) {
        if self.has_room() {
            return;
        }
        let space = self.session.space();
        loop {
            let notified = space.notified();
            tokio::pin!(notified);
            // Registered before the check, so a take in between is not missed.
            notified.as_mut().enable();
            if self.is_cancelled() || self.has_room() {
                return;
            }
            // The timeout covers a session whose client is away.
            let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
        }
    }

    fn has_room(&self) -> bool {
        let connected_or_kept = self.session.is_connected() || self.qos != QoS::AtMostOnce;
        // Below the session's own limit too, when that is smaller: a replay
        // must wait, not overflow (and drop) what it just queued.
        connected_or_kept
            && self.session.pending_len() < FEED_WHILE_BELOW
            && !self.session.is_full()
    }

    /// Hands a message of the in-memory tail to the session at once (bounded by
    /// the tail's size).
    pub fn push_now(&self, offset: u64, message: &Arc<Message>) {
        if self.takes(offset, message) {
            self.push_taken(offset, Arc::clone(message));
        }
    }

    /// Hands one replayed message to the session, waiting for room first.
    async fn feed(&self, offset: u64, message: Arc<Message>) {
        if self.seat.is_none() {
            if !self.wants(&message) {
                return;
            }
            // Checked and pushed under one lock of the session's queue; waits
            // for room only when it is refused. A reader cancelled meanwhile
            // (unsubscribed, subscribed again) pushes nothing more.
            let mut delivery = self.delivery(message);
            let kept_offline = self.qos != QoS::AtMostOnce;
            loop {
                if self.is_cancelled() {
                    return;
                }
                match self
                    .session
                    .push_below(delivery, FEED_WHILE_BELOW, kept_offline)
                {
                    Ok(()) => return,
                    Err(back) => delivery = back,
                }
                self.room().await;
            }
        }
        self.room().await;
        // Taken right before the push (no await between): a reader cancelled
        // meanwhile is of an older epoch and takes nothing.
        if !self.is_cancelled() && self.takes(offset, &message) {
            self.push_taken(offset, message);
        }
    }
}

/// Counts a reader task on its stream while it runs (the stream keeps its
/// tail meanwhile, `log.rs`), however the task ends.
struct Reading(Arc<StreamLog>);

impl Reading {
    fn start(log: &Arc<StreamLog>) -> Reading {
        log.state.lock().reader_started();
        Reading(Arc::clone(log))
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        self.0.state.lock().reader_ended();
    }
}

/// The reader's task: replay from `from`, then live, until cancelled.
pub(crate) async fn run(
    streams: Arc<Streams>,
    log: Arc<StreamLog>,
    reader: Arc<Reader>,
    from: u64,
) {
    // Before the first read: what is appended from here on stays in the tail.
    let _reading = Reading::start(&log);
    let mut cursor = from;
    let Some(store) = streams.store().cloned() else {
        return;
    };
    while !reader.is_cancelled() {
        let first = log.state.lock().first;
        cursor = cursor.max(first);
        if let Some(seat) = &reader.seat {
            seat.group.skip_below(first);
        }
        let name = log.name.to_string();
        let read_store = Arc::clone(&store);
        let read =
            tokio::task::spawn_blocking(move || read_store.read_stream(&name, cursor, READ_BATCH))
                .await;
        let batch = match read {
            Ok(Ok(batch)) => batch,
            Ok(Err(e)) => {
                tracing::warn!(stream = %log.name, error = %e, "stream read failed; the reader stops");
                return;
            }
            Err(_) => return,
        };
        let full = batch.len() == READ_BATCH;
        for (offset, record) in batch {
            if offset < cursor {
                continue;
            }
            reader
                .feed(offset, Arc::new(message_at(record, offset)))
                .await;
            cursor = offset + 1;
            if reader.is_cancelled() {
                return;
            }
        }
        if full {
            continue;
        }
        let boundary = log.state.lock().go_live(&reader, cursor);
        match boundary {
            Boundary::Behind => {
                // What lies between is submitted but not committed yet.
                let _ = store.flush().await;
            }
            Boundary::Live => loop {
                reader.wake.notified().await;
                if reader.is_cancelled() {
                    log.state.lock().remove_live(&reader);
                    return;
                }
                if let Some(resume) = reader.resume.lock().take() {
                    cursor = resume;
                    break;
                }
            },
        }
    }
}
