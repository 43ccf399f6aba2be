//! The sending side of the fabric: this node's messages go to NATS in one
//! order, numbered 1, 2, … in this run (`epoch`; receivers order and
//! de-duplicate by that number), at most a window of them unconfirmed
//! (`window.rs`).
//!
//! - Queued: `NatsFabric::forward` queues a message; the outbound task
//!   ([`run`]) takes up to [`OUTBOUND_BATCH`] at a time, encodes them
//!   (`wire.rs`) and publishes them in queue order, consecutive messages of
//!   one topic as one NATS message (`wire::Batch`).
//! - Direct: a lone message (nothing queued or being sent, and this node
//!   published nothing for [`DIRECT_GAP`]) is encoded and handed to the NATS
//!   client by the connection's task itself: one task hand-off less on the
//!   way, what a lone message's latency is made of. Under load messages take
//!   the queue, where they batch.
//!
//! Both paths number and send under [`Outgoing::sender`]. The outbound task
//! holds it while it sends, across its awaits (the NATS client's queue, the
//! window); `forward` only ever `try_lock`s it and queues when it is taken,
//! so no task but the outbound one waits on it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use super::fabric::{FabricStats, OUTBOUND_QUEUE, ROOM_BELOW};
use super::status::ClusterStatus;
use super::subject::topic_to_subject;
use super::window::Window;
use super::wire::{self, Origin};
use super::Cluster;
use crate::core::message::Message;

/// Messages taken from the queue per wake-up of the outbound task.
const OUTBOUND_BATCH: usize = 512;
/// A batch of one topic's messages is sent once it holds this many bytes
/// (far below NATS' smallest `max_payload`; a bigger message goes alone).
const BATCH_BYTES: usize = 32 * 1024;
/// A message goes direct only this long after this node's last NATS
/// message: under load the queue batches instead (a burst costs one direct
/// message per gap, a few percent of what the queue sends at full speed).
const DIRECT_GAP: Duration = Duration::from_micros(100);

/// What `NatsFabric::forward` and the outbound task share.
pub(super) struct Outgoing {
    sender: tokio::sync::Mutex<Sender>,
    /// Messages queued or taken by the outbound task and not sent yet: a
    /// message goes direct only when there are none (it would pass them).
    pending: AtomicUsize,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("pending", &self.pending.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Outgoing {
    pub(super) fn new(cluster: &Cluster, stats: Arc<FabricStats>, epoch: u64) -> Outgoing {
        Outgoing {
            sender: tokio::sync::Mutex::new(Sender {
                node: Arc::clone(cluster.node()),
                epoch,
                cluster: cluster.clone(),
                window: None,
                open: false,
                stats,
                batch: wire::Batch::with_capacity(BATCH_BYTES + 1024),
                subject: None,
                topic: None,
                seq: 0,
                last_publish: None,
            }),
            pending: AtomicUsize::new(0),
        }
    }

    /// Sends `message` from the caller's task when it is alone (see the
    /// module's doc); false when it must be queued ([`Outgoing::queued`]).
    pub(super) fn try_direct(&self, message: &Message) -> bool {
        if self.pending.load(Ordering::Acquire) != 0 {
            return false;
        }
        let Ok(mut sender) = self.sender.try_lock() else {
            return false;
        };
        // Checked again under the lock: the outbound task counts down under it.
        self.pending.load(Ordering::Acquire) == 0 && sender.direct(message, Instant::now())
    }

    /// A message is about to be queued (before `try_send`)...
    pub(super) fn queued(&self) {
        self.pending.fetch_add(1, Ordering::AcqRel);
    }

    /// ...or was not, or was sent by the outbound task.
    pub(super) fn done(&self, count: usize) {
        self.pending.fetch_sub(count, Ordering::AcqRel);
    }
}

/// What the outbound task works with besides [`Outgoing`].
pub(super) struct Outbound {
    pub(super) cluster: Cluster,
    pub(super) status: Arc<ClusterStatus>,
    pub(super) stats: Arc<FabricStats>,
    pub(super) dropping: Arc<AtomicBool>,
    pub(super) room: Arc<Notify>,
    pub(super) outgoing: Arc<Outgoing>,
}

/// Publishes queued messages in queue order (see the module's doc).
pub(super) async fn run(
    out: Outbound,
    mut queue: mpsc::Receiver<Arc<Message>>,
    shutdown: CancellationToken,
) {
    let Outbound {
        cluster,
        status,
        stats,
        dropping,
        room,
        outgoing,
    } = out;
    {
        let mut sender = outgoing.sender.lock().await;
        let epoch = sender.epoch;
        sender.window = Window::open(&cluster, status, Arc::clone(&stats), epoch).await;
        sender.open = true;
    }
    let mut taken_now = Vec::with_capacity(OUTBOUND_BATCH);
    loop {
        let taken = tokio::select! {
            taken = queue.recv_many(&mut taken_now, OUTBOUND_BATCH) => taken,
            () = shutdown.cancelled() => break,
        };
        if taken == 0 {
            break;
        }
        let mut sender = outgoing.sender.lock().await;
        let sent = sender.send_all(taken_now.drain(..), &shutdown).await;
        outgoing.done(taken);
        drop(sender);
        if !sent {
            break;
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

/// The sending state: the number last given, the batch being gathered
/// (messages of one topic) and the window.
struct Sender {
    node: Arc<str>,
    /// This run of the node: receivers order and de-duplicate per run.
    epoch: u64,
    cluster: Cluster,
    window: Option<Window>,
    /// The window is settled (opened, or refused by NATS): sending may start.
    open: bool,
    stats: Arc<FabricStats>,
    batch: wire::Batch,
    /// The subject and topic of the batch being gathered.
    subject: Option<async_nats::Subject>,
    topic: Option<Arc<str>>,
    /// The last sequence number given.
    seq: u64,
    /// When this node last handed a message to NATS.
    last_publish: Option<Instant>,
}

impl Sender {
    /// Sends `messages` in order; false once the node is stopping (the
    /// client closed, or shutdown while waiting for the window).
    async fn send_all(
        &mut self,
        messages: impl Iterator<Item = Arc<Message>>,
        shutdown: &CancellationToken,
    ) -> bool {
        let mut now = Instant::now();
        for message in messages {
            if self.topic.as_deref() != Some(&*message.topic) {
                if !self.flush().await {
                    return false;
                }
                if !self.set_topic(&message) {
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
            // Taken after any wait of the window: the expiry left is counted from it.
            self.batch.push(&message, origin, now);
            if self.batch.size() >= BATCH_BYTES && !self.flush().await {
                return false;
            }
        }
        self.flush().await
    }

    /// `message` alone, now, if nothing stands in the way (the window full
    /// or due a sync, the NATS client's queue full, a message sent less than
    /// [`DIRECT_GAP`] ago); false when it must be queued instead.
    fn direct(&mut self, message: &Message, now: Instant) -> bool {
        if !self.open || !self.batch.is_empty() {
            return false;
        }
        if self
            .last_publish
            .is_some_and(|at| now.saturating_duration_since(at) < DIRECT_GAP)
        {
            return false;
        }
        let seq = self.seq + 1;
        if self
            .window
            .as_mut()
            .is_some_and(|w| !w.has_room(seq) || w.wants_sync(seq))
        {
            return false;
        }
        if self.topic.as_deref() != Some(&*message.topic) && !self.set_topic(message) {
            return true; // not forwardable: counted, as the queue would
        }
        let Some(subject) = self.subject.clone() else {
            return false;
        };
        let origin = Origin {
            node: &self.node,
            epoch: self.epoch,
            seq,
        };
        let payload = wire::encode(message, origin, now);
        // Ready at once unless the client's own queue is full (then the
        // message is queued here, its number unused).
        let Some(published) = self
            .cluster
            .client()
            .publish(subject, payload)
            .now_or_never()
        else {
            return false;
        };
        self.seq = seq;
        self.last_publish = Some(now);
        // An error: the client is closed, the node is stopping.
        if published.is_ok() {
            self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
            self.stats.nats_messages.fetch_add(1, Ordering::Relaxed);
            self.stats.direct.fetch_add(1, Ordering::Relaxed);
        }
        true
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
        self.last_publish = Some(Instant::now());
        self.stats.forwarded.fetch_add(count, Ordering::Relaxed);
        self.stats.nats_messages.fetch_add(1, Ordering::Relaxed);
        if let Some(window) = self.window.as_mut() {
            window.sent(self.seq).await;
        }
        true
    }
}
