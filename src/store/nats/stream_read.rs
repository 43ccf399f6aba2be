//! Reading durable streams on the NATS backend (on the connection kept for
//! stream reads, see `streams.rs`).
//!
//! A reader position is a pull consumer without acks read as a continuous
//! stream ([`Cursor`]): async-nats asks for the next batch while the reader
//! is still taking the previous one (at most [`BATCH`] records and
//! [`batch_bytes`] bytes per request, a new request once half of it is
//! taken), so a replay never waits for a round trip to JetStream between
//! two reads and holds at most about one and a half batches per cursor. Each
//! delivered message says how many follow it (`pending`): at 0 the read
//! returns what it has instead of waiting for a message that may never come.
//!
//! A time lookup starts a consumer at JetStream's time and scans the
//! records' own publish times from there.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use futures_util::{FutureExt, StreamExt};

use super::streams::{err, stream_name, Streams};
use crate::store::record::StreamRecord;
use crate::store::StoreError;

/// Reader positions kept open at once (each a consumer on the server).
pub(super) const MAX_CURSORS: usize = 16;
/// An idle cursor's consumer is removed by the server after this long.
const CURSOR_IDLE: Duration = Duration::from_secs(60);
/// Most records asked for by one pull request.
const BATCH: usize = 8_192;
/// Least bytes asked for by one pull request (more when the server takes
/// bigger messages: one must always fit).
const MIN_BATCH_BYTES: usize = 2 << 20;
/// Longest wait for a record JetStream said follows.
const READ_WAIT: Duration = Duration::from_secs(5);
/// Records looked at per request when finding a time.
const TIME_BATCH: usize = 256;
/// Batches a time lookup scans past JetStream's own time before it settles.
const TIME_ROUNDS: usize = 64;

/// A reader's pull consumer, read as a stream that fetches ahead.
pub(super) struct Cursor {
    messages: pull::Stream,
    /// JetStream said no record follows the last one taken (or the
    /// consumer held none when made): the read does not wait for one.
    at_end: bool,
}

/// Open cursors by (stream, the offset they read next).
pub(super) type Cursors = HashMap<(String, u64), Cursor>;

/// The bytes one pull request asks for at most, given the server's largest message.
fn batch_bytes(max_payload: usize) -> usize {
    MIN_BATCH_BYTES.max(max_payload.saturating_add(64 << 10))
}

impl Streams {
    /// A cursor reading `name` from `from` on: a kept one at that position, or a new one.
    async fn cursor(&self, name: &str, from: u64) -> Result<Option<Cursor>, StoreError> {
        if let Some(kept) = self.cursors.lock().remove(&(name.to_string(), from)) {
            return Ok(Some(kept));
        }
        let start = DeliverPolicy::ByStartSequence {
            start_sequence: from + 1,
        };
        let Some(consumer) = self.consumer(name, start).await? else {
            return Ok(None);
        };
        let at_end = consumer.cached_info().num_pending == 0;
        let max_payload = self.reads.client().server_info().max_payload;
        let messages = consumer
            .stream()
            .max_messages_per_batch(BATCH)
            .max_bytes_per_batch(batch_bytes(max_payload))
            .messages()
            .await
            .map_err(|e| err("opening a reader", name, e))?;
        Ok(Some(Cursor { messages, at_end }))
    }

    async fn consumer(
        &self,
        name: &str,
        deliver_policy: DeliverPolicy,
    ) -> Result<Option<PullConsumer>, StoreError> {
        let Ok(stream) = self.reads.get_stream(stream_name(name)).await else {
            return Ok(None);
        };
        let config = pull::Config {
            deliver_policy,
            ack_policy: AckPolicy::None,
            inactive_threshold: CURSOR_IDLE,
            memory_storage: true,
            ..Default::default()
        };
        stream
            .create_consumer(config)
            .await
            .map(Some)
            .map_err(|e| err("opening a reader", name, e))
    }

    /// See [`crate::store::Backend::read_stream`]: up to `max` records the
    /// cursor at `from` has or gets without waiting past the stream's end.
    pub(super) async fn read(
        &self,
        name: &str,
        from: u64,
        max: usize,
    ) -> Result<Vec<(u64, StreamRecord)>, StoreError> {
        let Some(mut cursor) = self.cursor(name, from).await? else {
            return Ok(Vec::new());
        };
        let mut read = Vec::with_capacity(max.min(BATCH));
        if let Err(e) = take(&mut cursor, name, max, &mut read).await {
            if !read.is_empty() {
                // What was read stands; the next read opens a new cursor.
                return Ok(read);
            }
            // Removed by the server meanwhile (idle): once more with a new one.
            tracing::debug!(stream = name, error = %e, "stream reader opened again");
            let Some(fresh) = self.cursor(name, from).await? else {
                return Ok(read);
            };
            cursor = fresh;
            take(&mut cursor, name, max, &mut read).await?;
        }
        let next = read.last().map_or(from, |(offset, _)| offset + 1);
        let mut cursors = self.cursors.lock();
        if cursors.len() >= MAX_CURSORS {
            if let Some(key) = cursors.keys().next().cloned() {
                cursors.remove(&key);
            }
        }
        cursors.insert((name.to_string(), next), cursor);
        Ok(read)
    }

    /// See [`crate::store::Backend::find_stream_time`]: from the first message
    /// JetStream stored at or after `time_ms`, the first whose own publish
    /// time is (it was stamped before JetStream's, so it is not earlier).
    pub(super) async fn find_time(
        &self,
        name: &str,
        time_ms: u64,
    ) -> Result<Option<u64>, StoreError> {
        let nanos = i128::from(time_ms) * 1_000_000;
        let start_time = time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .map_err(|e| StoreError::Decode(e.to_string()))?;
        let Some(consumer) = self
            .consumer(name, DeliverPolicy::ByStartTime { start_time })
            .await?
        else {
            return Ok(None);
        };
        let mut last = None;
        for _ in 0..TIME_ROUNDS {
            let mut read = Vec::with_capacity(TIME_BATCH);
            let mut batch = consumer
                .fetch()
                .max_messages(TIME_BATCH)
                .messages()
                .await
                .map_err(|e| err("reading", name, e))?;
            while let Some(message) = batch.next().await {
                let message = message.map_err(|e| err("reading", name, e))?;
                read.push(decode(&message, name)?.0);
            }
            if let Some((offset, _)) = read.iter().find(|(_, r)| r.time_ms >= time_ms) {
                return Ok(Some(*offset));
            }
            if read.len() < TIME_BATCH {
                return Ok(None);
            }
            last = read.last().map(|(offset, _)| offset + 1);
        }
        Ok(last)
    }
}

/// Up to `max` records from `cursor` into `out`: those fetched already, and
/// those JetStream said follow (waiting for them at most [`READ_WAIT`]).
async fn take(
    cursor: &mut Cursor,
    name: &str,
    max: usize,
    out: &mut Vec<(u64, StreamRecord)>,
) -> Result<(), StoreError> {
    while out.len() < max {
        let next = if cursor.at_end {
            match cursor.messages.next().now_or_never() {
                Some(next) => next,
                None => return Ok(()),
            }
        } else {
            match tokio::time::timeout(READ_WAIT, cursor.messages.next()).await {
                Ok(next) => next,
                Err(_) => return Ok(()),
            }
        };
        let Some(message) = next else {
            return Err(err("reading", name, "the reader ended"));
        };
        let message = message.map_err(|e| err("reading", name, e))?;
        let (record, pending) = decode(&message, name)?;
        cursor.at_end = pending == 0;
        out.push(record);
    }
    Ok(())
}

/// A stream message as (offset, record), with how many follow it.
fn decode(
    message: &async_nats::jetstream::Message,
    name: &str,
) -> Result<((u64, StreamRecord), u64), StoreError> {
    let (sequence, pending) = match message.reply.as_deref().and_then(position) {
        Some(found) => found,
        None => {
            let info = message.info().map_err(|e| err("reading", name, e))?;
            (info.stream_sequence, info.pending)
        }
    };
    let record: StreamRecord = postcard::from_bytes(&message.payload)
        .map_err(|e| StoreError::Decode(format!("stream {name:?} message: {e}")))?;
    Ok(((sequence.saturating_sub(1), record), pending))
}

/// The stream sequence and the pending count of a JetStream message's reply
/// subject, `$JS.ACK.<stream>.<consumer>.<delivered>.<sequence>.<consumer
/// sequence>.<time>.<pending>` (or with `<domain>.<account hash>` after
/// `ACK` and a random token at the end): only the two numbers a read needs
/// (async-nats' `info` parses all of it, the time too, per message).
fn position(reply: &str) -> Option<(u64, u64)> {
    let mut tokens = [""; 12];
    let mut n = 0;
    for token in reply.split('.') {
        *tokens.get_mut(n)? = token;
        n += 1;
    }
    let (sequence, pending) = match (tokens[0], tokens[1], n) {
        ("$JS", "ACK", 9) => (tokens[5], tokens[8]),
        ("$JS", "ACK", 11 | 12) => (tokens[7], tokens[10]),
        _ => return None,
    };
    Some((sequence.parse().ok()?, pending.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sequence_and_pending_count_come_from_either_form_of_reply_subject() {
        let v1 = "$JS.ACK.TERN_STREAM_s.c1.1.42.7.1700000000000000000.5";
        assert_eq!(position(v1), Some((42, 5)));
        let v2 = "$JS.ACK.hub.ACCHASH.TERN_STREAM_s.c1.1.43.8.1700000000000000000.0.rnd";
        assert_eq!(position(v2), Some((43, 0)));
        assert_eq!(position("$JS.ACK.s.c.1.x.7.1.5"), None, "not a number");
        assert_eq!(position("_INBOX.abc"), None);
        assert_eq!(
            position("$JS.ACK.a.b.c.d.e.f.g.h.i.j.k.l.m"),
            None,
            "too long"
        );
    }

    #[test]
    fn a_batch_always_holds_the_largest_message_the_server_takes() {
        assert_eq!(batch_bytes(1 << 20), MIN_BATCH_BYTES);
        assert!(batch_bytes(64 << 20) > 64 << 20);
        assert_eq!(batch_bytes(usize::MAX), usize::MAX);
    }
}
