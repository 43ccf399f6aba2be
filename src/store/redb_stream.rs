//! The redb tables of durable streams: messages keyed by (stream, offset), a
//! meta row per stream (next offset, bytes kept) and the named consumers'
//! acknowledged offsets, and the declarations of streams created through the
//! admin API. Written in the same group commit as everything else.

use std::collections::HashMap;

use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::record::{StreamRecord, StreamState};
use super::{Snapshot, StoreError, StoreOp};

const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("stream_messages");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("stream_meta");
const CONSUMERS: TableDefinition<(&str, &str), u64> = TableDefinition::new("stream_consumers");
const DECLARATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("stream_declarations");

/// Per stream: kept so that bytes and the next offset need no scan at start.
#[derive(Debug, Default, Serialize, Deserialize)]
struct MetaRecord {
    next: u64,
    bytes: u64,
}

fn write_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Write(e.to_string())
}

fn read_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Decode(e.to_string())
}

/// The publish time and size at the front of an encoded [`StreamRecord`].
fn head(bytes: &[u8]) -> (u64, u64) {
    postcard::take_from_bytes::<(u64, u64)>(bytes)
        .map(|(h, _)| h)
        .unwrap_or((0, 0))
}

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), redb::TableError> {
    txn.open_table(MESSAGES)?;
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

fn meta_of(meta: &redb::Table<&str, &[u8]>, stream: &str) -> Result<MetaRecord, StoreError> {
    match meta.get(stream).map_err(write_err)? {
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

/// Applies the stream operations of one batch, in order, inside `txn`.
pub(super) fn apply(txn: &WriteTransaction, ops: &[StoreOp]) -> Result<(), StoreError> {
    if !ops.iter().any(is_stream_op) {
        return Ok(());
    }
    let mut messages = txn.open_table(MESSAGES).map_err(write_err)?;
    let mut meta = txn.open_table(META).map_err(write_err)?;
    let mut consumers = txn.open_table(CONSUMERS).map_err(write_err)?;
    let mut declarations = txn.open_table(DECLARATIONS).map_err(write_err)?;
    // Each stream's meta row read once and written once per batch, not per message.
    let mut metas: HashMap<&str, MetaRecord> = HashMap::new();
    for op in ops {
        match op {
            StoreOp::AppendStream {
                stream,
                offset,
                record,
            } => {
                let encoded = postcard::to_allocvec(record).map_err(write_err)?;
                messages
                    .insert((stream.as_str(), *offset), encoded.as_slice())
                    .map_err(write_err)?;
                let m = cached_meta(&mut metas, &meta, stream)?;
                m.next = m.next.max(offset + 1);
                m.bytes += record.size;
            }
            StoreOp::TrimStream { stream, below } => {
                let mut freed = 0u64;
                messages
                    .retain_in((stream.as_str(), 0)..(stream.as_str(), *below), |_, v| {
                        freed += head(v).1;
                        false
                    })
                    .map_err(write_err)?;
                let m = cached_meta(&mut metas, &meta, stream)?;
                m.bytes = m.bytes.saturating_sub(freed);
                m.next = m.next.max(*below);
            }
            StoreOp::PutStreamConsumer {
                stream,
                consumer,
                offset,
            } => {
                consumers
                    .insert((stream.as_str(), consumer.as_str()), *offset)
                    .map_err(write_err)?;
            }
            StoreOp::PutStreamDeclaration { stream, settings } => {
                declarations
                    .insert(stream.as_str(), settings.as_slice())
                    .map_err(write_err)?;
            }
            StoreOp::DeleteStreamDeclaration { stream } => {
                declarations.remove(stream.as_str()).map_err(write_err)?;
            }
            StoreOp::DeleteStream { stream } => {
                let name = stream.as_str();
                declarations.remove(name).map_err(write_err)?;
                messages
                    .retain_in((name, 0)..=(name, u64::MAX), |_, _| false)
                    .map_err(write_err)?;
                // Rare (an operator's call): a scan of the consumers is fine.
                consumers.retain(|(s, _), _| s != name).map_err(write_err)?;
                meta.remove(name).map_err(write_err)?;
                metas.remove(name);
            }
            _ => {}
        }
    }
    for (stream, m) in &metas {
        put_meta(&mut meta, stream, m)?;
    }
    Ok(())
}

/// The meta row of `stream` in this batch's cache, read on first use.
fn cached_meta<'m, 'o>(
    metas: &'m mut HashMap<&'o str, MetaRecord>,
    meta: &redb::Table<&str, &[u8]>,
    stream: &'o str,
) -> Result<&'m mut MetaRecord, StoreError> {
    if !metas.contains_key(stream) {
        let m = meta_of(meta, stream)?;
        metas.insert(stream, m);
    }
    metas
        .get_mut(stream)
        .ok_or_else(|| StoreError::Write("stream meta cache".into()))
}

/// Adds every stream's state and the named consumers to `snapshot`.
pub(super) fn load(txn: &ReadTransaction, snapshot: &mut Snapshot) -> Result<(), StoreError> {
    let messages = txn.open_table(MESSAGES).map_err(read_err)?;
    let meta = txn.open_table(META).map_err(read_err)?;
    for row in meta.iter().map_err(read_err)? {
        let (k, v) = row.map_err(read_err)?;
        let name = k.value().to_string();
        let m: MetaRecord = postcard::from_bytes(v.value()).map_err(read_err)?;
        let oldest = messages
            .range((name.as_str(), 0)..=(name.as_str(), u64::MAX))
            .map_err(read_err)?
            .next()
            .transpose()
            .map_err(read_err)?
            .map(|(k, v)| (k.value().1, head(v.value()).0));
        let (first, first_time_ms) = oldest.unwrap_or((m.next, 0));
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
    let messages = txn.open_table(MESSAGES).map_err(read_err)?;
    let mut out = Vec::with_capacity(max.min(1024));
    for row in messages
        .range((stream, from)..=(stream, u64::MAX))
        .map_err(read_err)?
    {
        if out.len() >= max {
            break;
        }
        let (k, v) = row.map_err(read_err)?;
        let record: StreamRecord = postcard::from_bytes(v.value()).map_err(read_err)?;
        out.push((k.value().1, record));
    }
    Ok(out)
}

/// The first offset of `stream` published at or after `time_ms`. Publish
/// times grow with offsets (one clock, one writer), so this is a binary search
/// over offsets, a few lookups whatever the stream's length.
pub(super) fn find_time(
    txn: &ReadTransaction,
    stream: &str,
    time_ms: u64,
) -> Result<Option<u64>, StoreError> {
    let messages = txn.open_table(MESSAGES).map_err(read_err)?;
    let mut range = messages
        .range((stream, 0)..=(stream, u64::MAX))
        .map_err(read_err)?;
    let Some(first) = range.next().transpose().map_err(read_err)? else {
        return Ok(None);
    };
    let Some(last) = range.next_back().transpose().map_err(read_err)? else {
        return Ok((head(first.1.value()).0 >= time_ms).then(|| first.0.value().1));
    };
    let (mut lo, mut hi) = (first.0.value().1, last.0.value().1);
    if head(last.1.value()).0 < time_ms {
        return Ok(None);
    }
    // Invariant: the answer is in lo..=hi and hi qualifies.
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        // The first kept row at or after mid (rows below `first` are trimmed).
        let row = messages
            .range((stream, mid)..=(stream, hi))
            .map_err(read_err)?
            .next()
            .transpose()
            .map_err(read_err)?;
        match row {
            Some((k, v)) if head(v.value()).0 >= time_ms => hi = k.value().1.min(hi),
            Some((k, _)) => lo = k.value().1 + 1,
            None => lo = hi,
        }
    }
    Ok(Some(hi))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crate::store::record::MessageRecord;
    use crate::store::redb::RedbBackend;
    use crate::store::{Backend, StoreOp};

    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tern-stream-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir.join("tern.redb")
    }

    fn append(offset: u64, time_ms: u64) -> StoreOp {
        StoreOp::AppendStream {
            stream: "s".into(),
            offset,
            record: StreamRecord {
                time_ms,
                size: 10,
                message: MessageRecord {
                    topic: "t/1".into(),
                    payload: b"1234567".to_vec(),
                    qos: 0,
                    retain: false,
                    expires_at_ms: None,
                    payload_is_utf8: false,
                    content_type: None,
                    response_topic: None,
                    correlation_data: None,
                    user_properties: vec![],
                    publisher: None,
                },
            },
        }
    }

    #[test]
    fn appends_trims_and_consumers_survive_reopen_with_bytes_and_offsets() {
        let path = temp_path("reopen");
        {
            let b = RedbBackend::open(&path).unwrap();
            let ops: Vec<StoreOp> = (0..10).map(|i| append(i, 1000 + i * 100)).collect();
            b.apply(&ops, true).unwrap();
            b.apply(
                &[
                    StoreOp::TrimStream {
                        stream: "s".into(),
                        below: 4,
                    },
                    StoreOp::PutStreamConsumer {
                        stream: "s".into(),
                        consumer: "c".into(),
                        offset: 6,
                    },
                ],
                true,
            )
            .unwrap();
            let read = b.read_stream("s", 0, 3).unwrap();
            assert_eq!(
                read.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
                vec![4, 5, 6]
            );
            assert_eq!(read[0].1.message.payload, b"1234567".to_vec());
        }
        let b = RedbBackend::open(&path).unwrap();
        let snap = b.load().unwrap();
        assert_eq!(
            snap.streams,
            vec![StreamState {
                name: "s".into(),
                first: 4,
                next: 10,
                bytes: 60,
                first_time_ms: 1400,
            }]
        );
        assert_eq!(
            snap.stream_consumers,
            vec![("s".to_string(), "c".to_string(), 6)]
        );
    }

    #[test]
    fn declarations_are_kept_and_a_deleted_stream_leaves_nothing() {
        let path = temp_path("declared");
        let b = RedbBackend::open(&path).unwrap();
        let declare = |name: &str| StoreOp::PutStreamDeclaration {
            stream: name.into(),
            settings: b"{}".to_vec(),
        };
        b.apply(&[declare("s"), declare("t"), append(0, 1)], true)
            .unwrap();
        b.apply(
            &[StoreOp::PutStreamConsumer {
                stream: "s".into(),
                consumer: "c".into(),
                offset: 0,
            }],
            true,
        )
        .unwrap();
        let snap = b.load().unwrap();
        assert_eq!(snap.stream_declarations.len(), 2);
        b.apply(
            &[
                append(1, 2),
                StoreOp::DeleteStream { stream: "s".into() },
                StoreOp::DeleteStreamDeclaration { stream: "t".into() },
            ],
            true,
        )
        .unwrap();
        let snap = b.load().unwrap();
        assert!(snap.stream_declarations.is_empty());
        assert!(snap.streams.is_empty());
        assert!(snap.stream_consumers.is_empty());
        assert!(b.read_stream("s", 0, 10).unwrap().is_empty());
    }

    #[test]
    fn a_purged_stream_keeps_its_next_offset() {
        let path = temp_path("purged");
        let b = RedbBackend::open(&path).unwrap();
        b.apply(&[append(0, 1), append(1, 2)], true).unwrap();
        b.apply(
            &[StoreOp::TrimStream {
                stream: "s".into(),
                below: 2,
            }],
            true,
        )
        .unwrap();
        let snap = b.load().unwrap();
        assert_eq!((snap.streams[0].first, snap.streams[0].next), (2, 2));
        assert_eq!(snap.streams[0].bytes, 0);
    }

    #[test]
    fn time_lookup_finds_the_first_message_at_or_after_a_time() {
        let path = temp_path("time");
        let b = RedbBackend::open(&path).unwrap();
        let ops: Vec<StoreOp> = (0..100).map(|i| append(i, 1000 + i * 10)).collect();
        b.apply(&ops, true).unwrap();
        assert_eq!(b.find_stream_time("s", 0).unwrap(), Some(0));
        assert_eq!(b.find_stream_time("s", 1000).unwrap(), Some(0));
        assert_eq!(b.find_stream_time("s", 1001).unwrap(), Some(1));
        assert_eq!(b.find_stream_time("s", 1500).unwrap(), Some(50));
        assert_eq!(b.find_stream_time("s", 1990).unwrap(), Some(99));
        assert_eq!(b.find_stream_time("s", 1991).unwrap(), None);
        assert_eq!(b.find_stream_time("other", 0).unwrap(), None);
    }
}
