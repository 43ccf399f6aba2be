//! The pulling side of the cluster's queues and shared groups (`queues.rs`):
//! one puller per queue (or per subject of a shared group's filter) this
//! node has consumers of, taking messages from its durable JetStream consumer
//! while the local consumers have room, and handing them to the registry.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{consumer, AckKind};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::queues::{consumer_name, queue_subject, NatsQueues, STREAM};
use super::settle::{Settle, OFFERS_HEADER};
use super::shared;
use super::subject::subject_to_topic;
use super::wire;
use super::Cluster;
use crate::core::cluster_queue::ClusterQueues;
use crate::core::message::Message;
use crate::core::queue::{shared_group_filter, QUEUE_PREFIX};
use crate::core::router::Router;

/// Messages of one queue this node holds unfinished at most (one puller's bound).
const MAX_HELD_PER_QUEUE: usize = 1_024;
/// Messages unacknowledged in one queue's consumer, all nodes together.
const MAX_ACK_PENDING: i64 = 65_536;
/// How long one fetch waits for messages on JetStream.
const FETCH_WAIT: Duration = Duration::from_millis(500);
/// Pause of a puller whose consumers have no room, or after an error.
const IDLE_PAUSE: Duration = Duration::from_millis(20);
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// How long a puller goes without messages before it checks its consumer exists.
const CONSUMER_CHECK: Duration = Duration::from_secs(5);
/// Shortest wait of a pull's JetStream request for its first message.
const MIN_PULL_WAIT: Duration = Duration::from_millis(100);
/// A message no consumer of this node will take (selectors, ACL exceptions)
/// goes back for this long, so a consumer on another node may take it...
const UNWANTED_DELAY: Duration = Duration::from_millis(100);
/// ...and a shared group's message offered this often without any member
/// taking it is dropped for the group, as on one node (a queue's waits on).
const UNWANTED_OFFERS: u64 = 20;

/// Runs one puller per queue this node has consumers of.
pub(super) async fn run_pullers(
    cluster: Cluster,
    router: Arc<Router>,
    queues: Arc<NatsQueues>,
    ack_wait: Duration,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let mut running: HashMap<String, CancellationToken> = HashMap::new();
    loop {
        let wanted: Vec<String> = queues.consumers.lock().keys().cloned().collect();
        running.retain(|name, token| {
            let keep = wanted.contains(name) && !token.is_cancelled();
            if !keep {
                token.cancel();
            }
            keep
        });
        for name in wanted {
            if running.contains_key(&name) {
                continue;
            }
            let token = shutdown.child_token();
            // A shared group pulls from one consumer per subject of its filter,
            // and one of its redelivery subject.
            let sources = shared::sources(&name);
            let key: Arc<str> = Arc::from(name.as_str());
            for index in 0..sources {
                tracker.spawn(super::fabric::stopped_in_time(
                    "queue puller",
                    token.clone(),
                    run_puller(
                        cluster.clone(),
                        Arc::clone(&router),
                        Arc::clone(&queues),
                        Source {
                            key: Arc::clone(&key),
                            index,
                        },
                        ack_wait,
                        token.clone(),
                    ),
                ));
            }
            running.insert(name, token);
        }
        tokio::select! {
            () = queues.consumers_changed.notified() => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// What one puller pulls: queue `key`, or subject `index` of shared group `key`.
#[derive(Debug, Clone)]
struct Source {
    key: Arc<str>,
    index: usize,
}

async fn open_consumer(
    cluster: &Cluster,
    source: &Source,
    ack_wait: Duration,
) -> Result<consumer::Consumer<consumer::pull::Config>, String> {
    let name = &*source.key;
    if shared_group_filter(name).is_some() {
        return shared::open_consumer(cluster, name, source.index, ack_wait, MAX_ACK_PENDING).await;
    }
    let subject = queue_subject(name).ok_or("the queue name is too long for a NATS subject")?;
    let durable = consumer_name(name);
    let stream = cluster
        .jetstream()
        .get_stream(STREAM)
        .await
        .map_err(|e| e.to_string())?;
    stream
        .get_or_create_consumer(
            &durable,
            consumer::pull::Config {
                durable_name: Some(durable.clone()),
                filter_subject: subject,
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait,
                max_ack_pending: MAX_ACK_PENDING,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| e.to_string())
}

/// Takes queue (or shared group) `source.key`'s messages from the cluster
/// while this node's consumers have room, and hands them to the registry.
/// Opens its consumer again (making what is missing) after a failed fetch,
/// or when an idle consumer is found gone: a NATS server restarted without
/// the shared groups' stream (memory storage) or a group's idle consumer.
async fn run_puller(
    cluster: Cluster,
    router: Arc<Router>,
    queues: Arc<NatsQueues>,
    source: Source,
    ack_wait: Duration,
    stop: CancellationToken,
) {
    let mut failures = 0u64;
    while !stop.is_cancelled() {
        match open_consumer(&cluster, &source, ack_wait).await {
            Ok(consumer) => {
                failures = 0;
                pull_while_open(&router, &queues, &source.key, &consumer, &stop).await;
            }
            Err(error) => {
                failures += 1;
                // The first of a run of failures (NATS down: one a second).
                if failures == 1 {
                    tracing::warn!(queue = %source.key, %error, "cluster: cannot open the queue's JetStream consumer; retrying");
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(RETRY_PAUSE) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// [`run_puller`] on one opened consumer, until a fetch fails or the
/// consumer is found gone (the caller opens it again), or `stop`.
async fn pull_while_open(
    router: &Router,
    queues: &NatsQueues,
    name: &Arc<str>,
    consumer: &consumer::Consumer<consumer::pull::Config>,
    stop: &CancellationToken,
) {
    let shared = shared_group_filter(name).is_some();
    let mut checked = Instant::now();
    // Messages of a batch beyond the room the local members had: handed to
    // them as room comes (giving them back would redeliver the batch whole).
    let mut backlog: VecDeque<Arc<Message>> = VecDeque::new();
    'pull: while !stop.is_cancelled() {
        while let Some(message) = backlog.pop_front() {
            let registry = router.queues();
            if registry.deliver_from_cluster(name, Arc::clone(&message)) {
                continue;
            }
            if registry.cluster_wants(name, &message) {
                backlog.push_front(message);
                break;
            }
            // Its member left meanwhile, and no other here wants it.
            queues.pass_on(name, &message, AckKind::Nak(Some(UNWANTED_DELAY)));
        }
        let room = router
            .queues()
            .cluster_room(name)
            .min(MAX_HELD_PER_QUEUE.saturating_sub(queues.held_count(name)));
        if room == 0 || !backlog.is_empty() {
            tokio::select! {
                () = tokio::time::sleep(IDLE_PAUSE) => {}
                () = stop.cancelled() => break,
            }
            continue;
        }
        let fetched = tokio::select! {
            fetched = consumer.batch().max_messages(room).expires(FETCH_WAIT).messages() => fetched,
            () = stop.cancelled() => break,
        };
        let mut batch = match fetched {
            Ok(batch) => batch,
            Err(error) => {
                tracing::debug!(queue = %name, %error, "cluster: queue fetch failed");
                break 'pull;
            }
        };
        let mut taken = 0usize;
        // Read to its end even when stopping: what was fetched is tracked (and so given back).
        while let Some(next) = batch.next().await {
            let jet = match next {
                Ok(jet) => jet,
                Err(error) => {
                    tracing::debug!(queue = %name, %error, "cluster: queue fetch failed");
                    break 'pull;
                }
            };
            taken += 1;
            let (messages, offers) = take(queues, name, jet).await;
            let batched = messages.len() > 1;
            for message in messages {
                if !backlog.is_empty() {
                    backlog.push_back(message);
                    continue;
                }
                let registry = router.queues();
                if registry.deliver_from_cluster(name, Arc::clone(&message)) {
                    continue;
                }
                if registry.cluster_wants(name, &message) {
                    if batched {
                        backlog.push_back(message);
                    } else {
                        queues.give_back(name, vec![message]);
                    }
                } else if shared && offers >= UNWANTED_OFFERS {
                    queues.pass_on(name, &message, AckKind::Term);
                } else {
                    queues.pass_on(name, &message, AckKind::Nak(Some(UNWANTED_DELAY)));
                }
            }
        }
        if taken > 0 {
            checked = Instant::now();
        } else if checked.elapsed() >= CONSUMER_CHECK {
            // Idle for a while: is the consumer still there? (A pull from a
            // consumer that is gone may just time out.)
            checked = Instant::now();
            if let Err(error) = consumer.get_info().await {
                tracing::debug!(queue = %name, %error, "cluster: queue consumer gone; opening it again");
                break;
            }
        }
    }
    // Stopped (no local consumer left, or the node stops): the rest goes back.
    if !backlog.is_empty() {
        queues.give_back(name, backlog.into_iter().collect());
    }
}

/// The messages of a message JetStream handed over for queue (or shared
/// group) `name` (one, or a shared group's batch, `wire.rs`), as the core's
/// messages, tracked until this node settles it (none, terminated on
/// JetStream, when it is not a Tern message), and how often it was offered.
async fn take(
    queues: &NatsQueues,
    name: &Arc<str>,
    jet: async_nats::jetstream::Message,
) -> (Vec<Arc<Message>>, u64) {
    let delivered = jet.info().map_or(1, |info| info.delivered);
    let (nats, acker) = jet.split();
    // Offered before it was published again (`settle.rs`).
    let before = nats
        .headers
        .as_ref()
        .and_then(|headers| headers.get(OFFERS_HEADER))
        .and_then(|value| value.as_str().parse::<u64>().ok())
        .unwrap_or(0);
    let offers = before.saturating_add(u64::try_from(delivered).unwrap_or(1));
    let shared = shared_group_filter(name).is_some();
    // A queue's messages all have its topic; a shared group's have their own.
    let subject = shared::original_subject(nats.subject.as_str());
    let topic = if shared {
        subject_to_topic(subject)
    } else {
        Some(format!("{QUEUE_PREFIX}{name}"))
    };
    let decoded = topic
        .ok_or(wire::WireError::Malformed("subject"))
        .and_then(|topic| wire::decode_all(&topic, &nats.payload, Instant::now()));
    let messages: Vec<Arc<Message>> = match decoded {
        Ok(messages) => messages
            .into_iter()
            .map(|(message, _)| Arc::new(message))
            .collect(),
        Err(error) => {
            queues.stats.discarded.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(queue = %name, %error, "cluster: undecodable queue message dropped");
            let _ = acker.ack_with(AckKind::Term).await;
            return (Vec::new(), offers);
        }
    };
    // Every message of a batch holds the one JetStream message (`Settle`).
    let again = (shared && messages.len() > 1)
        .then(|| shared::redelivery_subject(name, nats.subject.as_str()));
    let settle = Settle::new(acker, again, offers, messages.len());
    for message in &messages {
        queues.track(name, message, &settle);
    }
    queues
        .stats
        .delivered
        .fetch_add(messages.len() as u64, Ordering::Relaxed);
    (messages, offers)
}

/// `ClusterQueues::fetch` (a pull, HTTP): up to `max` messages of queue
/// `name` waiting now or else the first within `wait`, from the queue's
/// consumer every node shares; tracked as the pullers' are.
pub(super) async fn fetch(
    queues: &NatsQueues,
    name: Arc<str>,
    max: usize,
    wait: Duration,
) -> Vec<Arc<Message>> {
    let source = Source {
        key: Arc::clone(&name),
        index: 0,
    };
    let consumer = match open_consumer(&queues.cluster, &source, queues.ack_wait).await {
        Ok(consumer) => consumer,
        Err(error) => {
            tracing::debug!(queue = %name, %error, "cluster: cannot open the queue's consumer for a pull");
            tokio::time::sleep(RETRY_PAUSE.min(wait)).await;
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    let now = consumer.fetch().max_messages(max).messages().await;
    read_batch(queues, &name, now.ok(), &mut out).await;
    if out.is_empty() && wait >= MIN_PULL_WAIT {
        let first = consumer
            .batch()
            .max_messages(1)
            .expires(wait)
            .messages()
            .await;
        read_batch(queues, &name, first.ok(), &mut out).await;
        if !out.is_empty() && max > 1 {
            let more = consumer.fetch().max_messages(max - 1).messages().await;
            read_batch(queues, &name, more.ok(), &mut out).await;
        }
    }
    out
}

async fn read_batch(
    queues: &NatsQueues,
    name: &Arc<str>,
    batch: Option<consumer::pull::Batch>,
    out: &mut Vec<Arc<Message>>,
) {
    let Some(mut batch) = batch else {
        return;
    };
    while let Some(Ok(jet)) = batch.next().await {
        out.extend(take(queues, name, jet).await.0);
    }
}
