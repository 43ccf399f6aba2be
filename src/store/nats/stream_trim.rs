//! Trimming a durable stream's JetStream stream, and removing a deleted
//! stream's named consumers, without a partial purge.
//!
//! nats-server before 2.9.18 replays a purge from its raft log at a restart
//! as "every message up to the stream's last sequence when the purge was
//! made", whatever its sequence or subject filter (nats-io/nats-server#4196;
//! `prune.rs`, `tests/nats_election.rs`). A retention trim below a sequence
//! would then remove, on a restarted server, the newer messages it was meant
//! to keep, and a filtered purge of the store bucket every key of it. So:
//!
//! - a trim of everything there is stays one purge (replayed alike);
//! - a partial trim deletes its messages one by one (JetStream's own limits,
//!   set on the stream, usually removed most of them already); above
//!   [`MAX_DELETES`] it falls back to a purge, with one WARN;
//! - a deleted stream's consumer offsets are purged key by key.

use std::sync::atomic::{AtomicBool, Ordering};

use async_nats::jetstream::{stream::Stream, Context};
use futures_util::stream::{self, StreamExt, TryStreamExt};

use super::prune;

/// Message deletes in flight at once.
const IN_FLIGHT: usize = 64;
/// Above this many messages a trim purges (a commit must not wait for more deletes).
pub(super) const MAX_DELETES: u64 = 4_096;

/// How a trim below sequence `below + 1` is made, given the stream's first
/// and last sequence now.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum TrimPlan {
    /// Nothing at or below `below` is left.
    Nothing,
    /// Everything there is: one purge.
    PurgeAll,
    /// Sequences `first..=below`, one delete each.
    Delete { first: u64, below: u64 },
    /// Too many to delete in a commit: a purge below the sequence.
    PurgeBelow,
}

pub(super) fn plan(first: u64, last: u64, below: u64) -> TrimPlan {
    if last == 0 || first > below || first > last {
        TrimPlan::Nothing
    } else if below >= last {
        TrimPlan::PurgeAll
    } else if below + 1 - first > MAX_DELETES {
        TrimPlan::PurgeBelow
    } else {
        TrimPlan::Delete { first, below }
    }
}

/// Removes the messages of offsets below `below` (sequences up to `below`).
pub(super) async fn trim(jetstream: &Context, stream: &Stream, below: u64) -> Result<(), String> {
    // Fetched by the `get_stream` that opened it, just before.
    let info = stream.cached_info();
    let (state, name) = (info.state.clone(), info.config.name.clone());
    match plan(state.first_sequence, state.last_sequence, below) {
        TrimPlan::Nothing => Ok(()),
        TrimPlan::PurgeAll => purge_below(stream, below).await,
        TrimPlan::PurgeBelow => {
            static WARNED: AtomicBool = AtomicBool::new(false);
            if !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    stream = %name,
                    messages = below + 1 - state.first_sequence,
                    "stream retention trims more than JetStream's own limits removed: \
                     purged below a sequence, which nats-server before 2.9.18 replays \
                     after a restart as a purge of every message then stored"
                );
            }
            purge_below(stream, below).await
        }
        TrimPlan::Delete { first, below } => {
            let deletes = (first..=below).map(|seq| {
                let name = name.clone();
                async move { prune::delete_message(jetstream, &name, seq).await }
            });
            stream::iter(deletes)
                .buffer_unordered(IN_FLIGHT)
                .try_collect::<Vec<()>>()
                .await
                .map(drop)
        }
    }
}

async fn purge_below(stream: &Stream, below: u64) -> Result<(), String> {
    stream
        .purge()
        .sequence(below + 1)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Purges, key by key, the store bucket's keys under `filter` (a subject
/// filter of the bucket's stream, `$KV.<bucket>.…`).
pub(super) async fn purge_keys(
    jetstream: &Context,
    bucket: &str,
    filter: &str,
) -> Result<(), String> {
    let kv = jetstream
        .get_key_value(bucket)
        .await
        .map_err(|e| e.to_string())?;
    let prefix = kv.prefix.clone();
    let subjects: Vec<String> = kv
        .stream
        .info_with_subjects(filter)
        .await
        .map_err(|e| e.to_string())?
        .map_ok(|(subject, _count)| subject)
        .try_collect()
        .await
        .map_err(|e| e.to_string())?;
    for subject in subjects {
        if let Some(key) = subject.strip_prefix(&prefix) {
            kv.purge(key).await.map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trim_of_everything_is_one_purge() {
        assert_eq!(plan(1, 10, 10), TrimPlan::PurgeAll);
        assert_eq!(plan(5, 10, 20), TrimPlan::PurgeAll);
    }

    #[test]
    fn a_partial_trim_deletes_message_by_message() {
        assert_eq!(plan(1, 10, 4), TrimPlan::Delete { first: 1, below: 4 });
        assert_eq!(plan(4, 10, 4), TrimPlan::Delete { first: 4, below: 4 });
    }

    #[test]
    fn nothing_left_to_trim_is_nothing() {
        assert_eq!(plan(5, 10, 4), TrimPlan::Nothing);
        assert_eq!(plan(0, 0, 4), TrimPlan::Nothing);
    }

    #[test]
    fn a_trim_too_big_for_deletes_purges_below() {
        assert_eq!(plan(1, 100_000, 50_000), TrimPlan::PurgeBelow);
        assert_eq!(
            plan(1, 100_000, MAX_DELETES),
            TrimPlan::Delete {
                first: 1,
                below: MAX_DELETES
            }
        );
    }
}
