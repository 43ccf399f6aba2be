//! Compaction: the records that are only in this node's journal are written
//! into the store bucket in the background, then the journal is purged up
//! to the oldest message still needed. A record made and gone between two
//! rounds (nearly every delivery to an online subscriber) never reaches the
//! bucket, and a round writes only records that outlived one interval, so
//! the bucket sees long-lived state.
//!
//! Bounded: over [`MAX_BYTES`] of records waiting, a commit waits for a
//! round (logged once), so a bucket that cannot be written stops commits
//! instead of growing the journal and this map without end.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use indexmap::IndexMap;
use parking_lot::Mutex;

use super::journal::{self, Entry};
use super::{prune, publish};

/// Time between rounds.
pub(super) const INTERVAL: Duration = Duration::from_secs(1);
/// Bytes of records waiting that start a round at once (and compact them all).
const TRIGGER_BYTES: usize = 4 << 20;
/// Bytes of records waiting at which a commit waits for a round.
const MAX_BYTES: usize = 64 << 20;
/// How long a journal with records of client ids other nodes hold now is
/// kept whole after a start: a node that claimed one while this node was
/// down may not have read them yet.
const KEEP_FOREIGN: Duration = Duration::from_secs(30);

/// A record in the journal and not (yet) in the bucket.
#[derive(Debug)]
struct Waiting {
    value: Option<Bytes>,
    /// The journal message it is in (the first of its commit).
    seq: u64,
    /// Made since the last round that wrote it: never in the bucket, so
    /// its deletion needs no write there.
    born: bool,
}

#[derive(Debug, Default)]
struct State {
    waiting: IndexMap<String, Waiting>,
    bytes: usize,
    /// The last journal sequence whose records are in `waiting`.
    applied_through: u64,
    /// `applied_through` at the last round: records up to it outlived one interval.
    mark: u64,
    /// The journal is removed below this.
    purged_below: u64,
    /// This node's journal messages not yet removed (`prune.rs`).
    sequences: BTreeSet<u64>,
    /// Client ids let go whose `Forget` is not yet in the journal.
    forget: Vec<String>,
    /// Their records that were only in the journal: written to the bucket
    /// before the `Forget` (with the journal message each is in).
    handover: Vec<(String, Option<Bytes>, u64)>,
    /// No purge before this (see [`KEEP_FOREIGN`]).
    keep_until: Option<tokio::time::Instant>,
    /// The store bucket's last sequence when this node took a client id
    /// over (`load::last_sequence`), until its `Forget`; `held_since_start`
    /// for the others (read at start). A handover write may go over any
    /// write up to it (`load::own_last`).
    held_since: HashMap<String, u64>,
    held_since_start: u64,
}

impl State {
    /// The oldest journal message still needed.
    fn oldest(&self) -> u64 {
        let waiting = self.waiting.values().map(|w| w.seq);
        let handover = self.handover.iter().map(|h| h.2);
        waiting
            .chain(handover)
            .min()
            .unwrap_or(self.applied_through + 1)
    }
}

pub(super) struct Compactor {
    jetstream: jetstream::Context,
    node: String,
    boot: u64,
    state: Mutex<State>,
    wake: tokio::sync::Notify,
    /// One round at a time (two could write an older value of a key last).
    round: tokio::sync::Mutex<u64>,
    /// [`MAX_BYTES`] (smaller in tests).
    max_bytes: AtomicUsize,
    over_warned: AtomicBool,
    failing: AtomicBool,
    /// Rounds that wrote to the bucket (tests).
    pub(super) writes: AtomicU64,
}

fn size(key: &str, value: &Option<Bytes>) -> usize {
    key.len() + value.as_ref().map_or(0, Bytes::len) + 32
}

impl Compactor {
    pub(super) fn new(jetstream: jetstream::Context, node: &str, boot: u64) -> Arc<Compactor> {
        Arc::new(Compactor {
            jetstream,
            node: node.to_string(),
            boot,
            state: Mutex::new(State::default()),
            wake: tokio::sync::Notify::new(),
            round: tokio::sync::Mutex::new(0),
            max_bytes: AtomicUsize::new(MAX_BYTES),
            over_warned: AtomicBool::new(false),
            failing: AtomicBool::new(false),
            writes: AtomicU64::new(0),
        })
    }

    /// Runs rounds every [`INTERVAL`] (or when woken) until the backend
    /// lets go of the compactor.
    pub(super) fn spawn(compactor: &Arc<Compactor>, runtime: &tokio::runtime::Handle) {
        let compactor = Arc::clone(compactor);
        runtime.spawn(async move {
            loop {
                let _ = tokio::time::timeout(INTERVAL, compactor.wake.notified()).await;
                if Arc::strong_count(&compactor) == 1 {
                    return; // the backend is gone (it compacted at close)
                }
                let all = compactor.state.lock().bytes > TRIGGER_BYTES;
                compactor.logged_round(all).await;
            }
        });
    }

    /// A round; a failure is logged when it starts and when it ends, not per round.
    pub(super) async fn logged_round(&self, all: bool) {
        match self.round(all).await {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(node = %self.node, "journal compaction works again");
                }
            }
            Err(error) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(node = %self.node, error, "journal compaction failed; records stay in the journal and are tried again");
                }
            }
        }
    }

    /// A commit's `writes` are in the journal messages `sequences` (in
    /// order); `fresh` are the keys it made. True when over [`MAX_BYTES`] wait.
    pub(super) fn record(
        &self,
        writes: &[(String, Option<Bytes>)],
        fresh: &HashSet<String>,
        sequences: &[u64],
    ) -> bool {
        let (Some(&first), Some(&last)) = (sequences.first(), sequences.last()) else {
            return false;
        };
        let mut state = self.state.lock();
        state.sequences.extend(sequences);
        for (key, value) in writes {
            match state.waiting.get_mut(key) {
                Some(w) if value.is_none() && w.born => {
                    let gone = size(key, &w.value);
                    state.waiting.swap_remove(key);
                    state.bytes -= gone;
                }
                Some(w) => {
                    let (old, new) = (size(key, &w.value), size(key, value));
                    w.value = value.clone();
                    w.seq = first;
                    state.bytes = state.bytes + new - old;
                }
                None => {
                    state.bytes += size(key, value);
                    let born = value.is_some() && fresh.contains(key);
                    let value = value.clone();
                    let seq = first;
                    state
                        .waiting
                        .insert(key.clone(), Waiting { value, seq, born });
                }
            }
        }
        state.applied_through = state.applied_through.max(last);
        let bytes = state.bytes;
        drop(state);
        if bytes > TRIGGER_BYTES {
            self.wake.notify_one();
        }
        let over = bytes > self.max_bytes.load(Ordering::Relaxed);
        if over && !self.over_warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(node = %self.node, bytes, "journal records wait for compaction beyond the bound; commits wait for it");
        }
        over
    }

    /// What the journal replayed at start left for the bucket (its
    /// messages read are `sequences`, the last `last`): written by the next
    /// round. `fenced`: the journal held records of client ids other nodes
    /// hold now (kept [`KEEP_FOREIGN`] for them).
    pub(super) fn seed(
        &self,
        records: IndexMap<String, Option<Bytes>>,
        sequences: BTreeSet<u64>,
        last: u64,
        fenced: bool,
    ) {
        let mut state = self.state.lock();
        state.sequences.extend(sequences);
        if fenced {
            state.keep_until = Some(tokio::time::Instant::now() + KEEP_FOREIGN);
        }
        for (key, value) in records {
            state.bytes += size(&key, &value);
            let (seq, born) = (last, false);
            state.waiting.insert(key, Waiting { value, seq, born });
        }
        state.applied_through = state.applied_through.max(last);
    }

    /// Another node holds `client` now: its records only in the journal go
    /// to the bucket as they are (none written after; only under keys no
    /// other node wrote since this node came to hold `client`, so none
    /// lands over the new holder's), then the journal says so
    /// (`Entry::Forget`). Until then the new holder reads them from this
    /// journal.
    pub(super) fn release(&self, client: &str) {
        let mut state = self.state.lock();
        let (mut gone, mut bytes) = (Vec::new(), 0);
        state.waiting.retain(|key, w| {
            let keep = journal::client_of(key).as_deref() != Some(client);
            if !keep {
                bytes += size(key, &w.value);
                gone.push((key.clone(), w.value.take(), w.seq));
            }
            keep
        });
        state.bytes -= bytes;
        state.handover.extend(gone);
        state.forget.push(client.to_string());
    }

    /// The store bucket's last sequence when this node started (`client`
    /// None) or took `client` over.
    pub(super) fn held_since(&self, client: Option<&str>, sequence: u64) {
        let mut state = self.state.lock();
        match client {
            Some(client) => {
                state.held_since.insert(client.to_string(), sequence);
            }
            None => state.held_since_start = sequence,
        }
    }

    /// This node holds `client` again: no `Forget` for it.
    pub(super) fn hold(&self, client: &str) {
        self.state.lock().forget.retain(|c| c != client);
    }

    /// Writes the forgets, then the waiting records that outlived one
    /// interval (`all`: every one) into the bucket, then purges the journal
    /// below the oldest message still needed.
    pub(super) async fn round(&self, all: bool) -> Result<(), String> {
        let mut round = self.round.lock().await;
        *round += 1;
        let id = format!("{}.{:x}.c{}", self.node, self.boot, *round);
        let (handover, forget) = {
            let mut state = self.state.lock();
            (
                std::mem::take(&mut state.handover),
                std::mem::take(&mut state.forget),
            )
        };
        if !handover.is_empty() {
            // Only where no other node wrote since this node came to hold
            // the client (the new holder read them from the journal and
            // writes them itself).
            let keys = {
                let state = self.state.lock();
                let since = |key: &str| {
                    let client = journal::client_of(key);
                    let since = client.and_then(|c| state.held_since.get(&c).copied());
                    since.unwrap_or(state.held_since_start)
                };
                handover
                    .iter()
                    .map(|h| (h.0.clone(), since(&h.0)))
                    .collect()
            };
            let written = match super::load::own_last(&self.jetstream, keys, &self.node).await {
                Ok(last) => {
                    let writes = handover
                        .iter()
                        .zip(last)
                        .filter_map(|(h, last)| Some((h.0.clone(), h.1.clone(), last?)))
                        .collect();
                    let id = format!("{id}h");
                    publish::publish_expecting(self.jetstream.clone(), writes, id).await
                }
                Err(e) => Err(crate::store::StoreError::Write(e)),
            };
            if let Err(e) = written {
                let mut state = self.state.lock();
                state.handover.extend(handover);
                state.forget.extend(forget);
                return Err(e.to_string());
            }
        }
        if !forget.is_empty() {
            let entries: Vec<Entry> = forget
                .iter()
                .map(|c| Entry::Forget(c.clone(), u64::MAX))
                .collect();
            let appended = journal::append(
                &self.jetstream,
                &journal::subject(&self.node),
                &entries,
                &format!("{id}f"),
            )
            .await;
            match appended {
                Ok(sequences) => {
                    let mut state = self.state.lock();
                    state.sequences.extend(sequences);
                    for client in &forget {
                        state.held_since.remove(client);
                    }
                }
                Err(e) => {
                    self.state.lock().forget.extend(forget);
                    return Err(e.to_string());
                }
            }
        }
        let candidates: Vec<(String, Option<Bytes>, u64)> = {
            let mut state = self.state.lock();
            let cutoff = if all {
                state.applied_through
            } else {
                state.mark
            };
            state.mark = state.applied_through;
            state
                .waiting
                .iter()
                .filter(|(_, w)| w.seq <= cutoff)
                .map(|(key, w)| (key.clone(), w.value.clone(), w.seq))
                .collect()
        };
        if !candidates.is_empty() {
            let writes = candidates
                .iter()
                .map(|(key, value, _)| (key.clone(), value.clone()))
                .collect();
            publish::publish(self.jetstream.clone(), writes, id)
                .await
                .map_err(|e| e.to_string())?;
            self.writes.fetch_add(1, Ordering::Relaxed);
        }
        let (below, known) = {
            let mut state = self.state.lock();
            for (key, _, seq) in &candidates {
                // Not if written again meanwhile: that value is still to go.
                if let Some(w) = state.waiting.get(key).filter(|w| w.seq == *seq) {
                    let gone = size(key, &w.value);
                    state.waiting.swap_remove(key);
                    state.bytes -= gone;
                }
            }
            let below = state.oldest();
            let keep = state
                .keep_until
                .is_some_and(|t| t > tokio::time::Instant::now());
            if below <= state.purged_below || keep {
                return Ok(());
            }
            let known: Vec<u64> = state.sequences.range(..below).copied().collect();
            (below, known)
        };
        tracing::trace!(node = %self.node, written = candidates.len(), below, removed = known.len(), "journal compacted");
        prune::remove(&self.jetstream, &self.node, below, &known).await?;
        let mut state = self.state.lock();
        state.purged_below = state.purged_below.max(below);
        state.sequences = state.sequences.split_off(&below);
        Ok(())
    }

    /// Holds off every round until the guard is dropped (tests).
    #[cfg(test)]
    pub(super) async fn pause(&self) -> tokio::sync::MutexGuard<'_, u64> {
        self.round.lock().await
    }

    /// Records waiting (tests).
    #[cfg(test)]
    pub(super) fn waiting(&self) -> usize {
        self.state.lock().waiting.len()
    }

    #[cfg(test)]
    pub(super) fn set_max_bytes(&self, max: usize) {
        self.max_bytes.store(max, Ordering::Relaxed);
    }
}
