//! Streams created or deleted through one node's admin API reach the other
//! nodes at once: once the commit that stores the change is acknowledged,
//! the node publishes a notice on core NATS ([`SUBJECT`]); every node
//! subscribes and hands the others' notices to the core
//! (`Backend::stream_changes`), which declares or removes the stream there.
//! A node that was not connected then finds the stream at its next start
//! (the declaration is in the store). Purges need no notice: every node
//! reads its streams' first offset from JetStream once a second.

use async_nats::Client;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::store::{StoreOp, StreamChange};

/// Where notices go.
const SUBJECT: &str = "tern.streams.changed";
/// Notices received and not yet taken by the core (more are dropped, logged).
const QUEUE: usize = 1024;

/// One notice as it travels (JSON).
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Notice {
    /// The node it comes from (its own are skipped).
    node: String,
    stream: String,
    /// The stored declaration (JSON) of a created stream; None: deleted.
    settings: Option<serde_json::Value>,
}

/// The notices `ops` (a committed batch) call for, encoded.
pub(super) fn notices(node: &str, ops: &[StoreOp]) -> Vec<Vec<u8>> {
    ops.iter()
        .filter_map(|op| {
            let (stream, settings) = match op {
                StoreOp::PutStreamDeclaration { stream, settings } => {
                    (stream, Some(serde_json::from_slice(settings).ok()?))
                }
                StoreOp::DeleteStream { stream } => (stream, None),
                _ => return None,
            };
            serde_json::to_vec(&Notice {
                node: node.to_string(),
                stream: stream.clone(),
                settings,
            })
            .ok()
        })
        .collect()
}

/// Publishes `notices` (encoded by [`notices`]); a failure is logged (the
/// other nodes then see the change at their next start).
pub(super) async fn publish(client: &Client, notices: Vec<Vec<u8>>) {
    for notice in notices {
        if let Err(e) = client.publish(SUBJECT, notice.into()).await {
            tracing::warn!(error = %e, "cannot tell the other nodes of a stream created or deleted");
        }
    }
    let _ = client.flush().await;
}

/// The notice `payload` as a change, unless it is `node`'s own or unreadable.
fn change(node: &str, payload: &[u8]) -> Option<StreamChange> {
    let notice: Notice = serde_json::from_slice(payload).ok()?;
    if notice.node == node {
        return None;
    }
    Some(match notice.settings {
        Some(settings) => StreamChange::Created {
            stream: notice.stream,
            settings: serde_json::to_vec(&settings).ok()?,
        },
        None => StreamChange::Deleted {
            stream: notice.stream,
        },
    })
}

/// Subscribes to the other nodes' notices: they come out of the receiver.
pub(super) async fn subscribe(
    client: &Client,
    node: &str,
) -> Result<mpsc::Receiver<StreamChange>, async_nats::SubscribeError> {
    use futures_util::StreamExt;
    let mut subscriber = client.subscribe(SUBJECT).await?;
    let (tx, rx) = mpsc::channel(QUEUE);
    let node = node.to_string();
    tokio::spawn(async move {
        while let Some(message) = subscriber.next().await {
            let Some(change) = change(&node, &message.payload) else {
                continue;
            };
            match tx.try_send(change) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => return,
                Err(mpsc::error::TrySendError::Full(change)) => {
                    tracing::warn!(?change, "stream change from another node dropped: too many waiting; it applies at the next start");
                }
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_and_a_deleted_stream_reach_other_nodes_and_not_their_own() {
        let settings = br#"{"name":"s","topics":["a/#"]}"#.to_vec();
        let ops = [
            StoreOp::PutStreamDeclaration {
                stream: "s".into(),
                settings: settings.clone(),
            },
            StoreOp::TrimStream {
                stream: "s".into(),
                below: 3,
            },
            StoreOp::DeleteStream { stream: "s".into() },
        ];
        let sent = notices("a", &ops);
        assert_eq!(sent.len(), 2, "a trim needs no notice");
        let Some(StreamChange::Created {
            stream,
            settings: got,
        }) = change("b", &sent[0])
        else {
            panic!("a creation");
        };
        assert_eq!(stream, "s");
        let value = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).ok();
        assert_eq!(value(&got), value(&settings));
        assert_eq!(
            change("b", &sent[1]),
            Some(StreamChange::Deleted { stream: "s".into() })
        );
        assert_eq!(change("a", &sent[0]), None, "its own");
        assert_eq!(change("b", b"not json"), None);
    }
}
