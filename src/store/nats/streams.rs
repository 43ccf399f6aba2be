//! Durable streams on the NATS backend: one JetStream stream per Tern stream,
//! `TERN_STREAM_<name>` (the name escaped by [`escape`]), file storage,
//! `[cluster] replicas` copies, the Tern stream's limits (`max_age`,
//! `max_messages`, `max_bytes`, oldest discarded first). A message's offset
//! is its JetStream sequence − 1, so every node reads the same stream.
//!
//! - An append is a publish to `tern.stream.<escaped name>` with a
//!   `Nats-Msg-Id` (a resend after a lost ack is stored once), pipelined with
//!   the batch's other appends; the commit waits for every ack.
//! - A trim (retention, purge) is a purge below a sequence, which keeps the
//!   stream's sequence (so offsets never repeat); a delete deletes the stream.
//! - Reads go through pull consumers without acks (`fetch`, no wait), one
//!   kept per reader position ([`Cursors`]) with what it fetched ahead (up
//!   to [`READ_AHEAD_MAX`] records, about 2 MiB), so a replay costs one
//!   request per few thousand small records; a time lookup starts a consumer at JetStream's time and scans the
//!   records' own publish times from there.
//!
//! Named consumers' offsets and admin declarations are keys of the store
//! bucket (`keys.rs`), written with the rest of the batch.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::stream::{Config, DiscardPolicy, StorageType};
use async_nats::jetstream::Context;
use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::stream::{FuturesOrdered, StreamExt};
use parking_lot::Mutex;

use crate::store::record::{StreamRecord, StreamState};
use crate::store::{StoreError, StoreOp, StreamLimits};

/// Prefix of the JetStream streams that hold Tern streams.
pub(crate) const PREFIX: &str = "TERN_STREAM_";
/// Prefix of the subjects appends are published to.
const SUBJECT_PREFIX: &str = "tern.stream.";
/// Reader positions kept open at once (each a consumer on the server).
const MAX_CURSORS: usize = 32;
/// An idle cursor's consumer is removed by the server after this long.
const CURSOR_IDLE: Duration = Duration::from_secs(60);
/// Most records fetched ahead by one request.
const READ_AHEAD_MAX: usize = 4096;
/// A fetch that took fewer bytes than this may fetch twice as many next time.
const READ_AHEAD_BYTES: usize = 1 << 20;
/// Records looked at per request when finding a time.
const TIME_BATCH: usize = 256;
/// Batches a time lookup scans past JetStream's own time before it settles.
const TIME_ROUNDS: usize = 64;
/// Appends unacknowledged at once.
const IN_FLIGHT: usize = 2_048;
/// Sends of a run of appends before the commit fails.
const ATTEMPTS: usize = 3;

/// `name` as a JetStream name and subject token: ASCII letters, digits and
/// `-` kept, every other byte `_` and two hex digits (so `_` itself is
/// escaped, and two names never meet).
pub(crate) fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("_{b:02X}"));
        }
    }
    out
}

/// The name [`escape`] made `escaped` of; None for anything it never makes.
pub(crate) fn unescape(escaped: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(escaped.len());
    let mut rest = escaped.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'_' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

fn stream_name(name: &str) -> String {
    format!("{PREFIX}{}", escape(name))
}

/// One change to a JetStream stream, in batch order.
#[derive(Debug)]
pub(super) enum Write {
    Append {
        stream: Arc<str>,
        offset: u64,
        entry: Bytes,
    },
    Trim {
        stream: String,
        below: u64,
    },
    Delete {
        stream: String,
    },
}

/// The stream writes among `ops` (the bucket keys are `Mirror::plan`'s).
pub(super) fn plan(ops: &[StoreOp]) -> Vec<Write> {
    ops.iter()
        .filter_map(|op| match op {
            StoreOp::AppendStream {
                stream,
                offset,
                entry,
                ..
            } => Some(Write::Append {
                stream: Arc::clone(stream),
                offset: *offset,
                entry: Bytes::copy_from_slice(entry),
            }),
            StoreOp::TrimStream { stream, below } => Some(Write::Trim {
                stream: stream.clone(),
                below: *below,
            }),
            StoreOp::DeleteStream { stream } => Some(Write::Delete {
                stream: stream.clone(),
            }),
            _ => None,
        })
        .collect()
}

fn err(what: &str, stream: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Write(format!("stream {stream:?}: {what}: {e}"))
}

/// A reader's pull consumer and what it fetched ahead.
struct Cursor {
    consumer: PullConsumer,
    /// Fetched, not read yet: from the offset the cursor is kept at.
    ahead: VecDeque<(u64, StreamRecord)>,
    /// How many to fetch next (grows while records are small).
    fetch: usize,
}

/// Open cursors by (stream, the offset they read next).
type Cursors = HashMap<(String, u64), Cursor>;

/// The streams part of the NATS backend.
pub(super) struct Streams {
    jetstream: Context,
    replicas: usize,
    /// Each Tern stream's limits, as declared.
    limits: Mutex<HashMap<String, StreamLimits>>,
    /// The JetStream streams made or updated by this process, with the limits given.
    ensured: Mutex<HashMap<String, StreamLimits>>,
    cursors: Mutex<Cursors>,
    /// Warned once: an append got another offset than this node gave it.
    diverged: AtomicBool,
}

impl Streams {
    pub(super) fn new(jetstream: Context, replicas: usize) -> Streams {
        Streams {
            jetstream,
            replicas: replicas.max(1),
            limits: Mutex::new(HashMap::new()),
            ensured: Mutex::new(HashMap::new()),
            cursors: Mutex::new(HashMap::new()),
            diverged: AtomicBool::new(false),
        }
    }

    /// Records `name`'s limits; its JetStream stream takes them at its next write.
    pub(super) fn configure(&self, name: &str, limits: StreamLimits) {
        self.limits.lock().insert(name.to_string(), limits);
    }

    fn config(&self, name: &str, limits: StreamLimits) -> Config {
        let positive = |n: Option<u64>| n.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
        Config {
            name: stream_name(name),
            subjects: vec![format!("{SUBJECT_PREFIX}{}", escape(name))],
            storage: StorageType::File,
            num_replicas: self.replicas,
            discard: DiscardPolicy::Old,
            max_age: limits.max_age.unwrap_or_default(),
            max_messages: positive(limits.max_messages),
            max_bytes: positive(limits.max_bytes),
            allow_direct: true,
            ..Default::default()
        }
    }

    /// Makes `name`'s JetStream stream exist with its current limits (once
    /// per process and change of limits).
    async fn ensure(&self, name: &str) -> Result<(), StoreError> {
        let limits = self.limits.lock().get(name).copied().unwrap_or_default();
        if self.ensured.lock().get(name) == Some(&limits) {
            return Ok(());
        }
        let config = self.config(name, limits);
        match self.jetstream.get_stream(&config.name).await {
            Ok(mut stream) => {
                let info = stream
                    .info()
                    .await
                    .map_err(|e| err("reading its info", name, e))?;
                let have = &info.config;
                if (have.max_age, have.max_messages, have.max_bytes)
                    != (config.max_age, config.max_messages, config.max_bytes)
                {
                    self.jetstream
                        .update_stream(&config)
                        .await
                        .map_err(|e| err("updating its limits", name, e))?;
                }
            }
            Err(_) => {
                self.jetstream
                    .create_stream(config)
                    .await
                    .map_err(|e| err("creating it", name, e))?;
            }
        }
        self.ensured.lock().insert(name.to_string(), limits);
        Ok(())
    }

    /// Applies `writes` in order: runs of appends pipelined, each acked;
    /// `id` names the batch (message ids `<id>.s<index>`).
    pub(super) async fn write(&self, writes: Vec<Write>, id: &str) -> Result<(), StoreError> {
        let mut run: Vec<(usize, Arc<str>, u64, Bytes)> = Vec::new();
        for (n, write) in writes.into_iter().enumerate() {
            match write {
                Write::Append {
                    stream,
                    offset,
                    entry,
                } => {
                    run.push((n, stream, offset, entry));
                    continue;
                }
                Write::Trim { stream, below } => {
                    self.append_run(std::mem::take(&mut run), id).await?;
                    self.ensure(&stream).await?;
                    self.cursors.lock().retain(|(s, _), _| *s != stream);
                    let js = self
                        .jetstream
                        .get_stream(stream_name(&stream))
                        .await
                        .map_err(|e| err("opening it", &stream, e))?;
                    js.purge()
                        .sequence(below + 1)
                        .await
                        .map_err(|e| err("trimming it", &stream, e))?;
                }
                Write::Delete { stream } => {
                    self.append_run(std::mem::take(&mut run), id).await?;
                    self.ensured.lock().remove(&stream);
                    self.cursors.lock().retain(|(s, _), _| *s != stream);
                    match self.jetstream.delete_stream(stream_name(&stream)).await {
                        Ok(_) => {}
                        Err(e) if e.to_string().contains("not found") => {}
                        Err(e) => return Err(err("deleting it", &stream, e)),
                    }
                    // Its named consumers' offsets go with it.
                    let bucket = format!("KV_{}", super::keys::BUCKET);
                    let purged = match self.jetstream.get_stream(bucket).await {
                        Ok(kv) => kv
                            .purge()
                            .filter(super::keys::stream_consumers_subject(&stream))
                            .await
                            .map(drop)
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    purged.map_err(|e| err("removing its consumers", &stream, e))?;
                }
            }
        }
        self.append_run(run, id).await
    }

    /// Publishes a run of appends in order without waiting in between; sends
    /// the run again from the first unacknowledged one if any failed (the
    /// message ids make the resends of stored ones harmless).
    async fn append_run(
        &self,
        run: Vec<(usize, Arc<str>, u64, Bytes)>,
        id: &str,
    ) -> Result<(), StoreError> {
        if run.is_empty() {
            return Ok(());
        }
        let mut names: Vec<&Arc<str>> = run.iter().map(|(_, s, _, _)| s).collect();
        names.dedup();
        for name in names {
            self.ensure(name).await?;
        }
        let mut from = 0;
        let mut last_error = String::new();
        for _ in 0..ATTEMPTS {
            match self.send(&run[from..], id).await {
                Ok(()) => return Ok(()),
                Err((failed, e)) => {
                    from += failed;
                    last_error = e;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(StoreError::Write(format!(
            "JetStream did not acknowledge {} stream appends: {last_error}",
            run.len() - from
        )))
    }

    /// Sends `run`; on failure, how many of it were acknowledged before the
    /// first that was not (the rest is sent again: the ids make it harmless).
    async fn send(
        &self,
        run: &[(usize, Arc<str>, u64, Bytes)],
        id: &str,
    ) -> Result<(), (usize, String)> {
        let mut acks = FuturesOrdered::new();
        let mut done = 0;
        // The subject of the stream appended to last (a run is mostly one stream).
        let mut subject: Option<(&Arc<str>, async_nats::Subject)> = None;
        for (n, stream, offset, entry) in run {
            // async-nats makes a publish wait while the context has 5,000
            // unacknowledged (`publish.rs` takes up to 2,048 of them):
            // the acks are collected as they come, not after the last send.
            while acks.len() >= IN_FLIGHT {
                if let Some(ack) = acks.next().await {
                    self.check(ack, &mut done)?;
                }
            }
            let mut headers = HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, format!("{id}.s{n}"));
            let to = match &subject {
                Some((s, to)) if *s == stream => to.clone(),
                _ => {
                    let to =
                        async_nats::Subject::from(format!("{SUBJECT_PREFIX}{}", escape(stream)));
                    subject = Some((stream, to.clone()));
                    to
                }
            };
            let ack = self
                .jetstream
                .publish_with_headers(to, headers, entry.clone())
                .await
                .map_err(|e| (done, e.to_string()))?;
            let offset = *offset;
            acks.push_back(async move { ack.await.map(|a| (a.sequence, offset)) });
        }
        while let Some(ack) = acks.next().await {
            self.check(ack, &mut done)?;
        }
        Ok(())
    }

    /// One append's acknowledgement, counted in `done`.
    fn check(
        &self,
        ack: Result<(u64, u64), async_nats::jetstream::context::PublishError>,
        done: &mut usize,
    ) -> Result<(), (usize, String)> {
        let (sequence, offset) = ack.map_err(|e| (*done, e.to_string()))?;
        if sequence != offset + 1 && !self.diverged.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                sequence,
                offset,
                "a stream append was stored at another offset than this node gave it \
                 (another node appended to the stream meanwhile)"
            );
        }
        *done += 1;
        Ok(())
    }

    /// The state of every Tern stream JetStream holds.
    pub(super) async fn load(&self) -> Result<Vec<StreamState>, StoreError> {
        let mut names = self.jetstream.stream_names();
        let mut found = Vec::new();
        while let Some(name) = names.next().await {
            let name = name.map_err(|e| StoreError::Open {
                path: "JetStream streams".into(),
                reason: e.to_string(),
            })?;
            if let Some(tern) = name.strip_prefix(PREFIX).and_then(unescape) {
                found.push(tern);
            }
        }
        let mut states = Vec::new();
        for name in found {
            if let Some(state) = self.state(&name).await? {
                states.push(state);
            }
        }
        Ok(states)
    }

    /// `name`'s offsets, bytes and oldest time as JetStream holds them (None: no such stream).
    pub(super) async fn state(&self, name: &str) -> Result<Option<StreamState>, StoreError> {
        let Ok(mut stream) = self.jetstream.get_stream(stream_name(name)).await else {
            return Ok(None);
        };
        let info = stream
            .info()
            .await
            .map_err(|e| err("reading its info", name, e))?;
        let s = &info.state;
        let first_time_ms = if s.messages == 0 {
            0
        } else {
            u64::try_from(s.first_timestamp.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
        };
        Ok(Some(StreamState {
            name: name.to_string(),
            // Empty, JetStream's first sequence is the next one.
            first: s.first_sequence.saturating_sub(1).min(s.last_sequence),
            next: s.last_sequence,
            bytes: s.bytes,
            first_time_ms,
        }))
    }

    /// A cursor reading `name` from `from` on: a kept one at that position, or a new one.
    async fn cursor(&self, name: &str, from: u64) -> Result<Option<Cursor>, StoreError> {
        if let Some(kept) = self.cursors.lock().remove(&(name.to_string(), from)) {
            return Ok(Some(kept));
        }
        let consumer = self
            .consumer(
                name,
                DeliverPolicy::ByStartSequence {
                    start_sequence: from + 1,
                },
            )
            .await?;
        Ok(consumer.map(|consumer| Cursor {
            consumer,
            ahead: VecDeque::new(),
            fetch: 0,
        }))
    }

    async fn consumer(
        &self,
        name: &str,
        deliver_policy: DeliverPolicy,
    ) -> Result<Option<PullConsumer>, StoreError> {
        let Ok(stream) = self.jetstream.get_stream(stream_name(name)).await else {
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

    /// Up to `max` records of `consumer` as they come now (offset, record),
    /// added to `out`; the bytes they took.
    async fn fetch(
        consumer: &PullConsumer,
        max: usize,
        name: &str,
        out: &mut impl Extend<(u64, StreamRecord)>,
    ) -> Result<usize, StoreError> {
        let mut batch = consumer
            .fetch()
            .max_messages(max)
            .messages()
            .await
            .map_err(|e| err("reading", name, e))?;
        let mut bytes = 0;
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| err("reading", name, e))?;
            let sequence = message
                .info()
                .map_err(|e| err("reading", name, e))?
                .stream_sequence;
            let record: StreamRecord = postcard::from_bytes(&message.payload)
                .map_err(|e| StoreError::Decode(format!("stream {name:?} message: {e}")))?;
            bytes += message.payload.len();
            out.extend([(sequence.saturating_sub(1), record)]);
        }
        Ok(bytes)
    }

    /// See [`crate::store::Backend::read_stream`]: from the cursor's
    /// read-ahead, fetched again when it holds fewer than `max`.
    pub(super) async fn read(
        &self,
        name: &str,
        from: u64,
        max: usize,
    ) -> Result<Vec<(u64, StreamRecord)>, StoreError> {
        let Some(mut cursor) = self.cursor(name, from).await? else {
            return Ok(Vec::new());
        };
        if cursor.ahead.len() < max {
            let n = cursor.fetch.max(max);
            let before = cursor.ahead.len();
            let fetched = Self::fetch(&cursor.consumer, n, name, &mut cursor.ahead).await;
            match fetched {
                // Many small records: read further ahead next time; big ones: less.
                Ok(bytes) if cursor.ahead.len() - before == n && bytes < READ_AHEAD_BYTES => {
                    cursor.fetch = (n * 2).min(READ_AHEAD_MAX);
                }
                Ok(_) => cursor.fetch = max,
                // Removed by the server meanwhile (idle): once more with a new one.
                Err(_) if cursor.ahead.is_empty() => {
                    let mut read = Vec::new();
                    if let Some(fresh) = self.cursor(name, from).await? {
                        Self::fetch(&fresh.consumer, max, name, &mut read).await?;
                    }
                    return Ok(read);
                }
                Err(e) => return Err(e),
            }
        }
        let n = max.min(cursor.ahead.len());
        let read: Vec<(u64, StreamRecord)> = cursor.ahead.drain(..n).collect();
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
            Self::fetch(&consumer, TIME_BATCH, name, &mut read).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_escape_to_jetstream_names_and_back_without_collisions() {
        let names = ["sensors", "a.b", "a_2Eb", "a b/c*>", "é", "_", "-x-"];
        let escaped: Vec<String> = names.iter().map(|n| escape(n)).collect();
        for (name, e) in names.iter().zip(&escaped) {
            assert!(
                e.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{e}"
            );
            assert_eq!(unescape(e).as_deref(), Some(*name));
        }
        let unique: std::collections::HashSet<&String> = escaped.iter().collect();
        assert_eq!(unique.len(), names.len());
        assert_eq!(escape("a.b"), "a_2Eb");
        assert_eq!(unescape("a_2"), None);
    }
}
