//! Durable streams on the NATS backend: one JetStream stream per Tern stream,
//! `TERN_STREAM_<name>` (the name escaped by [`escape`]), file storage,
//! `[cluster] replicas` copies, the Tern stream's limits (`max_age`,
//! `max_messages`, `max_bytes`, oldest discarded first). A message's offset
//! is its JetStream sequence − 1, so every node reads the same stream.
//!
//! - An append is a publish to `tern.stream.<escaped name>` with a
//!   `Nats-Msg-Id` (a resend after a lost ack is stored once), pipelined with
//!   the batch's other appends; the commit waits for every ack.
//! - A trim (retention, purge) removes messages below a sequence, keeping the
//!   stream's sequence (so offsets never repeat), without a partial purge
//!   (`stream_trim.rs`); a delete deletes the stream.
//! - Reads: `stream_read.rs`.
//! - Appends, trims and deletes go over a NATS connection of their own,
//!   reads over another (`NatsBackend::with_stream_connections`): a flood of
//!   appends never delays a replay, nor either of them the node's routing,
//!   its journal or its client-id claims.
//!
//! Named consumers' offsets and admin declarations are keys of the store
//! bucket (`keys.rs`), written with the rest of the batch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::stream::{Config, DiscardPolicy, StorageType};
use async_nats::jetstream::Context;
use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::stream::{FuturesOrdered, StreamExt};
use parking_lot::Mutex;

use super::stream_read::Cursors;
use crate::store::record::StreamState;
use crate::store::{StoreError, StoreOp, StreamLimits};

/// Prefix of the JetStream streams that hold Tern streams.
pub(crate) const PREFIX: &str = "TERN_STREAM_";
/// Prefix of the subjects appends are published to.
const SUBJECT_PREFIX: &str = "tern.stream.";
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

pub(super) fn stream_name(name: &str) -> String {
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

pub(super) fn err(what: &str, stream: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Write(format!("stream {stream:?}: {what}: {e}"))
}

/// The streams part of the NATS backend.
pub(super) struct Streams {
    /// The connection appends, trims and deletes go over.
    appends: Context,
    /// The connection reads go over (`stream_read.rs`).
    pub(super) reads: Context,
    replicas: usize,
    /// Each Tern stream's limits, as declared.
    limits: Mutex<HashMap<String, StreamLimits>>,
    /// The JetStream streams made or updated by this process, with the limits given.
    ensured: Mutex<HashMap<String, StreamLimits>>,
    pub(super) cursors: Mutex<Cursors>,
    /// Warned once: an append got another offset than this node gave it.
    diverged: AtomicBool,
}

impl Streams {
    /// Appends over `appends`, reads over `reads` (the same connection in tests).
    pub(super) fn new(appends: Context, reads: Context, replicas: usize) -> Streams {
        Streams {
            appends,
            reads,
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
        match self.appends.get_stream(&config.name).await {
            Ok(mut stream) => {
                let info = stream
                    .info()
                    .await
                    .map_err(|e| err("reading its info", name, e))?;
                let have = &info.config;
                if (have.max_age, have.max_messages, have.max_bytes)
                    != (config.max_age, config.max_messages, config.max_bytes)
                {
                    self.appends
                        .update_stream(&config)
                        .await
                        .map_err(|e| err("updating its limits", name, e))?;
                }
            }
            Err(_) => {
                super::made::get_or_create_stream(&self.appends, config)
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
                        .appends
                        .get_stream(stream_name(&stream))
                        .await
                        .map_err(|e| err("opening it", &stream, e))?;
                    super::stream_trim::trim(&self.appends, &js, below)
                        .await
                        .map_err(|e| err("trimming it", &stream, e))?;
                }
                Write::Delete { stream } => {
                    self.append_run(std::mem::take(&mut run), id).await?;
                    self.ensured.lock().remove(&stream);
                    self.cursors.lock().retain(|(s, _), _| *s != stream);
                    match self.appends.delete_stream(stream_name(&stream)).await {
                        Ok(_) => {}
                        Err(e) if e.to_string().contains("not found") => {}
                        Err(e) => return Err(err("deleting it", &stream, e)),
                    }
                    // Its named consumers' offsets go with it.
                    super::stream_trim::purge_keys(
                        &self.appends,
                        super::keys::BUCKET,
                        &super::keys::stream_consumers_subject(&stream),
                    )
                    .await
                    .map_err(|e| err("removing its consumers", &stream, e))?;
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
                .appends
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
        let mut names = self.reads.stream_names();
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
        let Ok(mut stream) = self.reads.get_stream(stream_name(name)).await else {
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
