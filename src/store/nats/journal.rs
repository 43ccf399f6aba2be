//! The journal: every commit of this node as ONE message (a few only when it
//! is larger than [`MAX_PART`]) on subject `tern.journal.<node>` of stream
//! [`STREAM`], instead of one KV write per record. A commit is done when its
//! message is acknowledged; `compact.rs` later writes the records still
//! alive into the store bucket and purges what it wrote.
//!
//! A message is the commit's write set (the same key → value or delete the
//! bucket would get), in order, encoded with postcard after a version byte.
//! [`Entry::Forget`] says a client id went from this node: its entries of
//! that client up to a sequence are no longer its records (another node
//! holds them).

use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::keys;
use super::publish::{self, Outgoing};
use crate::store::StoreError;

/// The stream of every node's journal.
pub const STREAM: &str = "TERN_JOURNAL";
/// The subject of [`barrier`]'s messages: no node's journal (`kv_key`
/// never puts a non-hex digit after `=`).
const BARRIER: &str = "tern.journal.=X";
/// First byte of every journal message: its layout.
const JOURNAL_VERSION: u8 = 1;
/// Bytes of entries per message at most (nats-server's default max_payload
/// is 1 MB; a single larger entry goes in a message of its own).
const MAX_PART: usize = 900 * 1024;

/// One change a commit made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) enum Entry {
    /// A store bucket key and its new value.
    Put(String, #[serde(with = "serde_bytes")] Vec<u8>),
    /// A store bucket key deleted.
    Delete(String),
    /// The client id went from this journal's node: its entries of it up
    /// to this sequence (written by this node: all before this entry) are
    /// void. Another node that read them writes the sequence it read up
    /// to, so that entries this node wrote since stay.
    Forget(String, u64),
}

/// Journal subjects: this, then the node's name as a key part.
const SUBJECT_PREFIX: &str = "tern.journal.";

/// The subject of node `node`'s journal.
pub(super) fn subject(node: &str) -> String {
    format!("{SUBJECT_PREFIX}{}", super::kv_key::encode(node))
}

/// The store key of the floor (`floor.rs`) of the journal on `subject`.
pub(super) fn floor_key_of(subject: &str) -> Option<String> {
    subject
        .strip_prefix(SUBJECT_PREFIX)
        .and_then(super::kv_key::decode)
        .map(|node| keys::journal_floor(&node))
}

/// The store key of the marks (`keys::peer_marks`) of the node whose
/// journal is on `subject`.
pub(super) fn marks_key_of(subject: &str) -> Option<String> {
    subject
        .strip_prefix(SUBJECT_PREFIX)
        .map(|node| format!("p.{node}"))
}

/// Makes (or updates) [`STREAM`] with `replicas` copies.
pub(super) async fn open(jetstream: &jetstream::Context, replicas: usize) -> Result<(), String> {
    let config = stream::Config {
        name: STREAM.to_string(),
        subjects: vec!["tern.journal.>".to_string()],
        storage: stream::StorageType::File,
        num_replicas: replicas.max(1),
        allow_direct: true,
        // Compaction deletes messages (`prune.rs`).
        deny_delete: false,
        ..Default::default()
    };
    super::patience::patiently(STREAM, || async {
        use super::patience::Failure;
        match super::made::get_or_create_stream(jetstream, config.clone()).await {
            Ok(_) => Ok(()),
            // A configuration JetStream refuses: trying again cannot help.
            Err(e) if !super::transient(&e) => Err(Failure::Final(e.to_string())),
            Err(e) => Err(Failure::Transient(e.to_string())),
        }
    })
    .await
}

/// The entries of `writes` (the mirror's plan of a commit).
pub(super) fn entries(writes: &[(String, Option<Bytes>)]) -> Vec<Entry> {
    writes
        .iter()
        .map(|(key, value)| match value {
            Some(value) => Entry::Put(key.clone(), value.to_vec()),
            None => Entry::Delete(key.clone()),
        })
        .collect()
}

/// `entries` as journal messages, each under [`MAX_PART`] bytes of entries
/// (unless one entry alone is larger).
pub(super) fn encode(entries: &[Entry]) -> Vec<Bytes> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut size = 0;
    for (n, entry) in entries.iter().enumerate() {
        let len = match entry {
            Entry::Put(key, value) => key.len() + value.len() + 8,
            Entry::Delete(key) | Entry::Forget(key, _) => key.len() + 12,
        };
        if size + len > MAX_PART && n > start {
            parts.push(super::kv_value::encode(
                JOURNAL_VERSION,
                &&entries[start..n],
            ));
            start = n;
            size = 0;
        }
        size += len;
    }
    if start < entries.len() {
        parts.push(super::kv_value::encode(JOURNAL_VERSION, &&entries[start..]));
    }
    parts
}

/// The entries of one journal message; None if it is of another layout.
pub(super) fn decode(payload: &[u8]) -> Option<Vec<Entry>> {
    super::kv_value::decode(JOURNAL_VERSION, payload)
}

/// Appends `entries` to the journal on `subject` as commit `id` (unique per
/// commit: resent parts are stored once); the sequences of its messages,
/// in order.
pub(super) async fn append(
    jetstream: &jetstream::Context,
    subject: &str,
    entries: &[Entry],
    id: &str,
) -> Result<Vec<u64>, StoreError> {
    let subject = subject.to_string();
    let messages = encode(entries)
        .into_iter()
        .map(|payload| Outgoing {
            subject: subject.clone(),
            payload,
            delete: false,
            expect_last: None,
        })
        .collect();
    publish::send_with_retry(jetstream, messages, id, STREAM).await
}

/// Every entry on the journal subjects matching `filter` (one node's, or
/// `tern.journal.>` for all), in stream order, with its message's sequence
/// and subject. Asked of the stream's leader, not by direct gets: a replica
/// behind (a NATS server just restarted) would end the journal early, and
/// a takeover or a start would miss acknowledged writes
/// (`load::leader_get`).
pub(super) async fn read(
    jetstream: &jetstream::Context,
    filter: &str,
) -> Result<Vec<(u64, String, Entry)>, String> {
    use jetstream::stream::LastRawMessageErrorKind;
    let stream = jetstream
        .get_stream(STREAM)
        .await
        .map_err(|e| format!("opening {STREAM}: {e}"))?;
    let mut found = Vec::new();
    let mut next = 1;
    loop {
        let read = stream
            .raw_message_builder()
            .sequence(next)
            .next_by_subject(filter)
            .send()
            .await;
        let message = match read {
            Ok(message) => message,
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => break,
            Err(e) => return Err(format!("reading {STREAM}: {e}")),
        };
        next = message.sequence + 1;
        let Some(entries) = decode(&message.payload) else {
            tracing::warn!(
                stream = STREAM,
                sequence = message.sequence,
                "journal message of no known layout skipped"
            );
            continue;
        };
        let subject = message.subject.to_string();
        found.extend(
            entries
                .into_iter()
                .map(|entry| (message.sequence, subject.clone(), entry)),
        );
    }
    Ok(found)
}

/// Waits until the journal's leader has applied every write acknowledged
/// before: a message of no entries on a subject of its own, acknowledged
/// by the leader once stored, which it stores in order (then deleted). A
/// leader elected after a NATS server died may answer reads before it
/// applied the last writes of the previous one (nats-server 2.9); a
/// takeover reads after this.
pub(super) async fn barrier(jetstream: &jetstream::Context) -> Result<(), String> {
    let ack = jetstream
        .publish(
            BARRIER,
            super::kv_value::encode(JOURNAL_VERSION, &Vec::<Entry>::new()),
        )
        .await
        .map_err(|e| format!("writing to {STREAM}: {e}"))?
        .await
        .map_err(|e| format!("writing to {STREAM}: {e}"))?;
    // Left behind if it fails (a stream that denies deletes): harmless.
    let _ = super::prune::delete(jetstream, ack.sequence).await;
    Ok(())
}

/// The client id whose session a store bucket key belongs to.
pub(super) fn client_of(key: &str) -> Option<String> {
    match keys::parse(key)? {
        keys::Key::Session(c)
        | keys::Key::Delivery(c, _)
        | keys::Key::Incoming(c, _)
        | keys::Key::Will(c) => Some(c),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_is_one_message_unless_it_is_over_the_part_size() {
        let small: Vec<Entry> = (0..100)
            .map(|n| Entry::Put(format!("m.n.{n}"), vec![7; 100]))
            .collect();
        let parts = encode(&small);
        assert_eq!(parts.len(), 1);
        assert_eq!(decode(&parts[0]), Some(small));
        let big: Vec<Entry> = (0..30)
            .map(|n| Entry::Put(format!("m.n.{n}"), vec![7; 100 * 1024]))
            .collect();
        let parts = encode(&big);
        assert_eq!(parts.len(), 4, "30 x 100 KB in parts of at most 900 KB");
        let back: Vec<Entry> = parts.iter().flat_map(|p| decode(p).unwrap()).collect();
        assert_eq!(back, big, "the parts in order are the commit");
        assert!(parts.iter().all(|p| p.len() < 1024 * 1024));
    }
}
