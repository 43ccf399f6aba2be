//! The NATS backend (`[storage] backend = "nats"`, cluster mode): the store's
//! records in the JetStream KV bucket `tern_store`, with `[cluster] replicas`
//! copies, so they outlive this node's disk. A commit is one message of this
//! node's journal (stream `TERN_JOURNAL`); the records that live on are
//! compacted into the bucket in the background.
//!
//! - this file: [`NatsBackend`]: the seam's calls, run on the node's runtime.
//! - `keys.rs`: the bucket's keys and values.
//! - `mirror.rs`: what this node knows of its keys; a batch → its writes.
//! - `journal.rs`: a batch's writes as one journal message; reading journals.
//! - `compact.rs`: the journal's live records into the bucket, then a purge.
//! - `floor.rs`: below it a journal's messages may be gone; readers ignore them.
//! - `replay.rs`, `recover.rs`: the bucket with the journals over it (at
//!   start, at a takeover).
//! - `orphan.rs`: a dead node's journal purged once its ids are adopted.
//! - `publish.rs`: messages published with one wait for all acks.
//! - `load.rs`: reading the bucket at start, one client's keys at a takeover.
//! - `patience.rs`: retrying while JetStream elects a leader.
//! - `streams.rs`: durable streams, one JetStream stream each; reads in
//!   `stream_read.rs`; `stream_notice.rs`: streams created or deleted
//!   through the admin API, told to the other nodes.
//! - `kv_key.rs`, `kv_value.rs`: keys and values of Tern's KV buckets (the
//!   cluster's too).

mod compact;
mod floor;
#[cfg(test)]
mod floor_tests;
#[cfg(test)]
mod handover_tests;
mod journal;
#[cfg(test)]
mod journal_tests;
pub(crate) mod keys;
pub(crate) mod kv_key;
pub(crate) mod kv_value;
#[cfg(test)]
mod late_handover_tests;
pub(crate) mod load;
pub(crate) mod made;
mod mirror;
mod orphan;
pub(crate) mod patience;
mod prune;
mod publish;
mod recover;
#[cfg(test)]
mod release_tests;
mod replay;
mod stream_notice;
mod stream_read;
#[cfg(test)]
mod stream_tests;
mod stream_trim;
mod streams;
#[cfg(test)]
pub(crate) mod test_server;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use parking_lot::Mutex;

use super::record::{StreamRecord, StreamState};
use super::{Backend, Snapshot, StoreError, StoreOp, StreamLimits};
use compact::Compactor;
use mirror::Mirror;
use patience::Failure;

pub use journal::STREAM as JOURNAL_STREAM;
pub use keys::BUCKET;
pub use orphan::purge_dead_journal;
pub use recover::journal_clients;

/// Longest wait for NATS in one call of the seam (a commit, the load).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest wait for one write's acknowledgement (async-nats' default is 5 s):
/// a commit of a big batch behind a busy connection can take longer than that
/// without anything being lost, and a timed-out write is sent again.
const ACK_TIMEOUT: Duration = Duration::from_secs(20);

/// Operations per commit at most: every ack waits for its whole commit, so
/// a backlog (a burst from other nodes) is committed in pieces that deliver
/// and acknowledge as they go, not in one that takes seconds.
const MAX_BATCH: usize = 8_192;

/// First id of the range for messages of sessions taken over (2^62).
const TAKEN_OVER_IDS: u64 = 1 << 62;
/// Message ids a run may give per millisecond since the epoch before it
/// reaches the ids of a run started a millisecond later (5·10^8 a second;
/// below [`TAKEN_OVER_IDS`] until the year 2109).
const IDS_PER_MS: u64 = 1 << 19;

/// The first message id of a run started now: above every id an earlier run
/// of this node gave. The loaded ids are not enough: a message of an earlier
/// run may live only in another node's journal (a session taken over), and
/// that node's later writes of its key (the delete once delivered) must not
/// land on a new message under the same key.
fn first_message_id_of_run() -> u64 {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    now_ms
        .saturating_mul(IDS_PER_MS)
        .clamp(1, TAKEN_OVER_IDS / 2)
}

pub struct NatsBackend {
    jetstream: jetstream::Context,
    node: String,
    /// The runtime the NATS connection lives on: the seam's calls come from
    /// the store's writer thread (or a blocking task) and wait for it.
    runtime: tokio::runtime::Handle,
    /// Client ids other nodes owned at start: their sessions are not loaded.
    foreign: HashSet<String>,
    /// Client ids this node holds whose stored state its last run never
    /// read (`OwnerValue::unread_from`): not restored at start but read
    /// after it as a takeover reads them (their records in this journal
    /// are this node's all the same).
    unread: HashSet<String>,
    mirror: Mutex<Mirror>,
    /// Random per start: with `commits`, makes every write's `Nats-Msg-Id` unique.
    boot: u64,
    commits: AtomicU64,
    /// This node's journal subject.
    subject: String,
    /// What is in the journal and not yet in the bucket.
    compactor: Arc<Compactor>,
    /// One journal append at a time (the writer thread's commits and a
    /// takeover's): the compactor's purge point relies on their order.
    append: Mutex<()>,
    /// Durable streams, each a JetStream stream.
    streams: Arc<streams::Streams>,
    /// Streams the other nodes created or deleted (`stream_notice.rs`), until the core takes them.
    stream_changes: Mutex<Option<tokio::sync::mpsc::Receiver<crate::store::StreamChange>>>,
    /// Ids for other nodes' messages of sessions taken over: far above any
    /// the core gives (it counts up from the highest loaded at start).
    next_taken_over_id: AtomicU64,
    /// [`first_message_id_of_run`] at open.
    first_message_id: u64,
}

impl std::fmt::Debug for NatsBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBackend")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// The stream KV bucket `bucket` with `replicas` copies is, made as
/// async-nats' `create_key_value` makes it, without the account query that
/// fails against nats-server 2.9 (its account info lacks fields the client
/// requires).
pub(crate) fn bucket_config(bucket: &str, replicas: usize) -> jetstream::stream::Config {
    jetstream::stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        allow_rollup: true,
        deny_delete: true,
        deny_purge: false,
        allow_direct: true,
        num_replicas: replicas.max(1),
        discard: jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    }
}

/// Opens (or makes) KV bucket `bucket` with `replicas` copies.
pub(crate) async fn open_bucket(
    jetstream: &jetstream::Context,
    bucket: &str,
    replicas: usize,
) -> Result<kv::Store, String> {
    open_configured(jetstream, bucket, bucket_config(bucket, replicas)).await
}

/// Opens (or makes) KV bucket `bucket` as the stream `config` (made by
/// [`bucket_config`], then changed) says; retried while JetStream elects a
/// leader (`patience.rs`).
pub(crate) async fn open_configured(
    jetstream: &jetstream::Context,
    bucket: &str,
    config: jetstream::stream::Config,
) -> Result<kv::Store, String> {
    patience::patiently(bucket, || async {
        // Both time out while the cluster elects a leader; a configuration
        // JetStream refuses is final (more replicas than servers only once
        // the patience runs out: see `transient`).
        match made::get_or_create_stream(jetstream, config.clone()).await {
            Err(e) if !transient(&e) => return Err(Failure::Final(e.to_string())),
            Err(e) => return Err(Failure::Transient(e.to_string())),
            Ok(_) => {}
        }
        jetstream
            .get_key_value(bucket)
            .await
            .map_err(|e| Failure::Transient(e.to_string()))
    })
    .await
}

/// An error that a JetStream cluster electing a leader answers with, or
/// one still gathering its servers ("no suitable peers for placement": a
/// node started with the NATS cluster, or while a server restarts; with
/// more replicas than servers it stays, and the patience runs out).
fn transient(error: &jetstream::context::CreateStreamError) -> bool {
    use jetstream::context::CreateStreamErrorKind as Kind;
    match error.kind() {
        Kind::TimedOut | Kind::JetStreamUnavailable => true,
        Kind::JetStream(e) => matches!(
            e.error_code(),
            jetstream::ErrorCode::CLUSTER_NOT_AVAILABLE | jetstream::ErrorCode::CLUSTER_NO_PEERS
        ),
        _ => false,
    }
}

impl NatsBackend {
    /// Opens the store bucket for node `node`; the sessions of the client
    /// ids in `foreign` (held by other nodes) are left to them at load.
    pub async fn open(
        mut jetstream: jetstream::Context,
        node: &str,
        replicas: usize,
        foreign: HashSet<String>,
    ) -> Result<NatsBackend, StoreError> {
        jetstream.set_timeout(ACK_TIMEOUT);
        open_bucket(&jetstream, BUCKET, replicas)
            .await
            .map_err(|reason| StoreError::Open {
                path: format!("JetStream KV bucket {BUCKET}"),
                reason,
            })?;
        journal::open(&jetstream, replicas)
            .await
            .map_err(|reason| StoreError::Open {
                path: format!("JetStream stream {JOURNAL_STREAM}"),
                reason,
            })?;
        let stream_changes = stream_notice::subscribe(&jetstream.client(), node)
            .await
            .map_err(|e| StoreError::Open {
                path: "NATS subscription to stream changes".into(),
                reason: e.to_string(),
            })?;
        let boot = rand::random();
        let runtime = tokio::runtime::Handle::current();
        let compactor = Compactor::new(jetstream.clone(), node, boot);
        Compactor::spawn(&compactor, &runtime);
        Ok(NatsBackend {
            jetstream: jetstream.clone(),
            node: node.to_string(),
            runtime,
            foreign,
            unread: HashSet::new(),
            mirror: Mutex::new(Mirror::new(node)),
            boot,
            commits: AtomicU64::new(0),
            subject: journal::subject(node),
            compactor,
            append: Mutex::new(()),
            streams: Arc::new(streams::Streams::new(
                jetstream.clone(),
                jetstream.clone(),
                replicas,
            )),
            stream_changes: Mutex::new(Some(stream_changes)),
            next_taken_over_id: AtomicU64::new(TAKEN_OVER_IDS),
            first_message_id: first_message_id_of_run(),
        })
    }

    /// Holds compaction off while the guard lives (tests: records stay in
    /// the journal only).
    #[cfg(test)]
    pub(crate) async fn pause_compaction(&self) -> tokio::sync::MutexGuard<'_, u64> {
        self.compactor.pause().await
    }

    /// The sessions of the client ids in `unread` are not restored at start
    /// (see [`NatsBackend::unread`]).
    pub fn leaving_unread(mut self, unread: HashSet<String>) -> NatsBackend {
        self.unread = unread;
        self
    }

    /// Streams appended to over `appends` and read over `reads`: connections
    /// of their own (`Cluster::connect_more`), so neither waits behind the
    /// other, nor behind the node's routing and journal (before any stream
    /// is read or written).
    pub fn with_stream_connections(
        mut self,
        mut appends: jetstream::Context,
        mut reads: jetstream::Context,
        replicas: usize,
    ) -> NatsBackend {
        appends.set_timeout(ACK_TIMEOUT);
        reads.set_timeout(ACK_TIMEOUT);
        self.streams = Arc::new(streams::Streams::new(appends, reads, replicas));
        self
    }

    /// Runs `future` on the runtime and waits for it on this thread, which
    /// must not be one of the runtime's (the writer thread, a blocking task).
    fn run<T: Send + 'static>(
        &self,
        future: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.runtime.spawn(async move {
            let _ = tx.send(future.await);
        });
        rx.recv_timeout(CALL_TIMEOUT).map_err(|_| {
            StoreError::Write(format!(
                "no answer from NATS within {} s",
                CALL_TIMEOUT.as_secs()
            ))
        })
    }

    /// Commits `writes` (`fresh`: the keys they make) as one journal append;
    /// waits for a compaction round when too much waits for one.
    fn commit(
        &self,
        writes: Vec<(String, Option<bytes::Bytes>)>,
        fresh: &HashSet<String>,
        stream_writes: Vec<streams::Write>,
    ) -> Result<(), StoreError> {
        let _order = self.append.lock();
        let commit = self.commits.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}.{:x}.{commit}", self.node, self.boot);
        let entries = journal::entries(&writes);
        let (jetstream, subject) = (self.jetstream.clone(), self.subject.clone());
        let streams = Arc::clone(&self.streams);
        // The journal message and the streams' appends at once; done when
        // both are acknowledged.
        let (appended, streamed) = self.run(async move {
            let journal = async {
                match entries.is_empty() {
                    true => Ok(None),
                    false => journal::append(&jetstream, &subject, &entries, &id)
                        .await
                        .map(Some),
                }
            };
            tokio::join!(journal, streams.write(stream_writes, &id))
        })?;
        streamed?;
        let Some(appended) = appended? else {
            return Ok(());
        };
        tracing::trace!(
            node = %self.node,
            first = appended.first().copied().unwrap_or(0),
            last = appended.last().copied().unwrap_or(0),
            writes = writes.len(),
            "journal commit"
        );
        if self.compactor.record(&writes, fresh, &appended) {
            let compactor = Arc::clone(&self.compactor);
            self.run(async move { compactor.round(true).await })?
                .map_err(StoreError::Write)?;
        }
        Ok(())
    }
}

impl Backend for NatsBackend {
    fn apply(&self, ops: &[StoreOp], _fsync: bool) -> Result<i64, StoreError> {
        let (writes, held, fresh) = {
            let mut mirror = self.mirror.lock();
            let (writes, held) = mirror.plan(ops);
            (writes, held, std::mem::take(&mut mirror.fresh))
        };
        let stream_writes = streams::plan(ops);
        if !writes.is_empty() || !stream_writes.is_empty() {
            self.commit(writes.into_iter().collect(), &fresh, stream_writes)?;
        }
        // Once the client's records before it are committed (and recorded
        // for compaction): see `StoreOp::ReleaseClient`.
        for op in ops {
            match op {
                StoreOp::ReleaseClient { client_id } => self.compactor.release(client_id),
                StoreOp::HoldClient { client_id } => self.compactor.hold(client_id),
                _ => {}
            }
        }
        let notices = stream_notice::notices(&self.node, ops);
        if !notices.is_empty() {
            let client = self.jetstream.client();
            self.run(async move { stream_notice::publish(&client, notices).await })?;
        }
        Ok(held)
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    fn first_message_id(&self) -> u64 {
        self.first_message_id
    }

    fn load(&self) -> Result<Snapshot, StoreError> {
        let (jetstream, node) = (self.jetstream.clone(), self.node.clone());
        // Before the reads: what other nodes wrote of the ids held here
        // since is a new holder's (`load::own_last`).
        let ((entries, journaled, sequences, last), held_since) = self
            .run(async move {
                let held_since = load::last_sequence(&jetstream).await?;
                let read = recover::read_start(&jetstream, &node).await?;
                Ok::<_, String>((read, held_since))
            })?
            .map_err(|reason| StoreError::Open {
                path: format!("JetStream KV bucket {BUCKET} and stream {JOURNAL_STREAM}"),
                reason,
            })?;
        tracing::info!(
            node = %self.node,
            records = entries.len(),
            journal_keys = journaled.len(),
            journal_messages = sequences.len(),
            journal_last = last,
            "store read at start"
        );
        let not_restored: HashSet<String> = self.foreign.union(&self.unread).cloned().collect();
        let scope = load::Scope::Start(&not_restored);
        let (mut snapshot, mirror, _) = load::snapshot(entries, &self.node, &scope)?;
        *self.mirror.lock() = mirror;
        // Fencing: the records of client ids other nodes own now are theirs
        // (they read them from this journal); never written to the bucket.
        let journaled_keys = journaled.len();
        let owed: indexmap::IndexMap<_, _> = journaled
            .into_iter()
            .filter(|(key, _)| journal::client_of(key).is_none_or(|c| !self.foreign.contains(&c)))
            .collect();
        let fenced = owed.len() < journaled_keys;
        self.compactor.seed(owed, sequences, last, fenced);
        self.compactor.held_since(None, held_since);
        // The journal starts short (a failure leaves it to the next round).
        let compactor = Arc::clone(&self.compactor);
        self.run(async move { compactor.logged_round(true).await })?;
        let streams = Arc::clone(&self.streams);
        snapshot.streams = self.run(async move { streams.load().await })??;
        Ok(snapshot)
    }

    fn read_stream(
        &self,
        stream: &str,
        from: u64,
        max: usize,
    ) -> Result<Vec<(u64, StreamRecord)>, StoreError> {
        let (streams, name) = (Arc::clone(&self.streams), stream.to_string());
        self.run(async move { streams.read(&name, from, max).await })?
    }

    fn find_stream_time(&self, stream: &str, time_ms: u64) -> Result<Option<u64>, StoreError> {
        let (streams, name) = (Arc::clone(&self.streams), stream.to_string());
        self.run(async move { streams.find_time(&name, time_ms).await })?
    }

    fn stream_state(&self, stream: &str) -> Result<Option<StreamState>, StoreError> {
        let (streams, name) = (Arc::clone(&self.streams), stream.to_string());
        self.run(async move { streams.state(&name).await })?
    }

    fn configure_stream(&self, stream: &str, limits: StreamLimits) {
        self.streams.configure(stream, limits);
    }

    fn load_client(
        &self,
        client_id: &str,
        previous_holders: Option<&[&str]>,
    ) -> Result<Option<Snapshot>, StoreError> {
        // The client's keys and the messages they refer to, not the bucket,
        // with the previous holders' journals and this node's over them
        // (every node's when the previous holder is not known).
        let jetstream = self.jetstream.clone();
        let client = client_id.to_string();
        let nodes = previous_holders.map(|holders| {
            let mut nodes: Vec<String> = Vec::new();
            for node in holders.iter().copied().chain([self.node.as_str()]) {
                if !nodes.iter().any(|n| n == node) {
                    nodes.push(node.to_string());
                }
            }
            nodes
        });
        let previous_holder = previous_holders.map(|h| h.join(","));
        let started = std::time::Instant::now();
        let (read, held_since) = self
            .run(async move {
                // Before the read: writes of the id's keys up to it are
                // the previous holders' (`load::own_last`).
                let held_since = load::last_sequence(&jetstream).await?;
                let read = recover::read_client(&jetstream, &client, nodes.as_deref()).await?;
                Ok::<_, String>((read, held_since))
            })?
            .map_err(StoreError::Write)?;
        tracing::debug!(
            client_id,
            previous_holder,
            read_ms = started.elapsed().as_millis() as u64,
            records = read.entries.len(),
            adopted = read.adopted.len(),
            holders = ?read.holders,
            "stored state of a client read for a takeover"
        );
        let next = self.next_taken_over_id.load(Ordering::Relaxed);
        let scope = load::Scope::Client(client_id, next);
        let (snapshot, mirror, next) = load::snapshot(read.entries, &self.node, &scope)?;
        // This node's journal holds them from now on; the journals they
        // were in forget them. None counts as made here (no `fresh`): the
        // old holder may write any of them into the bucket late, so their
        // deletes are written too.
        if !read.adopted.is_empty() {
            self.commit(read.adopted, &HashSet::new(), Vec::new())?;
        }
        // What only journals held goes to the bucket now, not at this node's
        // next round: it fences off the late handover round of a holder
        // before (`late_handover_tests.rs`: a delivery acknowledged here
        // came back to the next holder, QoS 2 twice in the crash test).
        let holders: Vec<(String, u64)> = read
            .holders
            .into_iter()
            .filter(|(s, _)| *s != self.subject)
            .collect();
        if !read.journaled.is_empty() || !holders.is_empty() {
            let id = format!(
                "{}.{:x}.{}",
                self.node,
                self.boot,
                self.commits.fetch_add(1, Ordering::Relaxed)
            );
            let (jetstream, journaled) = (self.jetstream.clone(), read.journaled);
            let client = client_id.to_string();
            self.run(async move {
                if !journaled.is_empty() {
                    publish::publish(jetstream.clone(), journaled, format!("{id}a")).await?;
                }
                for (n, (subject, upto)) in holders.iter().enumerate() {
                    let forget = [journal::Entry::Forget(client.clone(), *upto)];
                    journal::append(&jetstream, subject, &forget, &format!("{id}.f{n}")).await?;
                }
                Ok::<(), StoreError>(())
            })??;
        }
        self.compactor.held_since(Some(client_id), held_since);
        self.next_taken_over_id.fetch_max(next, Ordering::Relaxed);
        self.mirror.lock().merge(mirror);
        Ok(Some(snapshot))
    }

    fn release_client(&self, client_id: &str) -> bool {
        self.mirror.lock().release(client_id);
        self.compactor.release(client_id);
        true
    }

    fn hold_client(&self, client_id: &str) {
        self.mirror.lock().hold(client_id);
        self.compactor.hold(client_id);
    }

    /// Everything the journal holds goes into the bucket (a clean stop
    /// leaves the journal empty).
    fn close(&self) {
        use tokio::runtime::{Handle, RuntimeFlavor};
        let compactor = Arc::clone(&self.compactor);
        let round = || self.run(async move { compactor.logged_round(true).await });
        // Called from a task at shutdown: the worker lets the others run
        // the round meanwhile (a single-threaded runtime cannot: the journal
        // is replayed at the next start instead).
        let _ = match Handle::try_current().map(|h| h.runtime_flavor()) {
            Err(_) => round(),
            Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(round),
            Ok(_) => Ok(()),
        };
    }

    fn is_shared(&self) -> bool {
        true
    }

    fn stream_changes(&self) -> Option<tokio::sync::mpsc::Receiver<crate::store::StreamChange>> {
        self.stream_changes.lock().take()
    }
}
