//! Retained messages, one view across the nodes.
//!
//! KV bucket `tern_retained` (history 1: one value per topic): key = the topic
//! ([`crate::store::nats::kv_key`]), value = [`RetainedValue`] (the node that made the
//! change and the message; an empty payload clears, kept as a small
//! tombstone so the clearing node is known too). The bucket's order is the
//! cluster's order of retained changes.
//!
//! Every node keeps its own retained index, so SUBSCRIBE stays local, and
//! follows the bucket with a watch:
//! - a change made by another node is routed here as that node's publish
//!   (delivered to local subscribers and kept in the index under the trie's
//!   lock, like a local retained publish): a subscriber subscribing meanwhile
//!   is either matched by it or finds it retained, never neither. Retained
//!   publishes therefore reach other nodes through this bucket, not through
//!   the forwarding of live messages (which skips them);
//! - a change this node made was delivered here already and is applied to
//!   the index only, so that where two nodes race on one topic, every index
//!   ends with the bucket's last value.
//!
//! Local changes are written by one task, latest value per topic, in
//! batches whose acknowledgements are awaited together.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_nats::jetstream::kv;
use futures_util::StreamExt;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::core::message::Message;
use crate::core::router::persist::{message_from_record, message_record};
use crate::core::router::Router;
use crate::store::nats::kv_key;
use crate::store::record::MessageRecord;

/// The bucket of retained messages.
pub(crate) const BUCKET: &str = "tern_retained";
/// First byte of every value: its layout.
const VALUE_VERSION: u8 = 1;

/// One retained change, as stored in the bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RetainedValue {
    pub node: String,
    /// The retained message; an empty payload clears the topic.
    pub message: MessageRecord,
}

impl RetainedValue {
    pub(crate) fn encode(&self) -> bytes::Bytes {
        crate::store::nats::kv_value::encode(VALUE_VERSION, self)
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<RetainedValue> {
        crate::store::nats::kv_value::decode(VALUE_VERSION, bytes)
    }
}

#[derive(Debug)]
pub(crate) struct RetainedSync {
    kv: kv::Store,
    node: String,
    /// Latest unwritten value per key (bounded by the retained topics).
    pending: Mutex<HashMap<String, bytes::Bytes>>,
    wake_writer: Notify,
}

impl RetainedSync {
    pub(crate) fn new(kv: kv::Store, node: &str) -> RetainedSync {
        RetainedSync {
            kv,
            node: node.to_string(),
            pending: Mutex::new(HashMap::new()),
            wake_writer: Notify::new(),
        }
    }

    /// A local retained change, to be written (never blocks).
    pub(crate) fn changed(&self, topic: &str, message: Option<&Message>) {
        let mut record = match message {
            Some(message) => message_record(message),
            None => message_record(&cleared(topic)),
        };
        record.retain = true;
        let value = RetainedValue {
            node: self.node.clone(),
            message: record,
        };
        self.pending
            .lock()
            .insert(kv_key::encode(topic), value.encode());
        self.wake_writer.notify_one();
    }

    /// Writes local changes, one batch per wake-up; runs until the node stops.
    pub(crate) async fn run_writer(self: Arc<Self>) {
        let mut failures: u64 = 0;
        loop {
            self.wake_writer.notified().await;
            let batch: Vec<(String, bytes::Bytes)> = self.pending.lock().drain().collect();
            let mut acks = tokio::task::JoinSet::new();
            for (key, value) in batch {
                let kv = self.kv.clone();
                acks.spawn(async move { kv.put(key, value).await });
            }
            while let Some(ack) = acks.join_next().await {
                if let Ok(Err(e)) = ack {
                    failures += 1;
                    // The first failure and every 1000th: not one line per message.
                    if failures == 1 || failures.is_multiple_of(1000) {
                        tracing::warn!(bucket = BUCKET, error = %e, failures, "retained message not shared with the cluster");
                    }
                }
            }
        }
    }

    /// Follows the bucket into the router's retained index (see the module
    /// doc); runs until the router is gone.
    pub(crate) async fn run_watch(self: Arc<Self>, router: Weak<Router>) {
        if let Some(router) = router.upgrade() {
            self.forget_unknown(&router).await;
        }
        // Values up to here were there before this node started: index only.
        let mut initial_until = match self.kv.status().await {
            Ok(status) => status.info.state.last_sequence,
            Err(e) => {
                tracing::warn!(bucket = BUCKET, error = %e, "retained bucket status unknown");
                0
            }
        };
        let mut from_revision = 0;
        loop {
            let watch = if from_revision == 0 {
                self.kv.watch_with_history(">").await
            } else {
                self.kv.watch_all_from_revision(from_revision).await
            };
            match watch {
                Ok(mut watch) => {
                    while let Some(entry) = watch.next().await {
                        let Ok(entry) = entry else {
                            continue;
                        };
                        let Some(router) = router.upgrade() else {
                            return;
                        };
                        from_revision = entry.revision + 1;
                        self.apply(&router, &entry, entry.revision > initial_until);
                    }
                    tracing::warn!(bucket = BUCKET, "retained watch ended; watching again");
                }
                Err(e) => {
                    tracing::warn!(bucket = BUCKET, error = %e, "retained watch failed; retrying");
                }
            }
            if router.strong_count() == 0 {
                return;
            }
            initial_until = 0;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Drops retained messages this node restored from its own store that
    /// the bucket no longer has (cleared elsewhere while this node was down);
    /// the watch then brings every topic the bucket has.
    async fn forget_unknown(&self, router: &Router) {
        let mut known = std::collections::HashSet::new();
        match self.kv.keys().await {
            Ok(mut keys) => {
                while let Some(key) = keys.next().await {
                    match key {
                        Ok(key) => {
                            known.extend(kv_key::decode(&key));
                        }
                        Err(e) => {
                            tracing::warn!(bucket = BUCKET, error = %e, "retained keys not all listed; stored retained messages kept");
                            return;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(bucket = BUCKET, error = %e, "retained keys not listed; stored retained messages kept");
                return;
            }
        }
        for message in router.retained_all() {
            if !known.contains(&*message.topic) {
                router.apply_cluster_retained(cleared(&message.topic), false);
            }
        }
    }

    fn apply(&self, router: &Router, entry: &kv::Entry, live: bool) {
        let message = match entry.operation {
            kv::Operation::Put => match RetainedValue::decode(&entry.value) {
                Some(value) => {
                    let deliver = live && value.node != self.node;
                    (message_from_record(value.message), deliver)
                }
                None => return,
            },
            // Deleted or purged by an operator through NATS: cleared, nothing delivered.
            kv::Operation::Delete | kv::Operation::Purge => match kv_key::decode(&entry.key) {
                Some(topic) => (cleared(&topic), false),
                None => return,
            },
        };
        router.apply_cluster_retained(message.0, message.1);
    }
}

/// The message that clears the retained message of `topic` (empty payload).
fn cleared(topic: &str) -> Message {
    Message::new(
        topic,
        bytes::Bytes::new(),
        crate::core::message::QoS::AtMostOnce,
        true,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retained_values_round_trip() {
        let value = RetainedValue {
            node: "tern-1".into(),
            message: MessageRecord {
                topic: "a/b".into(),
                payload: b"21.5".to_vec(),
                qos: 1,
                retain: true,
                expires_at_ms: Some(1_700_000_000_000),
                payload_is_utf8: true,
                content_type: Some("text/plain".into()),
                response_topic: None,
                correlation_data: None,
                user_properties: vec![("k".into(), "v".into())],
                publisher: Some("dev-1".into()),
            },
        };
        let bytes = value.encode();
        assert_eq!(bytes[0], VALUE_VERSION);
        assert_eq!(RetainedValue::decode(&bytes), Some(value));
        assert_eq!(RetainedValue::decode(&[2, 0]), None);
    }
}
