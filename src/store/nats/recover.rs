//! What the store bucket and the journals together hold: this node's part
//! at start (the bucket, then this node's journal replayed on top), and one
//! client's records at a takeover (the bucket, then the journals of the
//! node it is taken from and of this node). Journal entries below their
//! journal's floor are left to the bucket (`floor.rs`).

use std::collections::{BTreeSet, HashSet};

use async_nats::jetstream;
use bytes::Bytes;
use indexmap::IndexMap;

use super::journal::{self, client_of, Entry};
use super::{floor, keys, load, replay};

/// What a start reads: the bucket with the journal over it, the journal's
/// last write per key, its messages and the last sequence read.
type Start = (
    Vec<(String, Bytes)>,
    IndexMap<String, Option<Bytes>>,
    BTreeSet<u64>,
    u64,
);

/// At start: the bucket with node `node`'s journal over it, and the journal's
/// last write per key with the messages and the last sequence read (what
/// compaction still owes, and what it removes once written).
pub(super) async fn read_start(
    jetstream: &jetstream::Context,
    node: &str,
) -> Result<Start, String> {
    // The journal first: a compaction between the two reads then shows the
    // same record twice rather than not at all.
    let (entries, sequences, last_read) = read_own_journal(jetstream, node).await?;
    let (journaled, _) = replay::fold(entries, |_| true);
    let bucket = load::read_bucket(jetstream, keys::BUCKET).await?;
    Ok((
        replay::overlay(bucket, &journaled),
        journaled,
        sequences,
        last_read,
    ))
}

/// Node `node`'s journal, read at its start: its entries above their floor,
/// the sequences of all its messages and the last one read.
///
/// After a barrier, as a takeover reads: a node restarting into an election
/// must not restore its sessions from a leader that has not applied its
/// last writes yet (their later records would void the ones it missed);
/// retried while there is no leader. Messages below the floor may be half
/// removed: their records are in the bucket, read after (`floor.rs`); they
/// are removed again.
async fn read_own_journal(
    jetstream: &jetstream::Context,
    node: &str,
) -> Result<(Vec<(u64, String, Entry)>, BTreeSet<u64>, u64), String> {
    let entries = super::patience::patiently(journal::STREAM, || async {
        use super::patience::Failure;
        journal::barrier(jetstream)
            .await
            .map_err(Failure::Transient)?;
        journal::read(jetstream, &journal::subject(node))
            .await
            .map_err(Failure::Transient)
    })
    .await?;
    let sequences = entries.iter().map(|e| e.0).collect();
    let last_read = entries.last().map_or(0, |e| e.0);
    let subjects = floor::subjects(&entries);
    let floors = super::patience::patiently(keys::BUCKET, || async {
        floor::read(jetstream, subjects.clone())
            .await
            .map_err(super::patience::Failure::Transient)
    })
    .await?;
    Ok((floor::retain_above(entries, &floors), sequences, last_read))
}

/// The client ids with a session or a will in node `node`'s journal (the
/// journal made when missing, with `replicas` copies). A start claims them
/// with those of the bucket: a session only in the journal (not compacted
/// yet, its id freed in `tern_clients`) was otherwise restored unclaimed,
/// and served on this node while another node claimed and served it too
/// (the clustered crash test: 984 acknowledged messages missing).
pub async fn journal_clients(
    jetstream: &jetstream::Context,
    node: &str,
    replicas: usize,
) -> Result<HashSet<String>, String> {
    journal::open(jetstream, replicas).await?;
    let (entries, _, _) = read_own_journal(jetstream, node).await?;
    let (journaled, _) = replay::fold(entries, |key| {
        matches!(
            keys::parse(key),
            Some(keys::Key::Session(_) | keys::Key::Will(_))
        )
    });
    Ok(journaled
        .into_iter()
        .filter(|(_, value)| value.is_some())
        .filter_map(|(key, _)| client_of(&key))
        .collect())
}

/// One client's records taken over.
pub(super) struct Client {
    /// Its records and the messages its deliveries refer to.
    pub entries: Vec<(String, Bytes)>,
    /// The writes that make them this node's (its journal): every key of
    /// the client seen (deleted ones as deletes) and the messages only a
    /// journal held.
    pub adopted: Vec<(String, Option<Bytes>)>,
    /// Those of them a journal held: written to the bucket at once as well
    /// (`NatsBackend::load_client`).
    pub journaled: Vec<(String, Option<Bytes>)>,
    /// The journal subjects still holding the client's records, with the
    /// last sequence of them read.
    pub holders: Vec<(String, u64)>,
}

/// `client`'s records: the bucket's with the journals of `nodes` over them
/// (None: every node's).
pub(super) async fn read_client(
    jetstream: &jetstream::Context,
    client: &str,
    nodes: Option<&[String]>,
) -> Result<Client, String> {
    journal::barrier(jetstream).await?;
    let entries = match nodes {
        None => journal::read(jetstream, "tern.journal.>").await?,
        Some(nodes) => {
            let mut entries = Vec::new();
            for node in nodes {
                entries.extend(journal::read(jetstream, &journal::subject(node)).await?);
            }
            // Stream order: a Forget voids what comes before it.
            entries.sort_by_key(|e| e.0);
            entries
        }
    };
    // A journal pruned while read: see `floor.rs`.
    let entries = floor::above(jetstream, entries).await?;
    let holders = replay::holders(&entries, client);
    let cuts = marks_cuts(&entries, client);
    let mut entries = entries;
    entries.retain(|(seq, _, entry)| match entry {
        Entry::Put(key, _) | Entry::Delete(key) => {
            !cuts.iter().any(|(marks, last)| marks == key && seq > last)
        }
        Entry::Forget(..) => true,
    });
    let mine = |key: &str| client_of(key).as_deref() == Some(client);
    let (mut journaled, _) = replay::fold(entries, |key| {
        mine(key) || key.starts_with("m.") || key.starts_with("p.")
    });
    // None by then: the bucket's may be later.
    for (marks, _) in cuts {
        journaled.entry(marks).or_insert(None);
    }
    let bucket = load::read_client(jetstream, client).await?;
    let mut seen: IndexMap<String, ()> = IndexMap::new();
    for key in bucket.iter().map(|e| &e.0).chain(journaled.keys()) {
        if mine(key) {
            seen.insert(key.clone(), ());
        }
    }
    let mut merged = replay::overlay(bucket, &journaled);
    let referred = load::referred_messages(&merged);
    let have: HashSet<&String> = merged.iter().map(|e| &e.0).collect();
    let missing: HashSet<String> = referred
        .iter()
        .filter(|key| !have.contains(key) && !journaled.contains_key(*key))
        .cloned()
        .collect();
    if !missing.is_empty() {
        let kv = jetstream
            .get_key_value(keys::BUCKET)
            .await
            .map_err(|e| e.to_string())?;
        merged.extend(load::read_named(&kv, missing).await?);
    }
    merged.retain(|(key, _)| !key.starts_with("m.") || referred.contains(key));
    let index: std::collections::HashMap<&str, &Bytes> =
        merged.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let value = |key: &str| index.get(key).map(|v| (*v).clone());
    let mut adopted: Vec<(String, Option<Bytes>)> = seen
        .into_keys()
        .map(|key| (key.clone(), value(&key)))
        .collect();
    for key in &referred {
        if matches!(journaled.get(key), Some(Some(_))) {
            adopted.push((key.clone(), value(key)));
        }
    }
    drop(index);
    let journaled = adopted
        .iter()
        .filter(|(key, _)| journaled.contains_key(key))
        .cloned()
        .collect();
    Ok(Client {
        entries: merged,
        adopted,
        journaled,
        holders,
    })
}

/// Which stored marks a takeover of `client` may use: each journal's, as
/// `(marks key, last sequence)`, those written after it are dropped, and
/// with none left, the bucket's too. A node's marks say what its sessions
/// had only while it held the client: a run that restarted without it, or
/// the same run after it let the client go, routed on to its other
/// sessions messages this one never had, and those marks would drop them
/// from the new holder's capture (the clustered crash test lost messages
/// both ways). So a journal's marks count up to the node's last write of
/// the client (a `Forget` voiding it or not), and not at all when it wrote
/// marks and nothing of the client (compacted before, or never held): a
/// repeat is possible then, not a loss. Journals with neither leave the
/// bucket's marks as they are.
fn marks_cuts(entries: &[(u64, String, Entry)], client: &str) -> Vec<(String, u64)> {
    // Per journal that wrote marks or the client: its marks key and its
    // last write of the client (0: none).
    let mut journals: Vec<(String, u64)> = Vec::new();
    for (seq, subject, entry) in entries {
        let (Entry::Put(key, _) | Entry::Delete(key)) = entry else {
            continue;
        };
        let of_client = client_of(key).as_deref() == Some(client);
        if !of_client && !key.starts_with("p.") {
            continue;
        }
        let Some(marks) = journal::marks_key_of(subject) else {
            continue;
        };
        if !of_client && *key != marks {
            continue;
        }
        let at = match journals.iter().position(|j| j.0 == marks) {
            Some(at) => at,
            None => {
                journals.push((marks, 0));
                journals.len() - 1
            }
        };
        if of_client {
            journals[at].1 = *seq;
        }
    }
    journals
}
