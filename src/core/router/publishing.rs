//! Publishing: a message from a client, from the adapters' checked path or
//! from another node, routed through the core and handed on to the streams
//! and the cluster fabric.

use std::sync::Arc;

use crate::core::commit::Commit;
use crate::core::fabric::is_fabric_topic;
use crate::core::message::{Message, QoS};
use crate::core::peer_marks::PeerPosition;
use crate::core::queue::QueueError;
use crate::core::retained_set::RetainedFull;
use crate::core::schema::{dead_letter, Checked, Invalid, OnInvalid};

use super::routing::Source;
use super::Router;

/// Why a message was not taken (the publisher is told; nothing was routed).
#[derive(Debug, thiserror::Error)]
pub enum PublishRefused {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("the message store is full ({held} messages, limit {limit})")]
    StoreFull { held: u64, limit: u64 },
    #[error("the queue of subscriber {client_id} is full")]
    SubscriberFull { client_id: String },
    #[error(transparent)]
    RetainedFull(#[from] RetainedFull),
    /// The payload failed a schema whose `on_invalid` is `reject`.
    #[error(transparent)]
    SchemaInvalid(#[from] Invalid),
    /// The publisher declared the payload UTF-8 and it is not
    /// (`limits.check_utf8_payloads`).
    #[error("the payload is declared UTF-8 text but is not valid UTF-8")]
    PayloadNotUtf8,
    /// Cluster mode: the queue to the other nodes is full (NATS unreachable
    /// or too slow). A QoS ≥ 1 message is refused rather than acknowledged
    /// for this node alone; the publisher sends it again later.
    #[error("the queue to the other cluster nodes is full")]
    ClusterBusy,
}

impl PublishRefused {
    /// True when the payload itself is refused (a schema, UTF-8): the
    /// publisher sent something wrong, the broker is not short of room.
    pub fn is_payload_invalid(&self) -> bool {
        matches!(
            self,
            PublishRefused::SchemaInvalid(_) | PublishRefused::PayloadNotUtf8
        )
    }
}

/// A message taken by [`Router::publish_checked`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Sessions it was queued for (a queue counts as 1).
    pub matched: usize,
    /// What it stored (deliveries to persistent sessions, the queued or
    /// retained copy): the publisher's ack goes out once this is committed.
    pub commit: Commit,
}

impl Router {
    /// The payload checks of a client's message (wills too): a payload
    /// declared UTF-8 that is not, or one that fails a `reject` schema, is
    /// refused; one that fails a `dead-letter` schema comes back bound for
    /// `$dlq/<topic>`; `log` lets it by. (A message from another node was
    /// checked where it was published.)
    ///
    /// With the message comes its payload's JSON when a JSON Schema parsed
    /// it, so selectors read that instead of parsing the payload again.
    fn check_payload(
        &self,
        message: Arc<Message>,
    ) -> Result<(Arc<Message>, Option<serde_json::Value>), PublishRefused> {
        if self.schemas.payload_not_utf8(&message) {
            return Err(PublishRefused::PayloadNotUtf8);
        }
        Ok(match self.schemas.check(&message) {
            Checked::Invalid(invalid) => match invalid.on_invalid {
                OnInvalid::Reject => return Err(PublishRefused::SchemaInvalid(invalid)),
                OnInvalid::DeadLetter => (Arc::new(dead_letter(&message, &invalid)), None),
                OnInvalid::Log => (message, None),
            },
            Checked::Valid(json) => (message, json),
            Checked::Unchecked => (message, None),
        })
    }

    /// Routes one message: stores/clears it as retained if flagged, then queues it
    /// for every matching session (one delivery per session, overlapping
    /// subscriptions merged, unless the session's `DeliveryStyle` asks for one per
    /// subscription). Returns the number of sessions it was queued for.
    /// A message to `$queue/<q>` goes to queue `<q>` instead (counted as 1; a full
    /// queue refuses it with a warning). The payload checks apply (a will is
    /// a client's message too): one refused is dropped (counted by them).
    pub fn publish(&self, message: Arc<Message>) -> usize {
        let Ok((message, json)) = self.check_payload(message) else {
            return 0;
        };
        let topic = Arc::clone(&message.topic);
        let kept = Arc::clone(&message);
        let forward = self.to_forward(&message);
        let _routing = self.routing_gate();
        match self.routing.route(
            message,
            json,
            false,
            Source::Here,
            &self.persistence,
            &self.stats,
        ) {
            Ok((published, wakes)) => {
                self.streams.append(&kept);
                self.forward(forward, !wakes.is_empty());
                // The subscribers' connections last (see `wakes.rs`).
                drop(wakes);
                published.matched
            }
            // A retained cap was logged by the routing, without flooding.
            Err(PublishRefused::RetainedFull(_)) => 0,
            Err(e) => {
                tracing::warn!(topic = %topic, error = %e, "message refused");
                0
            }
        }
    }

    /// Like [`Router::publish`], but a message the broker cannot keep is refused as a
    /// whole and the caller tells the publisher: a full queue, a full store (QoS 1/2),
    /// or a subscriber whose full queue refuses more (overflow policy `refuse`).
    /// Its commit covers what it stored, for the publisher's ack.
    ///
    /// First the payload checks: a payload declared UTF-8 that is not, or one
    /// that fails a `reject` schema, is refused; one that fails a
    /// `dead-letter` schema goes to `$dlq/<topic>` instead; `log` lets it by.
    pub fn publish_checked(&self, message: Arc<Message>) -> Result<Published, PublishRefused> {
        let (message, json) = self.check_payload(message)?;
        if let Err((held, limit)) = self.persistence.check_room(message.qos) {
            return Err(PublishRefused::StoreFull { held, limit });
        }
        let kept = Arc::clone(&message);
        let forward = self.to_forward(&message);
        let must_reach_peers = forward.is_some() && kept.qos != QoS::AtMostOnce;
        if must_reach_peers && !self.routing.fabric().is_none_or(|f| f.has_room()) {
            return Err(PublishRefused::ClusterBusy);
        }
        let routing = self.routing_gate();
        let (mut published, wakes) = self.routing.route(
            message,
            json,
            true,
            Source::Here,
            &self.persistence,
            &self.stats,
        )?;
        published.commit.include(self.streams.append(&kept));
        let seq = self.forward(forward, !wakes.is_empty());
        drop(routing);
        // The subscribers' connections last (see `wakes.rs`).
        drop(wakes);
        if must_reach_peers && seq == 0 {
            // The queue filled since `has_room` (another connection took the
            // last place): routed here, but not for the other nodes, so not
            // acknowledged (a QoS 1 resend may repeat it here, as MQTT allows).
            return Err(PublishRefused::ClusterBusy);
        }
        if kept.qos != QoS::AtMostOnce && seq != 0 {
            // Acknowledged once the other nodes confirmed it stored too.
            published.commit.include(Commit::of_fabric(seq));
        }
        Ok(published)
    }

    /// Held while a message is routed here and numbered or marked (cluster
    /// mode with a store): no commit's marks are made in between
    /// (`Store::routing`). A local message is numbered after its routing.
    fn routing_gate(&self) -> Option<parking_lot::RwLockReadGuard<'_, ()>> {
        self.routing.fabric()?;
        self.persistence.store().map(|store| store.routing())
    }

    /// [`Router::publish_from_peer`], then `marked` (the inbound marks the
    /// message routed), with no commit's marks made in between.
    pub fn publish_from_peer_marked(
        &self,
        message: Arc<Message>,
        at: PeerPosition<'_>,
        marked: impl FnOnce(),
    ) -> Published {
        let _routing = self.routing_gate();
        let published = self.publish_from_peer(message, at);
        marked();
        published
    }

    /// Routes a message another node forwarded (cluster mode) to this node's
    /// sessions, exactly as a local publish, and never back to the fabric;
    /// not to a session that had it already (`at`: its place in its
    /// origin's order; see `core::peer_marks`). Returns the number of
    /// sessions it was queued for and what it stored (the sender's confirm
    /// waits for that commit).
    pub fn publish_from_peer(&self, message: Arc<Message>, at: PeerPosition<'_>) -> Published {
        let none = Published {
            matched: 0,
            commit: Commit::NONE,
        };
        // A retained message reaches this node's subscribers through the
        // cluster state (`apply_cluster_retained`), in the cluster's order: the
        // fabric carries it only for the shared groups (see `to_forward`).
        if message.retain && self.persistence.cluster().is_some() {
            return none;
        }
        match self.routing.route(
            message,
            None,
            false,
            Source::Peer(at),
            &self.persistence,
            &self.stats,
        ) {
            Ok((published, _wakes)) => published,
            Err(PublishRefused::RetainedFull(_)) => none,
            Err(e) => {
                tracing::debug!(error = %e, "message from a peer refused");
                none
            }
        }
    }

    /// The message again when the fabric must carry it (cluster mode, not a
    /// `$SYS` or queue topic): taken before routing consumes it. A retained
    /// message goes too, for the shared groups alone (the cluster's shared
    /// stream captures what the fabric publishes, and their members may be
    /// anywhere): the other nodes' subscribers get it through the cluster
    /// state (`apply_cluster_retained` there), which keeps their indexes in
    /// the cluster's order and races no subscriber, so `publish_from_peer`
    /// routes no retained message.
    fn to_forward(&self, message: &Arc<Message>) -> Option<Arc<Message>> {
        self.routing.fabric()?;
        is_fabric_topic(&message.topic).then(|| Arc::clone(message))
    }

    /// Hands `message` to the fabric; its number there (0: not sent).
    /// `after_local`: routing it woke connections here (`wakes.rs`).
    fn forward(&self, message: Option<Arc<Message>>, after_local: bool) -> u64 {
        match (self.routing.fabric(), message) {
            (Some(fabric), Some(message)) => {
                let seq = fabric.forward(&message, after_local);
                self.routing.numbered(&message, seq);
                seq
            }
            _ => 0,
        }
    }
}
