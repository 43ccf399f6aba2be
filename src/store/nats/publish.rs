//! One group commit as JetStream publishes: every write of the batch sent
//! without waiting, then one wait for all their acknowledgements. Each write
//! carries a `Nats-Msg-Id` unique to it, so a write resent after a lost
//! acknowledgement is stored once (JetStream's duplicate window); a batch
//! has one write per key, so resending part of it never reorders a key.

use std::time::Duration;

use async_nats::jetstream::context::PublishAckFuture;
use async_nats::jetstream::Context;
use async_nats::HeaderMap;
use bytes::Bytes;

use super::keys::BUCKET;
use crate::store::StoreError;

/// Sends of one write before the commit fails (at the least: see `publish`).
const ATTEMPTS: usize = 3;
/// Writes in flight at once (each chunk's acknowledgements are awaited together).
const CHUNK: usize = 8_192;
/// Pause before a write whose acknowledgement failed is sent again.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Publishes `writes` (key, value or None to delete) to the store bucket;
/// `id` names the batch uniquely (the message ids are `<id>.<index>`).
pub(super) async fn publish(
    jetstream: Context,
    writes: Vec<(String, Option<Bytes>)>,
    id: String,
) -> Result<(), StoreError> {
    let indexed: Vec<(usize, String, Option<Bytes>)> = writes
        .into_iter()
        .enumerate()
        .map(|(i, (k, v))| (i, k, v))
        .collect();
    for chunk in indexed.chunks(CHUNK) {
        let mut pending: Vec<&(usize, String, Option<Bytes>)> = chunk.iter().collect();
        let mut last_error = String::new();
        // At least ATTEMPTS sends, and more while a JetStream election may
        // last (a NATS server died): the message ids make resends harmless.
        let deadline = tokio::time::Instant::now() + super::patience::PATIENCE;
        let mut attempts = 0;
        while attempts < ATTEMPTS || tokio::time::Instant::now() < deadline {
            if attempts > 0 {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            attempts += 1;
            let mut acks: Vec<(usize, PublishAckFuture)> = Vec::with_capacity(pending.len());
            let mut failed = Vec::new();
            for (n, write) in pending.iter().enumerate() {
                match send(&jetstream, write, &id).await {
                    Ok(ack) => acks.push((n, ack)),
                    Err(e) => {
                        last_error = e;
                        failed.push(n);
                    }
                }
            }
            let waits = acks
                .into_iter()
                .map(|(n, ack)| async move { ack.await.map_err(|e| (n, e.to_string())) });
            for result in futures_util::future::join_all(waits).await {
                if let Err((n, e)) = result {
                    last_error = e;
                    failed.push(n);
                }
            }
            if failed.is_empty() {
                pending.clear();
                break;
            }
            failed.sort_unstable();
            pending = failed.into_iter().map(|n| pending[n]).collect();
        }
        if !pending.is_empty() {
            return Err(StoreError::Write(format!(
                "JetStream did not acknowledge {} writes to {BUCKET} after {attempts} attempts: {last_error}",
                pending.len()
            )));
        }
    }
    Ok(())
}

async fn send(
    jetstream: &Context,
    (index, key, value): &(usize, String, Option<Bytes>),
    id: &str,
) -> Result<PublishAckFuture, String> {
    let mut headers = HeaderMap::new();
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        format!("{id}.{index}").as_str(),
    );
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
