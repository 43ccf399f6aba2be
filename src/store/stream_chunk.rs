//! The encoding of a stream chunk: the messages one group commit appended to
//! one stream, stored as one redb value (one B-tree insert per commit rather
//! than per message). Each entry is framed by its length (u32, little
//! endian), then postcard of `(offset, StreamRecord)`; the record starts with
//! its publish time and size, so walking a chunk's offsets, times and sizes
//! decodes no message.

use super::record::{StreamRecord, StreamRecordRef};
use super::StoreError;

/// Entries in one chunk at most (a bigger commit makes several chunks).
pub(super) const CHUNK_ENTRIES: usize = 1024;

/// What a chunk entry says without decoding its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct EntryHead {
    pub offset: u64,
    pub time_ms: u64,
    pub size: u64,
}

/// A record encoded for `push_encoded`: done by the publishing side, once,
/// from the message it borrows.
pub fn encode_record(record: &StreamRecordRef<'_>) -> Result<Vec<u8>, StoreError> {
    let m = &record.message;
    let capacity = 32 + m.topic.len() + m.payload.len();
    postcard::to_extend(record, Vec::with_capacity(capacity))
        .map_err(|e| StoreError::Write(e.to_string()))
}

/// Appends one entry, its record already encoded, to `chunk`. Postcard
/// encodes a tuple as its fields one after the other, so this is the
/// encoding of `(offset, record)` that `record` decodes.
pub(super) fn push_encoded(
    chunk: &mut Vec<u8>,
    offset: u64,
    encoded: &[u8],
) -> Result<(), StoreError> {
    let at = chunk.len();
    chunk.extend_from_slice(&[0; 4]);
    let mut extended = postcard::to_extend(&offset, std::mem::take(chunk))
        .map_err(|e| StoreError::Write(e.to_string()))?;
    extended.extend_from_slice(encoded);
    let len = u32::try_from(extended.len() - at - 4)
        .map_err(|_| StoreError::Write("stream message over 4 GiB".into()))?;
    extended[at..at + 4].copy_from_slice(&len.to_le_bytes());
    *chunk = extended;
    Ok(())
}

/// The entries of a chunk, in offset order, each as (head, encoded entry).
pub(super) fn entries(
    chunk: &[u8],
) -> impl Iterator<Item = Result<(EntryHead, &[u8]), StoreError>> {
    let mut rest = chunk;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let corrupt = || StoreError::Decode("truncated stream chunk".into());
        let Some((len, tail)) = rest.split_first_chunk::<4>() else {
            rest = &[];
            return Some(Err(corrupt()));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if tail.len() < len {
            rest = &[];
            return Some(Err(corrupt()));
        }
        let (entry, tail) = tail.split_at(len);
        rest = tail;
        Some(
            postcard::take_from_bytes::<(u64, u64, u64)>(entry)
                .map(|((offset, time_ms, size), _)| {
                    (
                        EntryHead {
                            offset,
                            time_ms,
                            size,
                        },
                        entry,
                    )
                })
                .map_err(|e| StoreError::Decode(e.to_string())),
        )
    })
}

/// Decodes one entry's record.
pub(super) fn record(entry: &[u8]) -> Result<StreamRecord, StoreError> {
    postcard::from_bytes::<(u64, StreamRecord)>(entry)
        .map(|(_, record)| record)
        .map_err(|e| StoreError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::{MessageRecord, MessageRecordRef};

    /// Encodes `record` through its borrowed form, as an append does.
    fn push(chunk: &mut Vec<u8>, offset: u64, record: &StreamRecord) {
        let m = &record.message;
        let borrowed = StreamRecordRef {
            time_ms: record.time_ms,
            size: record.size,
            message: MessageRecordRef {
                topic: &m.topic,
                payload: &m.payload,
                qos: m.qos,
                retain: m.retain,
                expires_at_ms: m.expires_at_ms,
                payload_is_utf8: m.payload_is_utf8,
                content_type: m.content_type.as_deref(),
                response_topic: m.response_topic.as_deref(),
                correlation_data: m.correlation_data.as_deref(),
                user_properties: &m.user_properties,
                publisher: m.publisher.as_deref(),
            },
        };
        let encoded = encode_record(&borrowed).unwrap();
        // The borrowed form encodes exactly as the owned one.
        assert_eq!(encoded, postcard::to_allocvec(record).unwrap());
        push_encoded(chunk, offset, &encoded).unwrap();
    }

    fn record_of(time_ms: u64, payload: &[u8]) -> StreamRecord {
        StreamRecord {
            time_ms,
            size: payload.len() as u64 + 3,
            message: MessageRecord {
                topic: "t/1".into(),
                payload: payload.to_vec(),
                qos: 1,
                retain: false,
                expires_at_ms: Some(time_ms + 60_000),
                payload_is_utf8: true,
                content_type: Some("text/plain".into()),
                response_topic: Some("r/1".into()),
                correlation_data: Some(vec![0, 255]),
                user_properties: vec![("k".into(), "v".into())],
                publisher: Some("alice".into()),
            },
        }
    }

    #[test]
    fn a_chunk_walks_back_its_entries_heads_and_records() {
        let mut chunk = Vec::new();
        for i in 0..3u64 {
            push(
                &mut chunk,
                10 + i,
                &record_of(100 + i, &vec![i as u8; i as usize * 300]),
            );
        }
        let walked: Vec<(EntryHead, StreamRecord)> = entries(&chunk)
            .map(|e| e.and_then(|(head, entry)| Ok((head, record(entry)?))))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(walked.len(), 3);
        for (i, (head, rec)) in walked.iter().enumerate() {
            let i = i as u64;
            assert_eq!(
                *head,
                EntryHead {
                    offset: 10 + i,
                    time_ms: 100 + i,
                    size: i * 300 + 3
                }
            );
            assert_eq!(*rec, record_of(100 + i, &vec![i as u8; i as usize * 300]));
        }
    }

    #[test]
    fn a_truncated_chunk_is_an_error_not_a_panic() {
        let mut chunk = Vec::new();
        push(&mut chunk, 0, &record_of(1, b"abc"));
        chunk.truncate(chunk.len() - 2);
        assert!(entries(&chunk).any(|e| e.is_err()));
        assert!(entries(&[1, 0]).any(|e| e.is_err()));
    }
}
