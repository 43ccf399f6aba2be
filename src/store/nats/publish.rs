//! One group commit as JetStream publishes, pipelined: writes are sent
//! without waiting while at most [`IN_FLIGHT`] are unacknowledged, their
//! acknowledgements collected as they come; the commit is done when every
//! write is acknowledged. Each write carries a `Nats-Msg-Id` unique to it, so
//! a write resent after a lost acknowledgement is stored once (JetStream's
//! duplicate window); a batch has one write per key, so resending part of it
//! never reorders a key.

use std::time::Duration;

use async_nats::jetstream::Context;
use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};

use super::keys::BUCKET;
use crate::store::StoreError;

/// Sends of one write before the commit fails (at the least: see `publish`).
const ATTEMPTS: usize = 3;
/// Writes unacknowledged at once. async-nats gives a context 5,000 (shared
/// with the node's other JetStream users) and makes a publish wait for one:
/// holding more unpolled would stall the commit.
const IN_FLIGHT: usize = 2_048;
/// Pause before a write whose acknowledgement failed is sent again.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Publishes `writes` (key, value or None to delete) to the store bucket;
/// `id` names the batch uniquely (the message ids are `<id>.<index>`).
pub(super) async fn publish(
    jetstream: Context,
    writes: Vec<(String, Option<Bytes>)>,
    id: String,
) -> Result<(), StoreError> {
    let mut pending: Vec<usize> = (0..writes.len()).collect();
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
        pending = send_all(&jetstream, &writes, &pending, &id, &mut last_error).await;
        if pending.is_empty() {
            return Ok(());
        }
    }
    Err(StoreError::Write(format!(
        "JetStream did not acknowledge {} writes to {BUCKET} after {attempts} attempts: {last_error}",
        pending.len()
    )))
}

/// Sends the writes numbered `pending`; the numbers of those that failed, in order.
async fn send_all(
    jetstream: &Context,
    writes: &[(String, Option<Bytes>)],
    pending: &[usize],
    id: &str,
    last_error: &mut String,
) -> Vec<usize> {
    let mut acks = FuturesUnordered::new();
    let mut failed = Vec::new();
    let mut note = |result: Result<(), (usize, String)>, failed: &mut Vec<usize>| {
        if let Err((n, e)) = result {
            *last_error = e;
            failed.push(n);
        }
    };
    for &n in pending {
        while acks.len() >= IN_FLIGHT {
            if let Some(result) = acks.next().await {
                note(result, &mut failed);
            }
        }
        let (key, value) = &writes[n];
        match send(jetstream, key, value, &format!("{id}.{n}")).await {
            Ok(ack) => {
                acks.push(async move { ack.await.map(drop).map_err(|e| (n, e.to_string())) })
            }
            Err(e) => note(Err((n, e)), &mut failed),
        }
    }
    while let Some(result) = acks.next().await {
        note(result, &mut failed);
    }
    failed.sort_unstable();
    failed
}

async fn send(
    jetstream: &Context,
    key: &str,
    value: &Option<Bytes>,
    message_id: &str,
) -> Result<async_nats::jetstream::context::PublishAckFuture, String> {
    let mut headers = HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, message_id);
    if value.is_none() {
        headers.insert("KV-Operation", "DEL");
    }
    jetstream
        .publish_with_headers(
            format!("$KV.{BUCKET}.{key}"),
            headers,
            value.clone().unwrap_or_default(),
        )
        .await
        .map_err(|e| e.to_string())
}
