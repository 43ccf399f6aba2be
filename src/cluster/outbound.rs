//! The sending side of the fabric: this node's messages go to NATS in one
//! order, numbered 1, 2, … in this run (`epoch`; receivers order and
//! de-duplicate by that number), at most a window of them unconfirmed
//! (`window.rs`).
//!
//! `NatsFabric::forward` queues a message and wakes the outbound task
//! (`kick.rs`: after the connections the publish woke, if any); the task ([`run`]) takes
//! up to [`OUTBOUND_BATCH`] at a time, encodes them (`wire.rs`) and
//! publishes them in queue order, consecutive messages of one topic as one
//! NATS message (`wire::Batch`).
//!
//! The acks of QoS ≥ 1 messages wait for a sync covering them (`window.rs`):
//! one goes after a wake-up's messages, unless more are queued already and
//! fewer than [`OUTBOUND_BATCH`] messages wait uncovered; then the next
//! wake-up's sync covers them too (one sync, one confirm per node and one
//! wave of acks for both, instead of one each).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::confirmed::ConfirmedTx;
use super::fabric::{FabricStats, OUTBOUND_QUEUE, ROOM_BELOW};
use super::kick::Kick;
use super::out_queue::OutQueue;
use super::status::ClusterStatus;
use super::subject::topic_to_subject;
use super::window::{TimedOut, Window};
use super::wire::{self, Origin};
use super::Cluster;
use crate::core::message::{Message, QoS};

/// Messages taken from the queue per wake-up of the outbound task.
const OUTBOUND_BATCH: usize = 512;
/// A batch of one topic's messages is sent once it holds this many bytes
/// (far below NATS' smallest `max_payload`; a bigger message goes alone).
const BATCH_BYTES: usize = 32 * 1024;

/// About the bytes of `message` in a batch (its payload, meta and lengths).
fn entry_estimate(message: &Message) -> usize {
    message.payload.len() + message.publisher.as_deref().map_or(0, str::len) + 48
}

/// What the outbound task works with.
pub(super) struct Outbound {
    pub(super) cluster: Cluster,
    pub(super) status: Arc<ClusterStatus>,
    pub(super) stats: Arc<FabricStats>,
    pub(super) dropping: Arc<AtomicBool>,
    pub(super) room: Arc<Notify>,
    /// This run of the node: receivers order and de-duplicate per run.
    pub(super) epoch: u64,
    /// Where the window tells what the other nodes confirmed (acks wait on it).
    pub(super) confirmed: ConfirmedTx,
    /// Where the window notes messages confirmed by a timeout (their acks fail).
    pub(super) timed_out: Arc<TimedOut>,
    /// How `NatsFabric::forward` wakes this task (`kick.rs`).
    pub(super) kick: Arc<Kick>,
}

/// Publishes queued messages in queue order (see the module's doc).
pub(super) async fn run(out: Outbound, queue: Arc<OutQueue>, shutdown: CancellationToken) {
    let Outbound {
        cluster,
        status,
        stats,
        dropping,
        room,
        epoch,
        confirmed,
        timed_out,
        kick,
    } = out;
    let opened = Window::open(
        &cluster,
        status,
        Arc::clone(&stats),
        epoch,
        confirmed,
        timed_out,
    );
    let window = match opened.await {
        Ok(window) => Some(window),
        Err(confirmed) => {
            // No flow control: acks wait for no confirm.
            confirmed.set(u64::MAX);
            None
        }
    };
    let mut sender = Sender {
        node: Arc::clone(cluster.node()),
        epoch,
        window,
        cluster: cluster.clone(),
        stats: Arc::clone(&stats),
        batch: wire::Batch::default(),
        subject: None,
        topic: None,
        seq: 0,
        cover_due: false,
    };
    let mut taken_now = Vec::with_capacity(OUTBOUND_BATCH);
    loop {
        tokio::select! {
            () = kick.ready(&queue) => {}
            // Confirms (and timeouts) of syncs out, for the acks waiting on them.
            () = progress(&mut sender.window) => continue,
            () = shutdown.cancelled() => break,
        }
        // Something is queued (none: closed, the fabric is gone).
        if queue.take(&mut taken_now, OUTBOUND_BATCH) == 0 {
            break;
        }
        let sent = sender.send_all(&taken_now, &shutdown).await;
        taken_now.clear();
        if !sent {
            break;
        }
        if sender.cover_due && (queue.is_empty() || sender.uncovered() >= OUTBOUND_BATCH as u64) {
            sender.cover().await;
        }
        if queue.len() < ROOM_BELOW {
            room.notify_waiters();
        }
        if dropping.load(Ordering::Relaxed) && queue.len() < OUTBOUND_QUEUE / 2 {
            dropping.store(false, Ordering::Relaxed);
            tracing::info!(
                dropped_total = stats.dropped.load(Ordering::Relaxed),
                "cluster: messages for other nodes flow again"
            );
        }
    }
    // Connections waiting for room read on (the node is stopping).
    room.notify_waiters();
    // What was handed to the client goes out before the node stops.
    let _ = tokio::time::timeout(Duration::from_secs(2), cluster.client().flush()).await;
}

/// Resolves once the window took a confirm or a timeout (never without one).
async fn progress(window: &mut Option<Window>) {
    match window {
        Some(window) => window.progress().await,
        None => std::future::pending().await,
    }
}

/// The sending state: the number last given, the batch being gathered
/// (messages of one topic) and the window.
struct Sender {
    node: Arc<str>,
    /// This run of the node: receivers order and de-duplicate per run.
    epoch: u64,
    cluster: Cluster,
    window: Option<Window>,
    stats: Arc<FabricStats>,
    batch: wire::Batch,
    /// The subject and topic of the batch being gathered.
    subject: Option<async_nats::Subject>,
    topic: Option<Arc<str>>,
    /// The last sequence number given.
    seq: u64,
    /// A QoS ≥ 1 message went out that no sync covers yet (its ack waits).
    cover_due: bool,
}

impl Sender {
    /// Sends `messages` in order; false once the node is stopping (the
    /// client closed, or shutdown while waiting for the window).
    async fn send_all(&mut self, messages: &[Arc<Message>], shutdown: &CancellationToken) -> bool {
        let mut now = Instant::now();
        // About what the messages not pushed yet take encoded: what a batch
        // starting now sets aside (up to its limit).
        let mut left: usize = messages.iter().map(|m| entry_estimate(m)).sum();
        // A QoS ≥ 1 message's ack waits for the other nodes' confirm.
        let mut acks_wait = false;
        for message in messages {
            left = left.saturating_sub(entry_estimate(message));
            acks_wait |= message.qos != QoS::AtMostOnce;
            let same_topic = self
                .topic
                .as_ref()
                .is_some_and(|t| Arc::ptr_eq(t, &message.topic) || *t == message.topic);
            if !same_topic {
                if !self.flush().await {
                    return false;
                }
                if !self.set_topic(message) {
                    // Numbered all the same: the fabric numbered it when queued.
                    self.seq += 1;
                    continue;
                }
            }
            let seq = self.seq + 1;
            if self.window.as_mut().is_some_and(|w| !w.has_room(seq)) {
                // What waits in the batch goes first: the wait is for its confirmation.
                if !self.flush().await {
                    return false;
                }
                if let Some(window) = self.window.as_mut() {
                    if !window.admit(seq, shutdown).await {
                        return false;
                    }
                }
                now = Instant::now();
            }
            self.seq = seq;
            let origin = Origin {
                node: &self.node,
                epoch: self.epoch,
                seq,
            };
            if self.batch.is_empty() {
                let this_one = entry_estimate(message);
                self.batch
                    .reserve((left + this_one).min(BATCH_BYTES + this_one));
            }
            // Taken after any wait of the window: the expiry left is counted from it.
            self.batch.push(message, origin, now);
            if self.batch.size() >= BATCH_BYTES && !self.flush().await {
                return false;
            }
        }
        if !self.flush().await {
            return false;
        }
        self.cover_due |= acks_wait && self.window.is_some();
        true
    }

    /// Messages sent since the last sync.
    fn uncovered(&self) -> u64 {
        self.window
            .as_ref()
            .map_or(0, |window| self.seq.saturating_sub(window.last_sync()))
    }

    /// Sends a sync for what went out, unless one covers it: acks wait for its confirms.
    async fn cover(&mut self) {
        self.cover_due = false;
        if let Some(window) = self.window.as_mut() {
            window.cover(self.seq).await;
        }
    }

    /// Makes `message`'s topic the batch's (the batch is empty); false when
    /// it has no subject (counted, logged now and then).
    fn set_topic(&mut self, message: &Message) -> bool {
        match topic_to_subject(&message.topic) {
            Ok(subject) => {
                self.subject = Some(async_nats::Subject::from(subject));
                self.topic = Some(Arc::clone(&message.topic));
                true
            }
            Err(e) => {
                let total = self.stats.unforwardable.fetch_add(1, Ordering::Relaxed) + 1;
                if total == 1 || total.is_multiple_of(1000) {
                    tracing::warn!(topic_len = message.topic.len(), total, error = %e,
                        "cluster: a message was not sent to other nodes: its topic is too long for NATS");
                }
                false
            }
        }
    }

    /// Publishes the batch gathered, if any; false once the client is closed
    /// (it reconnects by itself: closed means the node is stopping).
    async fn flush(&mut self) -> bool {
        if self.batch.is_empty() {
            return true;
        }
        let Some(subject) = self.subject.clone() else {
            return true;
        };
        let count = self.batch.len() as u64;
        let payload = self.batch.take();
        if self
            .cluster
            .client()
            .publish(subject, payload)
            .await
            .is_err()
        {
            return false;
        }
        self.stats.forwarded.fetch_add(count, Ordering::Relaxed);
        self.stats.nats_messages.fetch_add(1, Ordering::Relaxed);
        if let Some(window) = self.window.as_mut() {
            window.sent(self.seq).await;
        }
        true
    }
}
