//! JetStream publishes of one commit, pipelined: messages are sent without
//! waiting while at most [`IN_FLIGHT`] are unacknowledged, their
//! acknowledgements collected as they come; the commit is done when every
//! message is acknowledged. Each carries a `Nats-Msg-Id` unique to it, so one
//! resent after a lost acknowledgement is stored once (JetStream's duplicate
//! window); a commit has one message per key (or per journal part), so
//! resending part of it never reorders a key.
//!
//! Used for the journal (`journal.rs`: one message per commit, rarely a few)
//! and for compaction into the store bucket (`compact.rs`: one per key).

use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::Context;
use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};

use super::keys::BUCKET;
use crate::store::StoreError;

/// Sends of one message before the commit fails (at the least: see `send_with_retry`).
const ATTEMPTS: usize = 3;
/// Messages unacknowledged at once. async-nats gives a context 5,000 (shared
/// with the node's other JetStream users) and makes a publish wait for one:
/// holding more unpolled would stall the commit.
const IN_FLIGHT: usize = 2_048;
/// Pause before a message whose acknowledgement failed is sent again.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// One message to publish.
pub(super) struct Outgoing {
    pub subject: String,
    pub payload: Bytes,
    /// A KV delete (`KV-Operation: DEL`).
    pub delete: bool,
    /// Only if its subject's last message is this one (0: never written,
    /// not even a delete marker): `Nats-Expected-Last-Subject-Sequence`.
    /// Refused, it counts as done (sequence 0), and is not sent again.
    pub expect_last: Option<u64>,
}

/// Publishes `writes` (key, value or None to delete) to the store bucket;
/// `id` names the batch uniquely (the message ids are `<id>.<index>`).
pub(super) async fn publish(
    jetstream: Context,
    writes: Vec<(String, Option<Bytes>)>,
    id: String,
) -> Result<(), StoreError> {
    let writes = writes.into_iter().map(|(k, v)| (k, v, None)).collect();
    to_bucket(jetstream, writes, id).await
}

/// [`publish`] of keys no other node may have written since this node's
/// journal had them (a released client's records): each lands only if its
/// key's last message is still the one given (0: none); the others are left
/// as they are.
pub(super) async fn publish_expecting(
    jetstream: Context,
    writes: Vec<(String, Option<Bytes>, u64)>,
    id: String,
) -> Result<(), StoreError> {
    let writes = writes
        .into_iter()
        .map(|(k, v, e)| (k, v, Some(e)))
        .collect();
    to_bucket(jetstream, writes, id).await
}

async fn to_bucket(
    jetstream: Context,
    writes: Vec<(String, Option<Bytes>, Option<u64>)>,
    id: String,
) -> Result<(), StoreError> {
    let messages = writes
        .into_iter()
        .map(|(key, value, expect_last)| Outgoing {
            subject: format!("$KV.{BUCKET}.{key}"),
            delete: value.is_none(),
            payload: value.unwrap_or_default(),
            expect_last,
        })
        .collect();
    send_with_retry(&jetstream, messages, &id, BUCKET).await?;
    Ok(())
}

/// Publishes `messages` (`what` names their stream in the error), resending
/// those not acknowledged; the stream sequence of each, in order.
pub(super) async fn send_with_retry(
    jetstream: &Context,
    messages: Vec<Outgoing>,
    id: &str,
    what: &str,
) -> Result<Vec<u64>, StoreError> {
    let mut sequences = vec![0; messages.len()];
    let mut pending: Vec<usize> = (0..messages.len()).collect();
    let mut last_error = String::new();
    // At least ATTEMPTS sends, and more while a JetStream election may last
    // (a NATS server died): the message ids make resends harmless.
    let deadline = tokio::time::Instant::now() + super::patience::PATIENCE;
    let mut attempts = 0;
    while attempts < ATTEMPTS || tokio::time::Instant::now() < deadline {
        if attempts > 0 {
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        attempts += 1;
        let mut sent = Sent {
            sequences: &mut sequences,
            failed: Vec::new(),
            last_error: &mut last_error,
        };
        send_all(jetstream, &messages, &pending, id, &mut sent).await;
        pending = sent.failed;
        if pending.is_empty() {
            return Ok(sequences);
        }
    }
    Err(StoreError::Write(format!(
        "JetStream did not acknowledge {} writes to {what} after {attempts} attempts: {last_error}",
        pending.len()
    )))
}

/// What one round of sends found.
struct Sent<'a> {
    sequences: &'a mut [u64],
    /// The numbers of the messages that failed, in order.
    failed: Vec<usize>,
    last_error: &'a mut String,
}

impl Sent<'_> {
    fn note(&mut self, result: Result<(usize, u64), (usize, String)>) {
        match result {
            Ok((n, sequence)) => self.sequences[n] = sequence,
            Err((n, e)) => {
                *self.last_error = e;
                self.failed.push(n);
            }
        }
    }
}

/// Sends the messages numbered `pending`.
async fn send_all(
    jetstream: &Context,
    messages: &[Outgoing],
    pending: &[usize],
    id: &str,
    sent: &mut Sent<'_>,
) {
    let mut acks = FuturesUnordered::new();
    for &n in pending {
        while acks.len() >= IN_FLIGHT {
            if let Some(result) = acks.next().await {
                sent.note(result);
            }
        }
        let only_new = messages[n].expect_last.is_some();
        match send(jetstream, &messages[n], &format!("{id}.{n}")).await {
            Ok(ack) => acks.push(async move {
                match ack.await {
                    Ok(ack) => Ok((n, ack.sequence)),
                    Err(e) if only_new && e.kind() == PublishErrorKind::WrongLastSequence => {
                        Ok((n, 0))
                    }
                    Err(e) => Err((n, e.to_string())),
                }
            }),
            Err(e) => sent.note(Err((n, e))),
        }
    }
    while let Some(result) = acks.next().await {
        sent.note(result);
    }
    sent.failed.sort_unstable();
}

async fn send(
    jetstream: &Context,
    message: &Outgoing,
    message_id: &str,
) -> Result<async_nats::jetstream::context::PublishAckFuture, String> {
    let mut headers = HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, message_id);
    if message.delete {
        headers.insert("KV-Operation", "DEL");
    }
    if let Some(last) = message.expect_last {
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            last.to_string().as_str(),
        );
    }
    jetstream
        .publish_with_headers(message.subject.clone(), headers, message.payload.clone())
        .await
        .map_err(|e| e.to_string())
}
