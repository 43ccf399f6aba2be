//! The redb backend: one file, one table per kind of record, one write
//! transaction per group commit.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::record::{
    DeliveryRecord, MessageRecord, OwnerRecord, SessionRecord, StreamRecord, WillRecord,
};
use super::{Backend, Snapshot, StoreError, StoreOp};

/// Bumped whenever the stored layout changes incompatibly. 2: a delivery refers
/// to its message by id instead of holding a copy; 3: a delivery holds the time
/// it was queued. Older files are migrated at open (`redb/migrate.rs`).
pub const FORMAT_VERSION: u64 = 3;
/// redb's page cache when the config names none (`[storage] cache_size`).
pub const DEFAULT_CACHE_SIZE: usize = 64 << 20;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
/// Each session's owner, beside its record so that records of older stores
/// decode unchanged; a session without a row here has an unknown owner.
const SESSION_OWNERS: TableDefinition<&str, &[u8]> = TableDefinition::new("session_owners");
/// Each session's subscription selectors, `(filter, selector text)` pairs,
/// beside its record for the same reason; no row: no selector.
const SESSION_SELECTORS: TableDefinition<&str, &[u8]> = TableDefinition::new("session_selectors");
const DELIVERIES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("deliveries");
/// Messages owed to persistent sessions, once per publish, by id.
const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");
/// How many deliveries refer to each message: the message goes with the last one.
const MESSAGE_REFS: TableDefinition<u64, u64> = TableDefinition::new("message_refs");
const INCOMING_QOS2: TableDefinition<(&str, u16), ()> = TableDefinition::new("incoming_qos2");
const RETAINED: TableDefinition<&str, &[u8]> = TableDefinition::new("retained");
const QUEUED: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("queued");
const WILLS: TableDefinition<&str, &[u8]> = TableDefinition::new("wills");

pub struct RedbBackend {
    /// None once closed: the file is released (and left clean) at shutdown,
    /// whoever still holds the store.
    db: parking_lot::RwLock<Option<Database>>,
    path: PathBuf,
    /// What redb repaired when it opened the file.
    pub repair: Repair,
}

/// What redb did to the file at open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Repair {
    /// A clean open: nothing rewritten.
    #[default]
    None,
    /// Not shut down cleanly (a crash): redb verified the newest commit and
    /// rebuilt its allocator state, rewriting the header; no commit is lost.
    Unclean,
    /// The newest commit did not verify (damaged pages): redb fell back to the
    /// commit before it, so the most recent commits are missing. The damaged
    /// file was copied to `copy` before redb rewrote anything of its data.
    RolledBack { copy: PathBuf },
}

/// Progress redb reports to the repair callback just before it falls back to
/// the older commit slot (redb 4: 0.0 at the start of a repair, 0.3 only when
/// the primary commit is corrupt, 0.6 before the allocator is rebuilt).
const PROGRESS_PRIMARY_CORRUPT: f64 = 0.3;

/// Copies the damaged `path` beside it as `<name>.damaged-<unix ms>`.
fn keep_damaged_copy(path: &Path) -> Result<PathBuf, String> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".damaged-{}", super::record::unix_ms_now()));
    let copy = path.with_file_name(name);
    std::fs::copy(path, &copy)
        .map_err(|e| format!("cannot copy the damaged file to {}: {e}", copy.display()))?;
    Ok(copy)
}

impl std::fmt::Debug for RedbBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbBackend")
            .field("path", &self.path)
            .finish()
    }
}

fn write_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Write(e.to_string())
}

/// True for the operations on the tables `apply` opens itself (the others
/// have theirs in `redb_stream`, `redb_schema` and `redb_marks`).
fn is_core_op(op: &StoreOp) -> bool {
    !(super::redb_stream::is_stream_op(op)
        || super::redb_schema::is_schema_op(op)
        || matches!(op, StoreOp::PutPeerMarks { .. }))
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_allocvec(value).map_err(write_err)
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Decode(e.to_string()))
}

impl RedbBackend {
    /// Opens (or creates) the store file with redb's page cache at
    /// `DEFAULT_CACHE_SIZE`.
    pub fn open(path: &Path) -> Result<RedbBackend, StoreError> {
        RedbBackend::open_with_cache(path, DEFAULT_CACHE_SIZE)
    }

    /// Opens (or creates) the store file, redb's page cache holding at most
    /// `cache_bytes`. A locked, corrupt or newer-format file is an error, never
    /// a silent reset.
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<RedbBackend, StoreError> {
        let shown = path.display().to_string();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
                path: shown.clone(),
                reason: format!("cannot create directory {}: {e}", dir.display()),
            })?;
        }
        // What the repair callback saw: redb calls it before it rewrites data.
        let seen: std::sync::Arc<parking_lot::Mutex<(Repair, Option<String>)>> =
            std::sync::Arc::default();
        let mut builder = Database::builder();
        builder.set_cache_size(cache_bytes);
        {
            let seen = std::sync::Arc::clone(&seen);
            let file = path.to_path_buf();
            builder.set_repair_callback(move |session| {
                let mut seen = seen.lock();
                if seen.0 == Repair::None {
                    seen.0 = Repair::Unclean;
                }
                let corrupt = (session.progress() - PROGRESS_PRIMARY_CORRUPT).abs() < 1e-9;
                if corrupt && !matches!(seen.0, Repair::RolledBack { .. }) {
                    match keep_damaged_copy(&file) {
                        Ok(copy) => seen.0 = Repair::RolledBack { copy },
                        Err(e) => {
                            // No rollback without a copy of what it discards.
                            seen.1 = Some(e);
                            session.abort();
                        }
                    }
                }
            });
        }
        let db = builder.create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked {
                path: shown.clone(),
            },
            redb::DatabaseError::RepairAborted => StoreError::Corrupt {
                path: shown.clone(),
                reason: format!(
                    "its newest commit is damaged and redb would roll back to an older one, \
                     but {}",
                    seen.lock()
                        .1
                        .clone()
                        .unwrap_or_else(|| "the repair was aborted".into())
                ),
            },
            redb::DatabaseError::Storage(redb::StorageError::Corrupted(reason)) => {
                StoreError::Corrupt {
                    path: shown.clone(),
                    reason,
                }
            }
            other => StoreError::Open {
                path: shown.clone(),
                reason: other.to_string(),
            },
        })?;
        let repair = seen.lock().0.clone();
        let backend = RedbBackend {
            db: parking_lot::RwLock::new(Some(db)),
            path: path.to_path_buf(),
            repair,
        };
        backend.check_format()?;
        Ok(backend)
    }

    fn check_format(&self) -> Result<(), StoreError> {
        let shown = self.path.display().to_string();
        let open_err = |e: &dyn std::fmt::Display| StoreError::Open {
            path: shown.clone(),
            reason: e.to_string(),
        };
        let db = self.db.read();
        let db = db.as_ref().ok_or(StoreError::Closed)?;
        let txn = db.begin_write().map_err(|e| open_err(&e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| open_err(&e))?;
            let found = meta
                .get("format_version")
                .map_err(|e| open_err(&e))?
                .map(|v| v.value());
            match found {
                Some(v) if v > FORMAT_VERSION => {
                    return Err(StoreError::NewerFormat {
                        path: shown.clone(),
                        found: v,
                        supported: FORMAT_VERSION,
                    })
                }
                Some(found @ (1 | 2)) => {
                    drop(meta);
                    migrate::deliveries(&txn, found).map_err(|e| open_err(&e))?;
                    meta = txn.open_table(META).map_err(|e| open_err(&e))?;
                    meta.insert("format_version", FORMAT_VERSION)
                        .map_err(|e| open_err(&e))?;
                    tracing::info!(path = %shown, from = found, to = FORMAT_VERSION, "store format migrated");
                }
                Some(_) => {}
                None => {
                    meta.insert("format_version", FORMAT_VERSION)
                        .map_err(|e| open_err(&e))?;
                }
            }
            // Create every table so a fresh store loads as empty.
            txn.open_table(SESSIONS).map_err(|e| open_err(&e))?;
            txn.open_table(SESSION_OWNERS).map_err(|e| open_err(&e))?;
            txn.open_table(SESSION_SELECTORS)
                .map_err(|e| open_err(&e))?;
            txn.open_table(DELIVERIES).map_err(|e| open_err(&e))?;
            txn.open_table(MESSAGES).map_err(|e| open_err(&e))?;
            txn.open_table(MESSAGE_REFS).map_err(|e| open_err(&e))?;
            txn.open_table(INCOMING_QOS2).map_err(|e| open_err(&e))?;
            txn.open_table(RETAINED).map_err(|e| open_err(&e))?;
            txn.open_table(QUEUED).map_err(|e| open_err(&e))?;
            txn.open_table(WILLS).map_err(|e| open_err(&e))?;
            super::redb_stream::create_tables(&txn).map_err(|e| open_err(&e))?;
            super::redb_schema::create_tables(&txn).map_err(|e| open_err(&e))?;
            super::redb_marks::create_tables(&txn).map_err(|e| open_err(&e))?;
        }
        txn.commit().map_err(|e| open_err(&e))
    }
}

/// How long a busy group commit waits for its batch to fill: about a tenth
/// of a commit's cycle under load, much less than its fsync on a shared disk.
const LINGER: std::time::Duration = std::time::Duration::from_millis(1);

impl Backend for RedbBackend {
    fn linger(&self) -> Option<std::time::Duration> {
        Some(LINGER)
    }

    fn close(&self) {
        // Dropping the database writes its clean-shutdown mark, so the next
        // start needs no repair.
        self.db.write().take();
    }

    fn apply(&self, ops: &[StoreOp], fsync: bool) -> Result<i64, StoreError> {
        let mut held_change = 0i64;
        let db = self.db.read();
        let db = db.as_ref().ok_or(StoreError::Closed)?;
        let mut txn = db.begin_write().map_err(write_err)?;
        if !fsync {
            txn.set_durability(redb::Durability::None)
                .map_err(write_err)?;
        }
        // Opening a table costs two lookups in redb's table tree per commit:
        // a batch of stream appends alone opens none of these.
        if ops.iter().any(is_core_op) {
            let mut sessions = txn.open_table(SESSIONS).map_err(write_err)?;
            let mut owners = txn.open_table(SESSION_OWNERS).map_err(write_err)?;
            let mut selectors = txn.open_table(SESSION_SELECTORS).map_err(write_err)?;
            let mut deliveries = txn.open_table(DELIVERIES).map_err(write_err)?;
            let mut messages = txn.open_table(MESSAGES).map_err(write_err)?;
            let mut refs = txn.open_table(MESSAGE_REFS).map_err(write_err)?;
            let mut incoming = txn.open_table(INCOMING_QOS2).map_err(write_err)?;
            let mut retained = txn.open_table(RETAINED).map_err(write_err)?;
            let mut queued = txn.open_table(QUEUED).map_err(write_err)?;
            let mut wills = txn.open_table(WILLS).map_err(write_err)?;
            for op in ops {
                match op {
                    StoreOp::PutSession { client_id, record } => {
                        sessions
                            .insert(client_id.as_str(), encode(record)?.as_slice())
                            .map_err(write_err)?;
                        if record.owner != OwnerRecord::Unknown {
                            owners
                                .insert(client_id.as_str(), encode(&record.owner)?.as_slice())
                                .map_err(write_err)?;
                        }
                        let with_selector: Vec<(&str, &str)> = record
                            .subscriptions
                            .iter()
                            .filter_map(|s| Some((s.filter.as_str(), s.selector.as_deref()?)))
                            .collect();
                        if with_selector.is_empty() {
                            selectors.remove(client_id.as_str()).map_err(write_err)?;
                        } else {
                            selectors
                                .insert(client_id.as_str(), encode(&with_selector)?.as_slice())
                                .map_err(write_err)?;
                        }
                    }
                    StoreOp::DeleteSession { client_id } => {
                        let id = client_id.as_str();
                        sessions.remove(id).map_err(write_err)?;
                        owners.remove(id).map_err(write_err)?;
                        selectors.remove(id).map_err(write_err)?;
                        let mut released = Vec::new();
                        deliveries
                            .retain_in((id, 0)..=(id, u64::MAX), |_, value| {
                                held_change -= 1;
                                released.extend(message_id_of(value));
                                false
                            })
                            .map_err(write_err)?;
                        for message_id in released {
                            unref_message(&mut refs, &mut messages, message_id)?;
                        }
                        incoming
                            .retain_in((id, 0)..=(id, u16::MAX), |_, _| false)
                            .map_err(write_err)?;
                    }
                    StoreOp::PutDelivery {
                        client_id,
                        seq,
                        record,
                    } => {
                        let old = deliveries
                            .insert((client_id.as_str(), *seq), encode(record)?.as_slice())
                            .map_err(write_err)?
                            .map(|old| message_id_of(old.value()));
                        held_change += i64::from(old.is_none());
                        // A rewrite (packet id, release) of the same message keeps its reference.
                        if old != Some(Some(record.message_id)) {
                            ref_message(&mut refs, record.message_id)?;
                            if let Some(Some(previous)) = old {
                                unref_message(&mut refs, &mut messages, previous)?;
                            }
                        }
                    }
                    StoreOp::DeleteDelivery { client_id, seq } => {
                        let old = deliveries
                            .remove((client_id.as_str(), *seq))
                            .map_err(write_err)?
                            .map(|old| message_id_of(old.value()));
                        held_change -= i64::from(old.is_some());
                        if let Some(Some(message_id)) = old {
                            unref_message(&mut refs, &mut messages, message_id)?;
                        }
                    }
                    StoreOp::MarkDelivery {
                        client_id,
                        seq,
                        packet_id,
                        released,
                    } => {
                        let key = (client_id.as_str(), *seq);
                        let stored = deliveries
                            .get(key)
                            .map_err(write_err)?
                            .map(|found| decode::<DeliveryRecord>(found.value()));
                        // Gone meanwhile (acknowledged, session ended): nothing to mark.
                        let Some(record) = stored else { continue };
                        let mut record = record?;
                        record.packet_id = Some(*packet_id);
                        record.released = *released;
                        deliveries
                            .insert(key, encode(&record)?.as_slice())
                            .map_err(write_err)?;
                    }
                    StoreOp::PutMessage { id, record } => {
                        messages
                            .insert(*id, encode(record)?.as_slice())
                            .map_err(write_err)?;
                    }
                    StoreOp::PutIncomingQos2 {
                        client_id,
                        packet_id,
                    } => {
                        incoming
                            .insert((client_id.as_str(), *packet_id), ())
                            .map_err(write_err)?;
                    }
                    StoreOp::DeleteIncomingQos2 {
                        client_id,
                        packet_id,
                    } => {
                        incoming
                            .remove((client_id.as_str(), *packet_id))
                            .map_err(write_err)?;
                    }
                    StoreOp::PutRetained { record } => {
                        retained
                            .insert(record.topic.as_str(), encode(record)?.as_slice())
                            .map_err(write_err)?;
                    }
                    StoreOp::DeleteRetained { topic } => {
                        retained.remove(topic.as_str()).map_err(write_err)?;
                    }
                    StoreOp::PutQueued { queue, seq, record } => {
                        let old = queued
                            .insert((queue.as_str(), *seq), encode(record)?.as_slice())
                            .map_err(write_err)?;
                        held_change += i64::from(old.is_none());
                    }
                    StoreOp::DeleteQueued { queue, seq } => {
                        let old = queued.remove((queue.as_str(), *seq)).map_err(write_err)?;
                        held_change -= i64::from(old.is_some());
                    }
                    StoreOp::PutWill { client_id, record } => {
                        wills
                            .insert(client_id.as_str(), encode(record)?.as_slice())
                            .map_err(write_err)?;
                    }
                    StoreOp::DeleteWill { client_id } => {
                        wills.remove(client_id.as_str()).map_err(write_err)?;
                    }
                    // Applied below, in their own tables.
                    StoreOp::AppendStream { .. }
                    | StoreOp::TrimStream { .. }
                    | StoreOp::PutStreamConsumer { .. }
                    | StoreOp::PutStreamDeclaration { .. }
                    | StoreOp::DeleteStreamDeclaration { .. }
                    | StoreOp::DeleteStream { .. }
                    | StoreOp::PutSchema { .. }
                    | StoreOp::DeleteSchema { .. }
                    | StoreOp::PutPeerMarks { .. } => {}
                    // A shared store's (never submitted to this one).
                    StoreOp::ReleaseClient { .. } | StoreOp::HoldClient { .. } => {}
                }
            }
        }
        super::redb_stream::apply(&txn, ops)?;
        super::redb_schema::apply(&txn, ops)?;
        super::redb_marks::apply(&txn, ops)?;
        txn.commit().map_err(write_err)?;
        Ok(held_change)
    }

    fn load(&self) -> Result<Snapshot, StoreError> {
        let read_err = |e: &dyn std::fmt::Display| StoreError::Corrupt {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        };
        let db = self.db.read();
        let db = db.as_ref().ok_or(StoreError::Closed)?;
        let txn = db.begin_read().map_err(|e| read_err(&e))?;
        let mut snapshot = Snapshot::default();

        let mut owners = std::collections::HashMap::new();
        let table = txn.open_table(SESSION_OWNERS).map_err(|e| read_err(&e))?;
        for row in table.iter().map_err(|e| read_err(&e))? {
            let (k, v) = row.map_err(|e| read_err(&e))?;
            let owner: OwnerRecord = decode(v.value())?;
            owners.insert(k.value().to_string(), owner);
        }
        let mut selectors = std::collections::HashMap::new();
        let table = txn
            .open_table(SESSION_SELECTORS)
            .map_err(|e| read_err(&e))?;
        for row in table.iter().map_err(|e| read_err(&e))? {
            let (k, v) = row.map_err(|e| read_err(&e))?;
            let pairs: Vec<(String, String)> = decode(v.value())?;
            selectors.insert(k.value().to_string(), pairs);
        }
        let table = txn.open_table(SESSIONS).map_err(|e| read_err(&e))?;
        for row in table.iter().map_err(|e| read_err(&e))? {
            let (k, v) = row.map_err(|e| read_err(&e))?;
            let mut record: SessionRecord = decode(v.value())?;
            let client_id = k.value().to_string();
            record.owner = owners.remove(&client_id).unwrap_or_default();
            for (filter, selector) in selectors.remove(&client_id).unwrap_or_default() {
                if let Some(s) = record.subscriptions.iter_mut().find(|s| s.filter == filter) {
                    s.selector = Some(selector);
                }
            }
            snapshot.sessions.push((client_id, record));
        }
        let table = txn.open_table(DELIVERIES).map_err(|e| read_err(&e))?;
        for row in table.iter().map_err(|e| read_err(&e))? {
            let (k, v) = row.map_err(|e| read_err(&e))?;
            let (client, seq) = k.value();
            let record: DeliveryRecord = decode(v.value())?;
            snapshot.deliveries.push((client.to_string(), seq, record));
        }
        let table = txn.open_table(MESSAGES).map_err(|e| read_err(&e))?;
        for row in table.iter().map_err(|e| read_err(&e))? {
            let (k, v) = row.map_err(|e| read_err(&e))?;
            let record: MessageRecord = decode(v.value())?;
            snapshot.messages.push((k.value(), record));
        }
        let table = txn.open_table(INCOMING_QOS2).map_err(|e| read_err(&e))?;
        for row in table.iter().map_err(|e| read_err(&e))? {
            let (k, _) = row.map_err(|e| read_err(&e))?;
            let (client, id) = k.value();
            snapshot.incoming_qos2.push((client.to_string(), id));
        }
        let table = txn.open_table(RETAINED).map_err(|e| read_err(&e))?;
        for row in table.iter().map_err(|e| read_err(&e))? {
            let (_, v) = row.map_err(|e| read_err(&e))?;
            let record: MessageRecord = decode(v.value())?;
            snapshot.retained.push(record);
        }
        let table = txn.open_table(QUEUED).map_err(|e| read_err(&e))?;
        for row in table.iter().map_err(|e| read_err(&e))? {
            let (k, v) = row.map_err(|e| read_err(&e))?;
            let (queue, seq) = k.value();
            let record: MessageRecord = decode(v.value())?;
            snapshot.queued.push((queue.to_string(), seq, record));
        }
        let table = txn.open_table(WILLS).map_err(|e| read_err(&e))?;
        for row in table.iter().map_err(|e| read_err(&e))? {
            let (k, v) = row.map_err(|e| read_err(&e))?;
            let record: WillRecord = decode(v.value())?;
            snapshot.wills.push((k.value().to_string(), record));
        }
        super::redb_stream::load(&txn, &mut snapshot)?;
        super::redb_schema::load(&txn, &mut snapshot)?;
        super::redb_marks::load(&txn, &mut snapshot)?;
        Ok(snapshot)
    }

    fn read_stream(
        &self,
        stream: &str,
        from: u64,
        max: usize,
    ) -> Result<Vec<(u64, StreamRecord)>, StoreError> {
        let db = self.db.read();
        let db = db.as_ref().ok_or(StoreError::Closed)?;
        let txn = db.begin_read().map_err(write_err)?;
        super::redb_stream::read(&txn, stream, from, max)
    }

    fn find_stream_time(&self, stream: &str, time_ms: u64) -> Result<Option<u64>, StoreError> {
        let db = self.db.read();
        let db = db.as_ref().ok_or(StoreError::Closed)?;
        let txn = db.begin_read().map_err(write_err)?;
        super::redb_stream::find_time(&txn, stream, time_ms)
    }
}

/// The message a stored delivery refers to (None if it does not decode).
fn message_id_of(delivery: &[u8]) -> Option<u64> {
    decode::<DeliveryRecord>(delivery)
        .ok()
        .map(|record| record.message_id)
}

fn ref_message(refs: &mut redb::Table<u64, u64>, message_id: u64) -> Result<(), StoreError> {
    let count = refs
        .get(message_id)
        .map_err(write_err)?
        .map_or(0, |c| c.value());
    refs.insert(message_id, count + 1).map_err(write_err)?;
    Ok(())
}

/// One delivery fewer refers to `message_id`: the message goes with the last.
fn unref_message(
    refs: &mut redb::Table<u64, u64>,
    messages: &mut redb::Table<u64, &[u8]>,
    message_id: u64,
) -> Result<(), StoreError> {
    let count = refs
        .get(message_id)
        .map_err(write_err)?
        .map_or(0, |c| c.value());
    if count <= 1 {
        refs.remove(message_id).map_err(write_err)?;
        messages.remove(message_id).map_err(write_err)?;
    } else {
        refs.insert(message_id, count - 1).map_err(write_err)?;
    }
    Ok(())
}

mod migrate;
#[cfg(test)]
mod tests;
