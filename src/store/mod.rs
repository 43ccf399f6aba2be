//! Persistence behind one seam the core calls: operations are submitted as they
//! happen and committed in groups (one write transaction, one fsync, for
//! everything that arrived meanwhile). A caller that must not acknowledge before
//! the data is on disk waits for its ticket.
//!
//! - `record.rs`: the stored records (serde + postcard).
//! - `redb.rs`: the redb backend.
//! - `nats/`: the NATS backend (JetStream KV, cluster mode).
//! - `redb_stream.rs`: its tables of durable streams;
//! - `redb_schema.rs`: its table of admin API schemas;
//! - `stream_chunk.rs`: the encoding of a stream chunk (one group commit's appends);
//! - `pending.rs`: the submissions waiting for the next group commit;
//! - `writer.rs`: the writer thread that commits them (with a trailer).
//! - `redb_marks.rs`: the redb table of nodes' marks (cluster mode).
//! - `front_tests.rs`: tests of the group commit itself.

mod front_streams;
#[cfg(test)]
mod front_tests;
pub mod nats;
mod pending;
pub mod record;
pub mod redb;
mod redb_marks;
mod redb_schema;
mod redb_stream;
mod stream_chunk;
mod writer;
pub use stream_chunk::encode_record as encode_stream_record;
pub use writer::Trailer;
#[cfg(test)]
pub(crate) mod suite;
#[cfg(test)]
pub(crate) mod suite_marks;
#[cfg(test)]
pub(crate) mod suite_streams;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use pending::Pending;
pub use record::StreamChange;
use record::{
    DeliveryRecord, MessageRecord, PeerMarkRecord, SessionRecord, StreamRecord, StreamState,
    WillRecord,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store file {path} is locked by another process (is another tern running on the same data_dir?)")]
    Locked { path: String },
    #[error("store file {path} is corrupt: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("store file {path} has format version {found}, newer than this tern understands ({supported}); upgrade tern")]
    NewerFormat {
        path: String,
        found: u64,
        supported: u64,
    },
    #[error("cannot open store {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("store write failed: {0}")]
    Write(String),
    #[error("stored record cannot be decoded: {0}")]
    Decode(String),
    #[error("store is shut down")]
    Closed,
}

/// When an acknowledged message is safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Every submission committed and fsynced on its own before it is acknowledged.
    Sync,
    /// Group commit: everything that arrived meanwhile in one fsynced transaction;
    /// acknowledged after that commit. The default.
    Batched,
    /// Written without fsync and acknowledged at once; a crash may lose recent messages.
    None,
}

/// One change to the stored state.
#[derive(Debug, Clone)]
pub enum StoreOp {
    PutSession {
        client_id: String,
        record: SessionRecord,
    },
    /// Removes the session with all its deliveries and incoming QoS 2 ids.
    DeleteSession {
        client_id: String,
    },
    /// A message owed to persistent sessions, stored once and referred to by
    /// their deliveries; removed with the last delivery that refers to it.
    PutMessage {
        id: u64,
        record: MessageRecord,
    },
    PutDelivery {
        client_id: String,
        seq: u64,
        record: DeliveryRecord,
    },
    /// A stored delivery went out with `packet_id` (and, QoS 2, was released):
    /// its record is updated in place, the message it refers to untouched.
    MarkDelivery {
        client_id: String,
        seq: u64,
        packet_id: u16,
        released: bool,
    },
    DeleteDelivery {
        client_id: String,
        seq: u64,
    },
    PutIncomingQos2 {
        client_id: String,
        packet_id: u16,
    },
    DeleteIncomingQos2 {
        client_id: String,
        packet_id: u16,
    },
    PutRetained {
        record: MessageRecord,
    },
    DeleteRetained {
        topic: String,
    },
    PutQueued {
        queue: String,
        seq: u64,
        record: MessageRecord,
    },
    DeleteQueued {
        queue: String,
        seq: u64,
    },
    PutWill {
        client_id: String,
        record: WillRecord,
    },
    DeleteWill {
        client_id: String,
    },
    /// One message of a durable stream at its offset: `entry` is its
    /// `StreamRecord` already encoded (`encode_stream_record`), `size` its
    /// topic plus payload bytes.
    AppendStream {
        stream: Arc<str>,
        offset: u64,
        size: u64,
        entry: Vec<u8>,
    },
    /// Removes a stream's messages below `below` (retention, purge); its next
    /// offset stays, so offsets never repeat.
    TrimStream {
        stream: String,
        below: u64,
    },
    /// The last offset a named consumer acknowledged.
    PutStreamConsumer {
        stream: String,
        consumer: String,
        offset: u64,
    },
    /// A stream created through the admin API (its settings as JSON), declared again at start.
    PutStreamDeclaration {
        stream: String,
        settings: Vec<u8>,
    },
    /// Forgets a created stream's declaration (the config file declares it now).
    DeleteStreamDeclaration {
        stream: String,
    },
    /// Removes a stream: its declaration, messages, offsets and consumers.
    DeleteStream {
        stream: String,
    },
    /// Every version of an admin API schema, as the core encoded them.
    PutSchema {
        name: String,
        record: Vec<u8>,
    },
    DeleteSchema {
        name: String,
    },
    /// Cluster mode: node `node`'s marks (`core::peer_marks`), added to its
    /// commits (`writer.rs`): the node a session moves to from `node`
    /// skips what they cover. One per node; the last write wins.
    PutPeerMarks {
        node: String,
        marks: Vec<PeerMarkRecord>,
    },
    /// Shared store (cluster mode): another node took `client_id` over.
    /// The client's records submitted before this are written (the marks
    /// said for the session cover them, and the new holder reads them
    /// once this commits); none submitted after it (`Backend::release_client`).
    ReleaseClient {
        client_id: String,
    },
    /// Shared store: this node holds `client_id` again, its records are
    /// written from here on (`Backend::hold_client`).
    HoldClient {
        client_id: String,
    },
}

/// A stream's retention limits, as the store sees them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamLimits {
    pub max_age: Option<Duration>,
    pub max_messages: Option<u64>,
    pub max_bytes: Option<u64>,
}

/// Everything stored, read once at start.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub sessions: Vec<(String, SessionRecord)>,
    /// Ordered by client id, then sequence.
    pub deliveries: Vec<(String, u64, DeliveryRecord)>,
    /// The messages the deliveries refer to, by id.
    pub messages: Vec<(u64, MessageRecord)>,
    pub incoming_qos2: Vec<(String, u16)>,
    pub retained: Vec<MessageRecord>,
    /// Ordered by queue name, then sequence.
    pub queued: Vec<(String, u64, MessageRecord)>,
    /// Wills waiting for their delay, by client id.
    pub wills: Vec<(String, WillRecord)>,
    /// Every stream with messages or offsets stored (their messages stay in
    /// the store and are read in batches).
    pub streams: Vec<StreamState>,
    /// Named stream consumers: (stream, consumer, last acknowledged offset).
    pub stream_consumers: Vec<(String, String, u64)>,
    /// Streams created through the admin API: (name, settings as JSON).
    pub stream_declarations: Vec<(String, Vec<u8>)>,
    /// Admin API schemas: (name, the record the core made of its versions).
    pub schemas: Vec<(String, Vec<u8>)>,
    /// Nodes' marks, by node (cluster mode; see `StoreOp::PutPeerMarks`).
    pub peer_marks: Vec<(String, Vec<PeerMarkRecord>)>,
}

/// A storage engine: applies a batch atomically, loads everything.
pub trait Backend: Send + Sync + 'static {
    /// Applies `ops` in one transaction; returns by how much the number of stored
    /// messages (deliveries plus queued) changed.
    fn apply(&self, ops: &[StoreOp], fsync: bool) -> Result<i64, StoreError>;
    fn load(&self) -> Result<Snapshot, StoreError>;
    /// Operations a group commit stops taking submissions at (one is never
    /// split): each acknowledgement waits for its whole commit.
    fn max_batch(&self) -> usize {
        MAX_BATCH
    }
    /// How long a busy group commit may wait for the next batch to fill
    /// (`writer.rs`); None: it never waits.
    fn linger(&self) -> Option<std::time::Duration> {
        None
    }
    /// The lowest id this run may give a fresh message (the core counts up
    /// from it, or from the highest id loaded if that is higher).
    fn first_message_id(&self) -> u64 {
        1
    }
    /// Releases the file once the last commit is done (shutdown).
    fn close(&self) {}
    /// Up to `max` committed messages of `stream` from offset `from` on, in
    /// offset order (a backend that keeps nothing returns none).
    fn read_stream(
        &self,
        _stream: &str,
        _from: u64,
        _max: usize,
    ) -> Result<Vec<(u64, StreamRecord)>, StoreError> {
        Ok(Vec::new())
    }
    /// The offset of the first committed message of `stream` published at or
    /// after `time_ms`, if any.
    fn find_stream_time(&self, _stream: &str, _time_ms: u64) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }
    /// What the store holds of `stream` now (offsets, bytes): asked by a
    /// node of a cluster whose streams other nodes append to too. None from
    /// a backend only this node writes to.
    fn stream_state(&self, _stream: &str) -> Result<Option<StreamState>, StoreError> {
        Ok(None)
    }
    /// The retention limits of `stream` as declared, for a backend that
    /// enforces them itself (as well as the core's trims).
    fn configure_stream(&self, _stream: &str, _limits: StreamLimits) {}
    /// The stored state of `client_id` alone (its session, deliveries with
    /// their messages, incoming QoS 2 ids, will), read afresh when this node
    /// takes the session over from another node (`previous_holders`, when
    /// known: the node it is taken from, and the one that node adopted it
    /// from without reading it, whose unwritten records it reads; None:
    /// every node's). None from a backend no other node writes to.
    fn load_client(
        &self,
        _client_id: &str,
        _previous_holders: Option<&[&str]>,
    ) -> Result<Option<Snapshot>, StoreError> {
        Ok(None)
    }
    /// Another node took `client_id` over: what this node knew of its records
    /// is forgotten, nothing written. True when the records are shared (they
    /// are the new owner's now: the caller must not delete them).
    fn release_client(&self, _client_id: &str) -> bool {
        false
    }
    /// This node serves `client_id` (again): its records are written from
    /// now on. After [`Backend::release_client`] they are not (a node that
    /// lost a session never writes to it).
    fn hold_client(&self, _client_id: &str) {}
    /// True when other nodes read and write this store too (a cluster's).
    fn is_shared(&self) -> bool {
        false
    }
    /// Streams other nodes sharing this store create and delete through
    /// their admin API, as they do (taken once; None when no other node
    /// writes to the store).
    fn stream_changes(&self) -> Option<tokio::sync::mpsc::Receiver<StreamChange>> {
        None
    }
}

/// Position of a submission; committed once `Store::wait` for it returns.
pub type Ticket = u64;

/// The group-commit front of a backend.
pub struct Store {
    backend: Arc<dyn Backend>,
    durability: Durability,
    pending: Mutex<Pending>,
    wake: Condvar,
    committed: watch::Sender<Ticket>,
    failed: AtomicBool,
    /// Write transactions committed (for metrics).
    pub commits: AtomicU64,
    /// 1 when the store was rolled back to an older commit at open (damaged
    /// file): recent acknowledged messages may be missing. Set at start.
    pub recovered: AtomicU64,
    /// Messages on disk (deliveries plus queued), as of the last commit.
    held: AtomicI64,
    /// Operations waiting for a commit (not yet taken by the writer).
    backlog: AtomicUsize,
    /// The id the next stored message gets (above every id in the file).
    next_message_id: AtomicU64,
    /// Told how long each commit took (metrics); set once, called on the writer thread.
    commit_observer: std::sync::OnceLock<CommitObserver>,
    /// The writer thread, joined by `close` so the last commit is done before
    /// the backend lets go of its file.
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Added to commits (`writer.rs`); set once.
    trailer: std::sync::OnceLock<Trailer>,
    /// Routings that the trailer must see whole (`writer.rs`).
    routing: parking_lot::RwLock<()>,
}

/// Receives the duration of every commit.
pub type CommitObserver = Box<dyn Fn(Duration) + Send + Sync>;

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

/// Batches above this many operations are split, so one transaction stays bounded.
const MAX_BATCH: usize = 50_000;
/// Operations waiting for a commit beyond which connections stop reading
/// until those are committed ([`Store::wait_room`]).
pub const BACKLOG_LIMIT: usize = 65_536;
/// The writer's batch list keeps its room for this many operations between commits.
const KEEP_BATCH_CAPACITY: usize = 8192;

impl Store {
    /// Starts the writer thread over `backend`.
    pub fn start(backend: Arc<dyn Backend>, durability: Durability) -> Arc<Store> {
        let (committed, _) = watch::channel(0);
        let store = Arc::new(Store {
            backend,
            durability,
            pending: Mutex::new(Pending {
                ops: Vec::new(),
                ends: std::collections::VecDeque::new(),
                last_ticket: 0,
                closed: false,
                want: 1,
            }),
            wake: Condvar::new(),
            committed,
            failed: AtomicBool::new(false),
            commits: AtomicU64::new(0),
            recovered: AtomicU64::new(0),
            held: AtomicI64::new(0),
            backlog: AtomicUsize::new(0),
            next_message_id: AtomicU64::new(1),
            commit_observer: std::sync::OnceLock::new(),
            writer: Mutex::new(None),
            trailer: std::sync::OnceLock::new(),
            routing: parking_lot::RwLock::new(()),
        });
        let writer = Arc::clone(&store);
        let spawned = std::thread::Builder::new()
            .name("tern-store".into())
            .spawn(move || writer.write_loop());
        match spawned {
            Ok(handle) => *store.writer.lock() = Some(handle),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the store writer thread");
                store.failed.store(true, Ordering::Release);
            }
        }
        store
    }

    /// Calls `observer` with the duration of every commit from now on (the first observer set stays).
    pub fn set_commit_observer(&self, observer: CommitObserver) {
        let _ = self.commit_observer.set(observer);
    }

    /// False once a commit has failed: acknowledged messages can no longer be kept.
    pub fn is_healthy(&self) -> bool {
        !self.failed.load(Ordering::Acquire)
    }

    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Reads everything stored (once, at start).
    pub fn load(&self) -> Result<Snapshot, StoreError> {
        let snapshot = self.backend.load()?;
        let held = snapshot.deliveries.len() + snapshot.queued.len();
        self.held
            .store(i64::try_from(held).unwrap_or(i64::MAX), Ordering::Relaxed);
        let last_id = snapshot.messages.iter().map(|(id, _)| *id).max();
        let first = (last_id.unwrap_or(0) + 1).max(self.backend.first_message_id());
        self.next_message_id.fetch_max(first, Ordering::Relaxed);
        Ok(snapshot)
    }

    /// A fresh id for a message stored with `StoreOp::PutMessage`.
    pub fn next_message_id(&self) -> u64 {
        self.next_message_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Messages on disk (deliveries owed to persistent sessions plus queued), as of
    /// the last commit: what the store limit is checked against.
    pub fn held_messages(&self) -> u64 {
        u64::try_from(self.held.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// Queues operations for the next group commit; returns their ticket.
    pub fn submit(&self, ops: impl IntoIterator<Item = StoreOp>) -> Ticket {
        let mut pending = self.pending.lock();
        let start = pending.ops.len();
        pending.ops.extend(ops);
        if pending.ops.len() == start {
            return pending.last_ticket;
        }
        pending.last_ticket += 1;
        let ticket = pending.last_ticket;
        let end = pending.ops.len();
        pending.ends.push_back((ticket, end));
        self.backlog.store(end, Ordering::Relaxed);
        // A writer waiting for its batch to fill is woken once it has.
        let wake = end >= pending.want;
        drop(pending);
        if wake {
            self.wake.notify_one();
        }
        ticket
    }

    /// See [`Backend::load_client`] (blocks: call it off the async runtime).
    pub fn load_client(
        &self,
        client_id: &str,
        previous_holders: Option<&[&str]>,
    ) -> Result<Option<Snapshot>, StoreError> {
        self.backend.load_client(client_id, previous_holders)
    }

    /// See [`Backend::release_client`]; in order with the submissions
    /// ([`StoreOp::ReleaseClient`]): what was submitted for the client
    /// before is still written. (Applied at once, it fenced deliveries
    /// routed to the session before it moved but not yet committed, while
    /// the marks said for it covered them: the new holder left those
    /// messages out of its capture and they were lost.)
    pub fn release_client(&self, client_id: &str) -> bool {
        if !self.backend.is_shared() {
            return self.backend.release_client(client_id);
        }
        self.submit([StoreOp::ReleaseClient {
            client_id: client_id.to_string(),
        }]);
        true
    }

    /// See [`Backend::hold_client`]; in order with the submissions
    /// ([`StoreOp::HoldClient`]), so a release submitted before it cannot
    /// fence what comes after.
    pub fn hold_client(&self, client_id: &str) {
        if !self.backend.is_shared() {
            return self.backend.hold_client(client_id);
        }
        self.submit([StoreOp::HoldClient {
            client_id: client_id.to_string(),
        }]);
    }

    /// See [`Backend::is_shared`].
    pub fn is_shared(&self) -> bool {
        self.backend.is_shared()
    }

    /// Resolves once the operations waiting for a commit are fewer than
    /// [`BACKLOG_LIMIT`] again (None: they are now). A connection waits for it
    /// before reading more, so publishers whose messages are stored without an
    /// ack to wait for (QoS 0 into a stream) are slowed to what the store
    /// commits instead of piling up work in front of everyone's commits.
    pub fn wait_room(&self) -> Option<impl std::future::Future<Output = ()> + Send + '_> {
        if self.backlog.load(Ordering::Relaxed) < BACKLOG_LIMIT {
            return None;
        }
        let ticket = self.pending.lock().last_ticket;
        // A failed store answers at once (the publishes then fail on their own).
        Some(async move {
            let _ = self.wait(ticket).await;
        })
    }

    /// Ticket of the latest submission: waiting for it covers everything submitted so far.
    pub fn last_ticket(&self) -> Ticket {
        self.pending.lock().last_ticket
    }

    /// Resolves once everything up to `ticket` is committed (at once with `Durability::None`).
    pub async fn wait(&self, ticket: Ticket) -> Result<(), StoreError> {
        if self.durability == Durability::None {
            return Ok(());
        }
        self.wait_applied(ticket).await
    }

    /// Resolves once the backend applied everything up to `ticket`, whatever
    /// the durability: a shared store's read of a client (`load_client`)
    /// comes after the release or hold submitted before it.
    pub async fn wait_applied(&self, ticket: Ticket) -> Result<(), StoreError> {
        if ticket == 0 {
            return Ok(());
        }
        let mut rx = self.committed.subscribe();
        loop {
            if self.failed.load(Ordering::Acquire) {
                return Err(StoreError::Write("an earlier commit failed".into()));
            }
            if *rx.borrow_and_update() >= ticket {
                return Ok(());
            }
            if rx.changed().await.is_err() {
                return Err(StoreError::Closed);
            }
        }
    }

    /// Whether everything up to `ticket` is committed now (true at once with
    /// `Durability::None`); an error once a commit has failed. The check a
    /// connection makes before it holds its acks back and reads on.
    pub fn is_committed(&self, ticket: Ticket) -> Result<bool, StoreError> {
        if self.durability == Durability::None || ticket == 0 {
            return Ok(true);
        }
        if self.failed.load(Ordering::Acquire) {
            return Err(StoreError::Write("an earlier commit failed".into()));
        }
        Ok(*self.committed.borrow() >= ticket)
    }

    /// Waits until everything submitted so far is committed.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let ticket = self.pending.lock().last_ticket;
        let mut rx = self.committed.subscribe();
        loop {
            if *rx.borrow_and_update() >= ticket {
                return Ok(());
            }
            if self.failed.load(Ordering::Acquire) {
                return Err(StoreError::Write("an earlier commit failed".into()));
            }
            if rx.changed().await.is_err() {
                return Err(StoreError::Closed);
            }
        }
    }

    /// Stops the writer after it commits what is pending.
    pub fn close(&self) {
        self.pending.lock().closed = true;
        self.wake.notify_one();
        let writer = self.writer.lock().take();
        if let Some(writer) = writer {
            if writer.thread().id() != std::thread::current().id() {
                let _ = writer.join();
            }
        }
        self.backend.close();
    }
}

/// A backend that keeps nothing, for `storage.enabled = false` and unit tests.
#[derive(Debug, Default)]
pub struct NullBackend;

impl Backend for NullBackend {
    fn apply(&self, _ops: &[StoreOp], _fsync: bool) -> Result<i64, StoreError> {
        Ok(0)
    }

    fn load(&self) -> Result<Snapshot, StoreError> {
        Ok(Snapshot::default())
    }
}
