//! Point-to-point queues cluster-wide: `$queue/<q>` (STOMP `/queue/<q>`) is
//! one queue in the whole cluster, on JetStream. [`NatsQueues`] implements the
//! core's `ClusterQueues` (see `core/cluster_queue.rs` for the seam). Shared
//! subscription groups run on the same machinery from another stream
//! (`shared.rs`).
//!
//! Design:
//! - One work-queue stream, [`STREAM`] (retention = work queue: a message
//!   leaves once acked), one subject per queue: `ternq.` + the queue name's
//!   topic subject (`subject.rs`, reversible). `max_messages_per_subject` =
//!   `limits.queue_max_messages` with discard-new per subject: the per-queue
//!   bound holds cluster-wide (waiting plus unacknowledged, every node).
//! - Publish: the registry's `enqueue` queues the message here (bounded, never
//!   waits); one task publishes to JetStream in order and reads the acks. A
//!   message the stream refuses (queue full) is counted and logged, and the
//!   queue answers `Full` to publishers on this node for [`FULL_FOR`]: the
//!   first message over the bound is dropped, the next ones are refused as on
//!   one node.
//! - Consume: per queue one durable pull consumer (explicit acks, ack wait =
//!   `cluster.ack_wait_secs`) shared by every node. A node with local
//!   consumers of `q` runs one puller for it, which fetches as many messages
//!   as the local consumers have room for and hands them to the registry.
//! - Ack: a message is finished when nothing on this node holds it any more
//!   (the consumer acked it: MQTT PUBACK/PUBCOMP, STOMP ACK, QoS 0 written);
//!   the ack task sees its `Weak` die and acks it on JetStream. So the core
//!   needs no ack callback through every protocol's path.
//! - Given back (STOMP NACK, a consumer that leaves with unacknowledged
//!   messages, no local consumer with room): `nak` at once, so JetStream
//!   redelivers it to a consumer on any node (a shared group's batch partly
//!   done: its part given back only, `settle.rs`).
//! - Held: while this node holds a message (a consumer has not acked it, an
//!   HTTP lease runs), the ack task tells JetStream it is in progress every
//!   half ack wait, so it is not handed out twice however long that takes.
//! - A node that dies acks nothing: JetStream redelivers its messages after
//!   the ack wait. A node that stops (SIGTERM) naks what it holds.
//! - Pulls (HTTP): `fetch` takes messages from the same consumer for a pull;
//!   the registry leases them and they are settled as the rest.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_nats::jetstream::{stream, AckKind};
use parking_lot::Mutex;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::fabric::stopped_in_time;
use super::settle::Settle;
use super::subject::topic_to_subject;
use super::wire::{self, Origin};
use super::Cluster;
use crate::core::cluster_queue::ClusterQueues;
use crate::core::message::Message;
use crate::core::queue::QueueError;
use crate::core::router::Router;

/// The work-queue stream that holds every queue's messages.
pub const STREAM: &str = "TERN_QUEUES";
/// First token of every queue subject.
const SUBJECT_PREFIX: &str = "ternq";
/// Messages waiting to be published to JetStream; beyond: `Full`.
const OUTBOUND_QUEUE: usize = 16_384;
const OUTBOUND_BATCH: usize = 256;
/// How long a queue the stream refused answers `Full` on this node.
pub const FULL_FOR: Duration = Duration::from_secs(1);
/// How often the ack task looks for finished messages.
const ACK_TICK: Duration = Duration::from_millis(20);
/// Shortest interval between two rounds of in-progress acks.
const PROGRESS_MIN: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
#[error("JetStream stream {STREAM}: {0}")]
pub struct QueueStreamError(String);

/// Counters of queues and shared groups (`/metrics`; relaxed atomics).
#[derive(Debug, Default)]
pub struct QueueStats {
    /// Queue messages this node's clients published, stored in the stream.
    pub published: AtomicU64,
    /// Messages the stream refused (queue full cluster-wide) or NATS lost.
    pub refused: AtomicU64,
    /// Messages taken from JetStream for this node's consumers and members.
    pub delivered: AtomicU64,
    /// Of those, acked on JetStream (their consumer was done).
    pub acked: AtomicU64,
    /// Of those, given back for redelivery (NACK, consumer gone, no room).
    pub given_back: AtomicU64,
    /// Messages from the stream that were not a message (bad encoding): dropped.
    pub discarded: AtomicU64,
}

/// A message handed to this node, and how to settle it on JetStream.
struct Tracked {
    message: Weak<Message>,
    settle: Arc<Settle>,
}

#[derive(Default)]
struct Held {
    by_queue: HashMap<Arc<str>, Vec<Tracked>>,
    /// Given back: settled on the next round of the ack task once nothing
    /// else holds their JetStream message.
    to_settle: Vec<Arc<Settle>>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("queues", &self.by_queue.len())
            .field("to_settle", &self.to_settle.len())
            .finish()
    }
}

/// The cluster's queues as the core's registry sees them.
#[derive(Debug)]
pub struct NatsQueues {
    outbound: mpsc::Sender<(Arc<str>, Arc<Message>)>,
    /// Queues the stream refused lately: refused here until then.
    full: Mutex<HashMap<String, Instant>>,
    max_messages: usize,
    /// Local consumers per queue (only queues with at least one).
    pub(super) consumers: Mutex<HashMap<String, usize>>,
    pub(super) consumers_changed: Notify,
    held: Mutex<Held>,
    held_changed: Notify,
    pub(super) stats: Arc<QueueStats>,
    /// For pulls (HTTP), which take messages from the queues' consumers.
    pub(super) cluster: Cluster,
    pub(super) ack_wait: Duration,
}

impl ClusterQueues for NatsQueues {
    fn enqueue(&self, name: &str, message: &Arc<Message>) -> Result<(), QueueError> {
        let full = || QueueError::Full {
            queue: name.to_string(),
            max: self.max_messages,
        };
        {
            let mut refused = self.full.lock();
            if let Some(until) = refused.get(name) {
                if Instant::now() < *until {
                    return Err(full());
                }
                refused.remove(name);
            }
        }
        self.outbound
            .try_send((Arc::from(name), Arc::clone(message)))
            .map_err(|_| full())
    }

    fn consumers_changed(&self, name: &str, count: usize) {
        let mut consumers = self.consumers.lock();
        if count == 0 {
            consumers.remove(name);
        } else {
            consumers.insert(name.to_string(), count);
        }
        drop(consumers);
        self.consumers_changed.notify_one();
    }

    fn give_back(&self, name: &str, messages: Vec<Arc<Message>>) {
        let mut held = self.held.lock();
        let held = &mut *held;
        let Some(tracked) = held.by_queue.get_mut(name) else {
            return;
        };
        for message in &messages {
            let target = Arc::as_ptr(message);
            if let Some(index) = tracked.iter().position(|t| t.message.as_ptr() == target) {
                let Tracked { settle, .. } = tracked.swap_remove(index);
                settle.went_back(AckKind::Nak(None), message);
                held.to_settle.push(settle);
            }
        }
        self.stats
            .given_back
            .fetch_add(messages.len() as u64, Ordering::Relaxed);
        self.held_changed.notify_one();
    }

    fn fetch(
        &self,
        name: &str,
        max: usize,
        wait: Duration,
    ) -> Pin<Box<dyn Future<Output = Vec<Arc<Message>>> + Send + '_>> {
        let name: Arc<str> = Arc::from(name);
        Box::pin(async move { super::queue_pull::fetch(self, name, max, wait).await })
    }
}

impl NatsQueues {
    pub fn stats(&self) -> &Arc<QueueStats> {
        &self.stats
    }

    pub(super) fn held_count(&self, name: &str) -> usize {
        self.held.lock().by_queue.get(name).map_or(0, Vec::len)
    }

    /// `message` of queue `name`, which no consumer of this node will ever
    /// take (their selectors or ACL exceptions leave it out), goes back to
    /// JetStream settled as `kind`: a nak after a delay (a consumer on another
    /// node may take it), or a term once it was offered often enough.
    pub(super) fn pass_on(&self, name: &str, message: &Arc<Message>, kind: AckKind) {
        let mut held = self.held.lock();
        let held = &mut *held;
        let Some(tracked) = held.by_queue.get_mut(name) else {
            return;
        };
        let target = Arc::as_ptr(message);
        if let Some(index) = tracked.iter().position(|t| t.message.as_ptr() == target) {
            let Tracked { settle, .. } = tracked.swap_remove(index);
            settle.went_back(kind, message);
            held.to_settle.push(settle);
            self.stats.given_back.fetch_add(1, Ordering::Relaxed);
        }
        self.held_changed.notify_one();
    }

    pub(super) fn track(&self, name: &Arc<str>, message: &Arc<Message>, settle: &Arc<Settle>) {
        self.held
            .lock()
            .by_queue
            .entry(Arc::clone(name))
            .or_default()
            .push(Tracked {
                message: Arc::downgrade(message),
                settle: Arc::clone(settle),
            });
    }

    fn note_refused(&self, name: &str, error: &dyn std::fmt::Display) {
        self.full
            .lock()
            .insert(name.to_string(), Instant::now() + FULL_FOR);
        let total = self.stats.refused.fetch_add(1, Ordering::Relaxed) + 1;
        // The first and then every 1000th: a full queue refuses a flood.
        if total == 1 || total.is_multiple_of(1000) {
            tracing::warn!(queue = name, refused_total = total, error = %error,
                "cluster: a queue message was refused by JetStream (queue full cluster-wide: \
                 limits.queue_max_messages); the queue refuses publishes here for a moment");
        }
    }
}

/// The subject of queue `name`'s messages in [`STREAM`]; None if too long.
pub fn queue_subject(name: &str) -> Option<String> {
    topic_to_subject(name)
        .ok()
        .map(|subject| format!("{SUBJECT_PREFIX}.{subject}"))
}

/// The durable consumer of queue `name`: its name in hex (reversible, only
/// characters a consumer name may hold), or a hash of a very long name.
pub fn consumer_name(name: &str) -> String {
    if name.len() <= 100 {
        let mut out = String::with_capacity(2 + 2 * name.len());
        out.push_str("q_");
        for byte in name.bytes() {
            out.push_str(&format!("{byte:02x}"));
        }
        out
    } else {
        // FNV-1a: stable across builds (the name is shared by every node).
        let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        format!("qh_{hash:016x}_{}", name.len())
    }
}

/// Makes (or updates) [`STREAM`], hands the router's queues to the cluster
/// and starts the publisher, the ack task and the pullers' manager.
pub async fn start(
    cluster: &Cluster,
    router: &Arc<Router>,
    max_messages: usize,
    ack_wait: Duration,
    stats: Arc<QueueStats>,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> Result<Arc<NatsQueues>, QueueStreamError> {
    let config = stream::Config {
        name: STREAM.to_string(),
        subjects: vec![format!("{SUBJECT_PREFIX}.>")],
        retention: stream::RetentionPolicy::WorkQueue,
        max_messages_per_subject: i64::try_from(max_messages).unwrap_or(i64::MAX),
        discard: stream::DiscardPolicy::New,
        discard_new_per_subject: true,
        num_replicas: cluster.replicas().max(1),
        ..Default::default()
    };
    let error = |e: &dyn std::fmt::Display| QueueStreamError(e.to_string());
    let mut made =
        crate::store::nats::made::get_or_create_stream(cluster.jetstream(), config.clone())
            .await
            .map_err(|e| error(&e))?;
    let current = made.info().await.map_err(|e| error(&e))?.config.clone();
    if current.max_messages_per_subject != config.max_messages_per_subject {
        // `limits.queue_max_messages` changed since the stream was made: the last node started wins.
        cluster
            .jetstream()
            .update_stream(config)
            .await
            .map_err(|e| error(&e))?;
    }
    let (outbound, queue) = mpsc::channel(OUTBOUND_QUEUE);
    let queues = Arc::new(NatsQueues {
        outbound,
        full: Mutex::new(HashMap::new()),
        max_messages,
        consumers: Mutex::new(HashMap::new()),
        consumers_changed: Notify::new(),
        held: Mutex::new(Held::default()),
        held_changed: Notify::new(),
        stats,
        cluster: cluster.clone(),
        ack_wait,
    });
    // Each ends at most 2 s after the shutdown: one waiting on JetStream (a
    // NATS server just lost, a leader being elected) must not hold the exit.
    tracker.spawn(stopped_in_time(
        "queue publisher",
        shutdown.clone(),
        run_publisher(
            cluster.clone(),
            Arc::clone(&queues),
            queue,
            shutdown.clone(),
        ),
    ));
    tracker.spawn(stopped_in_time(
        "queue acks",
        shutdown.clone(),
        run_acks(Arc::clone(&queues), shutdown.clone()),
    ));
    tracker.spawn(stopped_in_time(
        "queue pullers",
        shutdown.clone(),
        super::queue_pull::run_pullers(
            cluster.clone(),
            Arc::clone(router),
            Arc::clone(&queues),
            ack_wait,
            shutdown,
            tracker.clone(),
        ),
    ));
    router
        .queues()
        .set_cluster(Arc::clone(&queues) as Arc<dyn ClusterQueues>);
    Ok(queues)
}

/// Publishes queued messages to the stream in order, then reads their acks.
async fn run_publisher(
    cluster: Cluster,
    queues: Arc<NatsQueues>,
    mut queue: mpsc::Receiver<(Arc<str>, Arc<Message>)>,
    shutdown: CancellationToken,
) {
    let node = Arc::clone(cluster.node());
    let mut batch = Vec::with_capacity(OUTBOUND_BATCH);
    let mut pending = Vec::with_capacity(OUTBOUND_BATCH);
    loop {
        let taken = tokio::select! {
            taken = queue.recv_many(&mut batch, OUTBOUND_BATCH) => taken,
            () = shutdown.cancelled() => 0,
        };
        if taken == 0 {
            return;
        }
        let now = Instant::now();
        for (name, message) in batch.drain(..) {
            let Some(subject) = queue_subject(&name) else {
                queues.note_refused(&name, &"the queue name is too long for a NATS subject");
                continue;
            };
            let origin = Origin {
                node: &node,
                epoch: 0,
                seq: 0,
            };
            let payload = wire::encode(&message, origin, now);
            match cluster.jetstream().publish(subject, payload).await {
                Ok(ack) => pending.push((name, ack)),
                Err(e) => queues.note_refused(&name, &e),
            }
        }
        for (name, ack) in pending.drain(..) {
            match ack.await {
                Ok(_) => {
                    queues.stats.published.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => queues.note_refused(&name, &e),
            }
        }
    }
}

/// Acks the messages nothing here holds any more and naks the ones given
/// back; at shutdown naks everything still held (other nodes take it at once).
async fn run_acks(queues: Arc<NatsQueues>, shutdown: CancellationToken) {
    // Held messages are told to JetStream as in progress this often, so one a
    // consumer (or an HTTP lease) keeps longer than the ack wait is not handed
    // out again meanwhile; a node that dies stops telling, and JetStream
    // redelivers its messages after the ack wait.
    let progress_every = (queues.ack_wait / 2).max(PROGRESS_MIN);
    let mut last_progress = Instant::now();
    loop {
        let stopping = tokio::select! {
            () = queues.held_changed.notified() => false,
            () = tokio::time::sleep(ACK_TICK) => false,
            () = shutdown.cancelled() => true,
        };
        let done = {
            let mut held = queues.held.lock();
            let mut done = std::mem::take(&mut held.to_settle);
            for tracked in held.by_queue.values_mut() {
                let mut index = 0;
                while index < tracked.len() {
                    if tracked[index].message.strong_count() == 0 {
                        done.push(tracked.swap_remove(index).settle);
                    } else if stopping {
                        // Whatever a session still had is not known done: handed out again.
                        let Tracked { message, settle } = tracked.swap_remove(index);
                        if let Some(message) = message.upgrade() {
                            settle.went_back(AckKind::Nak(None), &message);
                        }
                        done.push(settle);
                    } else {
                        index += 1;
                    }
                }
            }
            held.by_queue.retain(|_, tracked| !tracked.is_empty());
            done
        };
        for settle in done {
            // Messages of the same batch still held: the last one settles it.
            let Ok(settle) = Arc::try_unwrap(settle) else {
                continue;
            };
            let acked = settle.settle(&queues.cluster).await;
            queues
                .stats
                .acked
                .fetch_add(acked as u64, Ordering::Relaxed);
        }
        if stopping {
            return;
        }
        if last_progress.elapsed() >= progress_every {
            last_progress = Instant::now();
            let mut held: Vec<Arc<Settle>> = queues
                .held
                .lock()
                .by_queue
                .values()
                .flatten()
                .map(|tracked| Arc::clone(&tracked.settle))
                .collect();
            // One in-progress ack per JetStream message, however many of a batch are held.
            held.sort_unstable_by_key(|settle| Arc::as_ptr(settle) as usize);
            held.dedup_by(|a, b| Arc::ptr_eq(a, b));
            for settle in held {
                settle.progress().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_subjects_are_distinct_and_under_the_stream() {
        let jobs = queue_subject("jobs").unwrap();
        assert!(jobs.starts_with("ternq."));
        assert_ne!(queue_subject("a/b"), queue_subject("a.b"));
        assert_ne!(queue_subject("a/b"), queue_subject("a/b/c"));
        assert!(queue_subject(&"x".repeat(10_000)).is_none());
    }

    #[test]
    fn consumer_names_are_distinct_and_valid() {
        let names = ["jobs", "a/b", "a.b", "a b", "$x", "*", ">"];
        let made: std::collections::HashSet<String> =
            names.iter().map(|n| consumer_name(n)).collect();
        assert_eq!(made.len(), names.len());
        let long = consumer_name(&"y".repeat(500));
        for name in made.iter().chain([&long]) {
            assert!(name.len() <= 210, "{name}");
            assert!(
                name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                "{name}"
            );
        }
        assert_eq!(consumer_name("jobs"), "q_6a6f6273");
    }
}
