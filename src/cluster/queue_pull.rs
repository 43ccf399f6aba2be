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

use super::queues::{consumer_name, queue_subject, NatsQueues, Settle, STREAM};
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
            // A shared group pulls from one consumer per subject of its filter.
            let sources = shared::group_subjects(&name).map_or(1, |subjects| subjects.len());
            let key: Arc<str> = Arc::from(name.as_str());
            for index in 0..sources {
                tracker.spawn(run_puller(
                    cluster.clone(),
                    Arc::clone(&router),
                    Arc::clone(&queues),
                    Source {
                        key: Arc::clone(&key),
                        index,
                    },
                    ack_wait,
                    token.clone(),
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
async fn run_puller(
    cluster: Cluster,
    router: Arc<Router>,
    queues: Arc<NatsQueues>,
    source: Source,
    ack_wait: Duration,
    stop: CancellationToken,
) {
    let name = Arc::clone(&source.key);
    let consumer = loop {
        match open_consumer(&cluster, &source, ack_wait).await {
            Ok(consumer) => break consumer,
            Err(error) => {
                tracing::warn!(queue = %name, %error, "cluster: cannot open the queue's JetStream consumer; retrying");
                tokio::select! {
                    () = tokio::time::sleep(RETRY_PAUSE) => {}
                    () = stop.cancelled() => return,
                }
            }
        }
    };
    // A queue's messages all have its topic; a shared group's have their own.
    let shared = shared_group_filter(&name).is_some();
    let queue_topic = format!("{QUEUE_PREFIX}{name}");
    // Messages of a batch beyond the room the local consumers had: handed
    // to them as room comes (giving them back would redeliver the batch whole).
    let mut backlog: VecDeque<Arc<Message>> = VecDeque::new();
    while !stop.is_cancelled() {
        while let Some(message) = backlog.front() {
            if !router
                .queues()
                .deliver_from_cluster(&name, Arc::clone(message))
            {
                break;
            }
            backlog.pop_front();
        }
        let room = router
            .queues()
            .cluster_room(&name)
            .min(MAX_HELD_PER_QUEUE.saturating_sub(queues.held_count(&name)));
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
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
        };
        // Read to its end even when stopping: what was fetched is tracked (and so given back).
        while let Some(next) = batch.next().await {
            let Ok(jet) = next else {
                break;
            };
            let (nats, acker) = jet.split();
            let topic = if shared {
                subject_to_topic(nats.subject.as_str())
            } else {
                Some(queue_topic.clone())
            };
            let decoded = topic
                .ok_or(wire::WireError::Malformed("subject"))
                .and_then(|topic| wire::decode_all(&topic, &nats.payload, Instant::now()));
            let messages = match decoded {
                Ok(messages) => messages,
                Err(error) => {
                    queues.stats.discarded.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(queue = %name, %error, "cluster: undecodable queue message dropped");
                    let _ = acker.ack_with(AckKind::Term).await;
                    continue;
                }
            };
            let batched = messages.len() > 1;
            let settle = Settle::new(acker);
            let messages: Vec<Arc<Message>> = messages
                .into_iter()
                .map(|(message, _)| Arc::new(message))
                .collect();
            for message in &messages {
                queues.track(&name, message, &settle);
            }
            drop(settle);
            queues
                .stats
                .delivered
                .fetch_add(messages.len() as u64, Ordering::Relaxed);
            for message in messages {
                if !backlog.is_empty()
                    || !router
                        .queues()
                        .deliver_from_cluster(&name, Arc::clone(&message))
                {
                    if batched {
                        backlog.push_back(message);
                    } else {
                        queues.give_back(&name, vec![message]);
                    }
                }
            }
        }
    }
    // Stopped (no local consumer left, or the node stops): the rest goes back.
    if !backlog.is_empty() {
        queues.give_back(&name, backlog.into_iter().collect());
    }
}
