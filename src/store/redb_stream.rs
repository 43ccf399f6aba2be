//! The redb tables of durable streams: messages in chunks keyed by (stream,
//! first offset), one chunk per stream per group commit (`stream_chunk.rs`), a
//! meta row per stream (first and next offset, bytes kept), the named
//! consumers' acknowledged offsets, and the declarations of streams created
//! through the admin API. Written in the same group commit as everything else.

use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::record::{StreamRecord, StreamState};
use super::stream_chunk::{self, EntryHead, CHUNK_ENTRIES};
use super::{Snapshot, StoreError, StoreOp};

const CHUNKS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("stream_chunks");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("stream_chunk_meta");
const CONSUMERS: TableDefinition<(&str, &str), u64> = TableDefinition::new("stream_consumers");
const DECLARATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("stream_declarations");

/// Per stream: kept so that offsets and bytes need no scan at start. `first`
/// matters because a trim keeps a chunk that holds offsets on both sides.
#[derive(Debug, Default, Serialize, Deserialize)]
struct MetaRecord {
    first: u64,
    next: u64,
    bytes: u64,
}

pub(super) fn write_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Write(e.to_string())
}

pub(super) fn read_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Decode(e.to_string())
}

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), redb::TableError> {
    txn.open_table(CHUNKS)?;
    txn.open_table(META)?;
    txn.open_table(CONSUMERS)?;
    txn.open_table(DECLARATIONS)?;
    Ok(())
}

pub(super) fn is_stream_op(op: &StoreOp) -> bool {
    matches!(
        op,
        StoreOp::AppendStream { .. }
            | StoreOp::TrimStream { .. }
            | StoreOp::PutStreamConsumer { .. }
            | StoreOp::PutStreamDeclaration { .. }
            | StoreOp::DeleteStreamDeclaration { .. }
            | StoreOp::DeleteStream { .. }
    )
}

fn meta_of(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    stream: &str,
) -> Result<MetaRecord, StoreError> {
    match meta.get(stream).map_err(read_err)? {
        Some(v) => postcard::from_bytes(v.value()).map_err(read_err),
        None => Ok(MetaRecord::default()),
    }
}

fn put_meta(
    meta: &mut redb::Table<&str, &[u8]>,
    stream: &str,
    record: &MetaRecord,
) -> Result<(), StoreError> {
    let bytes = postcard::to_allocvec(record).map_err(write_err)?;
    meta.insert(stream, bytes.as_slice()).map_err(write_err)?;
    Ok(())
}

/// A chunk being built for one stream in this batch: its first offset, entries, bytes.
type Building = (u64, usize, Vec<u8>);

fn write_chunk(
    chunks: &mut redb::Table<(&str, u64), &[u8]>,
    stream: &str,
    building: Option<Building>,
) -> Result<(), StoreError> {
    if let Some((first, _, bytes)) = building {
        chunks
            .insert((stream, first), bytes.as_slice())
            .map_err(write_err)?;
    }
    Ok(())
}

/// Per stream state of one batch, by name. A batch touches few streams (and
/// mostly one after the other), so a list beats hashing the name per message.
struct ByStream<'o, T>(Vec<(&'o str, T)>);

impl<'o, T> ByStream<'o, T> {
    fn get_mut(&mut self, name: &str) -> Option<&mut T> {
        self.0
            .iter_mut()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| t)
    }

    fn remove(&mut self, name: &str) -> Option<T> {
        let at = self.0.iter().position(|(n, _)| *n == name)?;
        Some(self.0.swap_remove(at).1)
    }
}

/// Applies the stream operations of one batch, in order, inside `txn`.
pub(super) fn apply(txn: &WriteTransaction, ops: &[StoreOp]) -> Result<(), StoreError> {
    if !ops.iter().any(is_stream_op) {
        return Ok(());
    }
    let mut chunks = txn.open_table(CHUNKS).map_err(write_err)?;
    let mut meta = txn.open_table(META).map_err(write_err)?;
    // Opened when a batch needs them (each open table costs the commit two
    // lookups in redb's table tree): appends alone touch chunks and meta.
    let mut consumers = None;
    let mut declarations = None;
    // Each stream's meta row read once and written once per batch, not per message.
    let mut metas: ByStream<MetaRecord> = ByStream(Vec::new());
    let mut building: ByStream<Building> = ByStream(Vec::new());
    for op in ops {
        match op {
            StoreOp::AppendStream {
                stream,
                offset,
                size,
                entry,
            } => {
                let name: &str = stream;
                if building
                    .get_mut(name)
                    .is_some_and(|(_, n, _)| *n >= CHUNK_ENTRIES)
                {
                    write_chunk(&mut chunks, name, building.remove(name))?;
                }
                if building.get_mut(name).is_none() {
                    let capacity = (entry.len() + 16) * 256;
                    building
                        .0
                        .push((name, (*offset, 0, Vec::with_capacity(capacity))));
                }
                let chunk = building
                    .get_mut(name)
                    .ok_or_else(|| StoreError::Write("stream chunk".into()))?;
                stream_chunk::push_encoded(&mut chunk.2, *offset, entry)?;
                chunk.1 += 1;
                let m = cached_meta(&mut metas, &meta, name)?;
                m.next = m.next.max(offset + 1);
                m.bytes += size;
            }
            StoreOp::TrimStream { stream, below } => {
                let name = stream.as_str();
                write_chunk(&mut chunks, name, building.remove(name))?;
                let m = cached_meta(&mut metas, &meta, name)?;
                trim(&mut chunks, name, m, *below)?;
            }
            StoreOp::PutStreamConsumer {
                stream,
                consumer,
                offset,
            } => {
                opened(&mut consumers, txn, CONSUMERS)?
                    .insert((stream.as_str(), consumer.as_str()), *offset)
                    .map_err(write_err)?;
            }
            StoreOp::PutStreamDeclaration { stream, settings } => {
                opened(&mut declarations, txn, DECLARATIONS)?
                    .insert(stream.as_str(), settings.as_slice())
                    .map_err(write_err)?;
            }
            StoreOp::DeleteStreamDeclaration { stream } => {
                opened(&mut declarations, txn, DECLARATIONS)?
                    .remove(stream.as_str())
                    .map_err(write_err)?;
            }
            StoreOp::DeleteStream { stream } => {
                let name = stream.as_str();
                building.remove(name);
                metas.remove(name);
                opened(&mut declarations, txn, DECLARATIONS)?
                    .remove(name)
                    .map_err(write_err)?;
                chunks
                    .retain_in((name, 0)..=(name, u64::MAX), |_, _| false)
                    .map_err(write_err)?;
                // Rare (an operator's call): a scan of the consumers is fine.
                opened(&mut consumers, txn, CONSUMERS)?
                    .retain(|(s, _), _| s != name)
                    .map_err(write_err)?;
                meta.remove(name).map_err(write_err)?;
            }
            _ => {}
        }
    }
    for (stream, chunk) in building.0 {
        write_chunk(&mut chunks, stream, Some(chunk))?;
    }
    for (stream, m) in &metas.0 {
        put_meta(&mut meta, stream, m)?;
    }
    Ok(())
}

/// The table in `slot`, opened in `txn` on first use.
fn opened<'s, 't, K: redb::Key + 'static, V: redb::Value + 'static>(
    slot: &'s mut Option<redb::Table<'t, K, V>>,
    txn: &'t WriteTransaction,
    definition: TableDefinition<K, V>,
) -> Result<&'s mut redb::Table<'t, K, V>, StoreError> {
    if slot.is_none() {
        *slot = Some(txn.open_table(definition).map_err(write_err)?);
    }
    slot.as_mut()
        .ok_or_else(|| StoreError::Write("table not open".into()))
}

/// Removes the messages of `stream` below `below`: whole chunks go, a chunk
/// holding offsets on both sides stays (reads start at `first`).
fn trim(
    chunks: &mut redb::Table<(&str, u64), &[u8]>,
    stream: &str,
    m: &mut MetaRecord,
    below: u64,
) -> Result<(), StoreError> {
    m.next = m.next.max(below);
    if below <= m.first {
        return Ok(());
    }
    let mut gone = Vec::new();
    let mut freed = 0u64;
    for row in chunks
        .range((stream, 0)..(stream, below))
        .map_err(write_err)?
    {
        let (k, v) = row.map_err(write_err)?;
        let mut whole = true;
        for entry in stream_chunk::entries(v.value()) {
            let (head, _) = entry?;
            if head.offset >= below {
                whole = false;
            } else if head.offset >= m.first {
                freed += head.size;
            }
        }
        if whole {
            gone.push(k.value().1);
        }
    }
    for first in gone {
        chunks.remove((stream, first)).map_err(write_err)?;
    }
    m.first = below;
    m.bytes = m.bytes.saturating_sub(freed);
    Ok(())
}

/// The meta row of `stream` in this batch's cache, read on first use.
fn cached_meta<'m, 'o>(
    metas: &'m mut ByStream<'o, MetaRecord>,
    meta: &redb::Table<&str, &[u8]>,
    stream: &'o str,
) -> Result<&'m mut MetaRecord, StoreError> {
    if metas.get_mut(stream).is_none() {
        let m = meta_of(meta, stream)?;
        metas.0.push((stream, m));
    }
    metas
        .get_mut(stream)
        .ok_or_else(|| StoreError::Write("stream meta cache".into()))
}

/// The first entry of `stream` at or after `from`: its head.
fn head_at_or_after(
    chunks: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    stream: &str,
    from: u64,
) -> Result<Option<EntryHead>, StoreError> {
    let start = chunk_start(chunks, stream, from)?;
    for row in chunks
        .range((stream, start)..=(stream, u64::MAX))
        .map_err(read_err)?
    {
        let (_, v) = row.map_err(read_err)?;
        for entry in stream_chunk::entries(v.value()) {
            let (head, _) = entry?;
            if head.offset >= from {
                return Ok(Some(head));
            }
        }
    }
    Ok(None)
}

/// The key of the chunk that holds `offset` (the last one starting at or
/// before it), or `offset` itself when none does.
fn chunk_start(
    chunks: &impl ReadableTable<(&'static str, u64), &'static [u8]>,
    stream: &str,
    offset: u64,
) -> Result<u64, StoreError> {
    let found = chunks
        .range((stream, 0)..=(stream, offset))
        .map_err(read_err)?
        .next_back()
        .transpose()
        .map_err(read_err)?
        .map(|(k, _)| k.value().1);
    Ok(found.unwrap_or(offset))
}

/// Adds every stream's state and the named consumers to `snapshot`.
pub(super) fn load(txn: &ReadTransaction, snapshot: &mut Snapshot) -> Result<(), StoreError> {
    let chunks = txn.open_table(CHUNKS).map_err(read_err)?;
    let meta = txn.open_table(META).map_err(read_err)?;
    for row in meta.iter().map_err(read_err)? {
        let (k, v) = row.map_err(read_err)?;
        let name = k.value().to_string();
        let m: MetaRecord = postcard::from_bytes(v.value()).map_err(read_err)?;
        let oldest = head_at_or_after(&chunks, &name, m.first)?;
        let (first, first_time_ms) = oldest.map_or((m.next, 0), |h| (h.offset, h.time_ms));
        snapshot.streams.push(StreamState {
            name,
            first,
            next: m.next,
            bytes: m.bytes,
            first_time_ms,
        });
    }
    let consumers = txn.open_table(CONSUMERS).map_err(read_err)?;
    for row in consumers.iter().map_err(read_err)? {
        let (k, v) = row.map_err(read_err)?;
        let (stream, consumer) = k.value();
        snapshot
            .stream_consumers
            .push((stream.to_string(), consumer.to_string(), v.value()));
    }
    let declarations = txn.open_table(DECLARATIONS).map_err(read_err)?;
    for row in declarations.iter().map_err(read_err)? {
        let (k, v) = row.map_err(read_err)?;
        snapshot
            .stream_declarations
            .push((k.value().to_string(), v.value().to_vec()));
    }
    Ok(())
}

/// Up to `max` messages of `stream` from `from` on.
pub(super) fn read(
    txn: &ReadTransaction,
    stream: &str,
    from: u64,
    max: usize,
) -> Result<Vec<(u64, StreamRecord)>, StoreError> {
    let chunks = txn.open_table(CHUNKS).map_err(read_err)?;
    let meta = txn.open_table(META).map_err(read_err)?;
    // A trimmed chunk may still hold offsets below the stream's first.
    let from = from.max(meta_of(&meta, stream)?.first);
    let mut out = Vec::with_capacity(max.min(1024));
    // The chunk holding `from` comes with the seek that finds it (a chunk is
    // one large page: read once, not once to find it and again to walk it);
    // the range goes on after it.
    let holding = chunks
        .range((stream, 0)..=(stream, from))
        .map_err(read_err)?
        .next_back()
        .transpose()
        .map_err(read_err)?;
    let rest_from = match &holding {
        Some((k, v)) => {
            if !take_entries(v.value(), from, max, &mut out)? {
                return Ok(out);
            }
            match k.value().1.checked_add(1) {
                Some(next) => next,
                None => return Ok(out),
            }
        }
        None => from,
    };
    drop(holding);
    for row in chunks
        .range((stream, rest_from)..=(stream, u64::MAX))
        .map_err(read_err)?
    {
        let (_, v) = row.map_err(read_err)?;
        if !take_entries(v.value(), from, max, &mut out)? {
            break;
        }
    }
    Ok(out)
}

/// Decodes the entries of `chunk` at or after `from` into `out` while it
/// holds fewer than `max`; false once it is full.
fn take_entries(
    chunk: &[u8],
    from: u64,
    max: usize,
    out: &mut Vec<(u64, StreamRecord)>,
) -> Result<bool, StoreError> {
    for entry in stream_chunk::entries(chunk) {
        if out.len() >= max {
            return Ok(false);
        }
        let (head, entry) = entry?;
        if head.offset >= from {
            out.push((head.offset, stream_chunk::record(entry)?));
        }
    }
    Ok(out.len() < max)
}

/// The first offset of `stream` published at or after `time_ms`. Publish
/// times grow with offsets (one clock, one writer), so this is a binary search
/// over offsets, a few lookups whatever the stream's length.
pub(super) fn find_time(
    txn: &ReadTransaction,
    stream: &str,
    time_ms: u64,
) -> Result<Option<u64>, StoreError> {
    let chunks = txn.open_table(CHUNKS).map_err(read_err)?;
    let meta = txn.open_table(META).map_err(read_err)?;
    let m = meta_of(&meta, stream)?;
    let Some(first) = head_at_or_after(&chunks, stream, m.first)? else {
        return Ok(None);
    };
    if first.time_ms >= time_ms {
        return Ok(Some(first.offset));
    }
    let (mut lo, mut hi) = (first.offset, m.next.saturating_sub(1));
    match head_at_or_after(&chunks, stream, hi)? {
        Some(last) if last.time_ms >= time_ms => hi = last.offset,
        _ => return Ok(None),
    }
    // Invariant: the answer is in lo..=hi and hi qualifies.
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match head_at_or_after(&chunks, stream, mid)? {
            Some(h) if h.time_ms >= time_ms => hi = h.offset.min(hi),
            Some(h) => lo = h.offset + 1,
            None => lo = hi,
        }
    }
    Ok(Some(hi))
}

#[cfg(test)]
mod tests;
