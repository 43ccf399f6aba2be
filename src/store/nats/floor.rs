//! A node's journal floor: the sequence below which its journal messages
//! may be gone, or going (`prune.rs` raises it before it deletes them).
//!
//! Why: a journal is read message by message, in stream order, and is not a
//! snapshot. A prune that runs meanwhile (a node's compaction round, a dead
//! node's journal removed) deletes messages the read has not reached yet,
//! and its deletes land in any order: a read that took a delivery's write
//! from an early message then missed the later message deleting it (or the
//! `Forget` voiding it) brought a completed QoS 2 delivery back, to be sent
//! again with DUP (the clustered crash test: a takeover read tern-1's
//! journal for 12 s while tern-1, just restarted, removed 2,515 of its
//! messages). Everything below the floor is in the store bucket: a prune
//! removes only messages whose live records were written there first. So a
//! reader takes the floor after its journal read, ignores the entries below
//! it, and reads the bucket after that: what it read is then whole.
//!
//! Kept in the store bucket under `f.<node>` (`keys::journal_floor`); it
//! only rises (compare-and-set). No key: floor 0 (journals of older Terns).

use std::collections::HashMap;

use async_nats::jetstream::{self, kv};

use super::{journal, keys, kv_value, load};

/// Tries of a compare-and-set that another node's raise got in before.
const RAISE_TRIES: usize = 16;

/// Raises node `node`'s floor to `below` (left as it is when higher).
pub(super) async fn raise(
    jetstream: &jetstream::Context,
    node: &str,
    below: u64,
) -> Result<(), String> {
    let kv = bucket(jetstream).await?;
    let key = keys::journal_floor(node);
    let value = kv_value::encode(keys::VALUE_VERSION, &below);
    for _ in 0..RAISE_TRIES {
        // Asked of the leader: its revision is what a compare-and-set checks.
        let written = match load::leader_last(&kv, &key).await? {
            Some((_, Some(floor))) if decode(&floor).is_some_and(|f| f >= below) => return Ok(()),
            Some((revision, _)) => kv.update(&key, value.clone(), revision).await.is_ok(),
            None => kv.create(&key, value.clone()).await.is_ok(),
        };
        if written {
            return Ok(());
        }
    }
    Err(format!(
        "raising {key}: changed by others {RAISE_TRIES} times"
    ))
}

/// The floor of the journal on each of `subjects` (each once: [`subjects`];
/// 0: none), asked of the bucket's leader.
pub(super) async fn read(
    jetstream: &jetstream::Context,
    subjects: Vec<String>,
) -> Result<HashMap<String, u64>, String> {
    let kv = bucket(jetstream).await?;
    let mut floors = HashMap::new();
    for subject in subjects {
        let Some(key) = journal::floor_key_of(&subject) else {
            continue;
        };
        let floor = load::leader_get(&kv, &key)
            .await?
            .and_then(|value| decode(&value))
            .unwrap_or(0);
        floors.insert(subject, floor);
    }
    Ok(floors)
}

/// `entries` (sequence, subject, …) without those below their journal's
/// floor, read after them (see above).
pub(super) async fn above<T>(
    jetstream: &jetstream::Context,
    entries: Vec<(u64, String, T)>,
) -> Result<Vec<(u64, String, T)>, String> {
    let floors = read(jetstream, subjects(&entries)).await?;
    Ok(retain_above(entries, &floors))
}

/// The journal subjects of `entries`, once each.
pub(super) fn subjects<T>(entries: &[(u64, String, T)]) -> Vec<String> {
    let mut subjects: Vec<String> = Vec::new();
    for (_, subject, _) in entries {
        if subjects.last() != Some(subject) && !subjects.contains(subject) {
            subjects.push(subject.clone());
        }
    }
    subjects
}

/// `entries` without those below `floors` (see above).
pub(super) fn retain_above<T>(
    mut entries: Vec<(u64, String, T)>,
    floors: &HashMap<String, u64>,
) -> Vec<(u64, String, T)> {
    let before = entries.len();
    entries.retain(|(seq, subject, _)| *seq >= floors.get(subject).copied().unwrap_or(0));
    if entries.len() < before {
        tracing::debug!(
            ignored = before - entries.len(),
            "journal entries below a floor ignored (removed while read)"
        );
    }
    entries
}

async fn bucket(jetstream: &jetstream::Context) -> Result<kv::Store, String> {
    jetstream
        .get_key_value(keys::BUCKET)
        .await
        .map_err(|e| format!("opening {}: {e}", keys::BUCKET))
}

fn decode(bytes: &[u8]) -> Option<u64> {
    kv_value::decode(keys::VALUE_VERSION, bytes)
}
