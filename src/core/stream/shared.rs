//! Streams in a store other nodes append to as well (the NATS backend: one
//! JetStream stream per Tern stream, cluster-wide). The store is the truth:
//! a node's head (first and next offset, bytes) is refreshed from it before a
//! start position is resolved and once a second, and the store enforces the
//! retention limits itself (the core does not trim).
//!
//! Streams created or deleted through another node's admin API are declared
//! or removed here as soon as its notice comes (`store/nats/stream_notice.rs`).
//!
//! Live readers on this node get this node's appends at once; when a refresh
//! finds that other nodes appended, each live reader falls back to reading
//! the store from where it was, so it gets them too (within about a second),
//! in offset order, then goes live again.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::Receiver;

use super::log::StreamLog;
use super::Streams;
use crate::store::record::StreamState;
use crate::store::{Store, StreamChange};

/// How often a node reads the heads of its streams from a shared store.
const REFRESH: Duration = Duration::from_secs(1);

/// Runs `f`, which may wait for the network (the NATS backend answers on
/// this runtime), from async code without holding up the runtime's other
/// tasks; None on a single-threaded runtime (one core), whose only thread
/// cannot wait for itself.
pub(super) fn blocking<T>(f: impl FnOnce() -> T) -> Option<T> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            Some(tokio::task::block_in_place(f))
        }
        Ok(_) => None,
        Err(_) => Some(f()),
    }
}

/// Makes `log`'s head what the store holds; live readers fall back to the
/// store when other nodes appended.
pub(super) fn apply_shared(log: &StreamLog, stored: &StreamState) {
    let mut state = log.state.lock();
    state.first = state.first.max(stored.first);
    state.bytes = stored.bytes;
    state.first_time_ms = stored.first_time_ms;
    if stored.next > state.next {
        let behind = state.next;
        state.next = stored.next;
        for reader in std::mem::take(&mut state.live) {
            reader.fall_back(behind);
        }
    }
    state.first = state.first.min(state.next);
    let first = state.first;
    state.trim_tail(first);
}

/// Reads `log`'s head from `store` (blocking: see [`blocking`]).
pub(super) fn refresh(store: &Store, log: &StreamLog) {
    match store.stream_state(&log.name) {
        Ok(Some(stored)) => apply_shared(log, &stored),
        Ok(None) => {}
        Err(e) => tracing::warn!(stream = %log.name, error = %e, "cannot read the stream's head"),
    }
}

impl Streams {
    /// The retention loop of a shared store: every second, each stream's
    /// head; and the streams other nodes create or delete, as they do.
    pub(super) async fn refresh_loop(self: &Arc<Self>, store: Arc<Store>) {
        let mut changes = store.stream_changes();
        let mut tick = tokio::time::interval(REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let logs = self.logs.read().clone();
                    let store = Arc::clone(&store);
                    let _ = tokio::task::spawn_blocking(move || {
                        for log in logs {
                            refresh(&store, &log);
                        }
                    })
                    .await;
                }
                change = next_change(&mut changes) => self.apply_change(change),
            }
        }
    }
}

/// The next stream change from `changes` (never, once it is closed or when there is none).
async fn next_change(changes: &mut Option<Receiver<StreamChange>>) -> StreamChange {
    if let Some(rx) = changes {
        if let Some(change) = rx.recv().await {
            return change;
        }
        *changes = None;
    }
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::stream::Retention;

    #[test]
    fn a_head_from_the_store_moves_offsets_forward_only() {
        let log = StreamLog::new("s", Vec::new(), Retention::default());
        {
            let mut s = log.state.lock();
            s.first = 2;
            s.next = 10;
        }
        let stored = |first, next| StreamState {
            name: "s".into(),
            first,
            next,
            bytes: 5,
            first_time_ms: 7,
        };
        apply_shared(&log, &stored(4, 8));
        {
            let s = log.state.lock();
            assert_eq!(
                (s.first, s.next, s.bytes),
                (4, 10, 5),
                "own appends not committed yet stay"
            );
        }
        apply_shared(&log, &stored(6, 20));
        let s = log.state.lock();
        assert_eq!((s.first, s.next, s.first_time_ms), (6, 20, 7));
    }
}
