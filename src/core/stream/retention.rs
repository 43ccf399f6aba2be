//! Retention: the oldest messages of a stream removed while a limit
//! (`max_age`, `max_messages`, `max_bytes`) is passed. The head is read from
//! the store a batch at a time and cut in one `TrimStream` per batch, a
//! bounded amount of work per wake-up, so publishers never wait for it.

use std::sync::Arc;

use super::log::StreamLog;
use super::Streams;
use crate::store::record::unix_ms_now;
use crate::store::StoreOp;

/// Messages looked at per store read.
const HEAD_BATCH: usize = 1000;
/// Batches per stream per wake-up: the rest waits for the next one.
const ROUNDS: usize = 16;

pub(super) async fn enforce(streams: &Streams, log: &Arc<StreamLog>) {
    let Some(store) = streams.store().cloned() else {
        return;
    };
    for _ in 0..ROUNDS {
        let now = unix_ms_now();
        let first = {
            let state = log.state.lock();
            if !log.over_limits(&state, now) {
                return;
            }
            state.first
        };
        let name = log.name.to_string();
        let read_store = Arc::clone(&store);
        let read =
            tokio::task::spawn_blocking(move || read_store.read_stream(&name, first, HEAD_BATCH))
                .await;
        let batch = match read {
            Ok(Ok(batch)) => batch,
            Ok(Err(e)) => {
                tracing::warn!(stream = %log.name, error = %e, "stream retention cannot read the store");
                return;
            }
            Err(_) => return,
        };
        if batch.is_empty() {
            // The head is not committed yet.
            let _ = store.flush().await;
            return;
        }
        let cutoff = log
            .retention
            .max_age
            .map(|age| now.saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX)));
        let mut state = log.state.lock();
        if state.first != first {
            continue; // purged meanwhile
        }
        let (mut below, mut count, mut bytes) = (state.first, state.count(), state.bytes);
        let mut head_time = state.first_time_ms;
        for (offset, record) in &batch {
            if *offset < below {
                continue;
            }
            let over = log.retention.max_messages.is_some_and(|max| count > max)
                || log.retention.max_bytes.is_some_and(|max| bytes > max)
                || cutoff.is_some_and(|cut| record.time_ms < cut);
            head_time = record.time_ms;
            if !over {
                break;
            }
            below = offset + 1;
            count -= 1;
            bytes = bytes.saturating_sub(record.size);
        }
        if below == state.first {
            state.first_time_ms = head_time;
            return;
        }
        state.first = below;
        state.bytes = bytes;
        state.first_time_ms = head_time;
        state.trim_tail(below);
        drop(state);
        store.submit([StoreOp::TrimStream {
            stream: log.name.to_string(),
            below,
        }]);
    }
}
