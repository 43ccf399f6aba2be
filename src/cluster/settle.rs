//! Settling one JetStream message of a queue or shared group (`queues.rs`):
//! a queue message, or a shared group's message or batch (`wire.rs`), which
//! each of its messages holds while this node holds it.
//!
//! Design:
//! - Settled when the last of its messages is done or went back: acked when
//!   all are done; when all went back, settled as the strongest way one went
//!   back (a nak at once, a delayed nak, a term): the whole is redelivered.
//! - A batch partly done and partly gone back (a member gone, NACK, no member
//!   here wants one): acked, after its messages that went back were published
//!   again, as one batch (awaited), on the group's redelivery subject
//!   (`shared::redelivery_subject`), which only that group's consumer
//!   captures. So the done ones are not delivered again (exactly once), and
//!   the rest reach the group's members on any node. The times it was offered
//!   go on in the [`OFFERS_HEADER`] header. If that publish fails, the batch
//!   is nak'd whole (at least once).

use std::sync::Arc;
use std::time::Instant;

use async_nats::jetstream::{self, AckKind};
use parking_lot::Mutex;

use super::wire::{self, Origin};
use super::Cluster;
use crate::core::message::Message;

/// Header of a batch published again: how often its messages were offered.
pub const OFFERS_HEADER: &str = "Tern-Offers";

/// One JetStream message and what became of its messages.
pub(super) struct Settle {
    acker: jetstream::message::Acker,
    /// A shared group's batch: where its messages that went back go when the
    /// rest is done.
    again: Option<String>,
    /// Times it was handed out (with the count of a batch published again).
    offers: u64,
    /// Its messages.
    count: usize,
    back: Mutex<Back>,
}

#[derive(Default)]
struct Back {
    /// The strongest way one of its messages went back; None: all done.
    kind: Option<AckKind>,
    /// How many went back.
    count: usize,
    /// Those to hand out again (a termed one is dropped).
    messages: Vec<Arc<Message>>,
}

impl Settle {
    pub(super) fn new(
        acker: jetstream::message::Acker,
        again: Option<String>,
        offers: u64,
        count: usize,
    ) -> Arc<Settle> {
        Arc::new(Settle {
            acker,
            again,
            offers,
            count,
            back: Mutex::new(Back::default()),
        })
    }

    /// `message`, one of its messages, went back as `kind`.
    pub(super) fn went_back(&self, kind: AckKind, message: &Arc<Message>) {
        let rank = |kind: &AckKind| match kind {
            AckKind::Nak(None) => 3,
            AckKind::Nak(Some(_)) => 2,
            _ => 1,
        };
        let mut back = self.back.lock();
        back.count += 1;
        if !matches!(kind, AckKind::Term) {
            back.messages.push(Arc::clone(message));
        }
        if back.kind.as_ref().is_none_or(|now| rank(&kind) > rank(now)) {
            back.kind = Some(kind);
        }
    }

    /// Tells JetStream it is still being worked on.
    pub(super) async fn progress(&self) {
        let _ = self.acker.ack_with(AckKind::Progress).await;
    }

    /// Settles it on JetStream, once nothing holds it any more (see the
    /// module's doc comment); how many of its messages were acked.
    pub(super) async fn settle(self, cluster: &Cluster) -> usize {
        let Settle {
            acker,
            again,
            offers,
            count,
            back,
        } = self;
        let back = back.into_inner();
        let Some(kind) = back.kind else {
            return if acker.ack().await.is_ok() { count } else { 0 };
        };
        if let Some(subject) = again.filter(|_| back.count < count) {
            if back.messages.is_empty()
                || publish_again(cluster, subject, offers, &back.messages).await
            {
                let acked = acker.ack().await.is_ok();
                return if acked { count - back.count } else { 0 };
            }
        }
        let _ = acker.ack_with(kind).await;
        0
    }
}

/// Publishes `messages` (of one topic) as one batch on `subject`, awaiting
/// JetStream's ack; false when it did not come.
async fn publish_again(
    cluster: &Cluster,
    subject: String,
    offers: u64,
    messages: &[Arc<Message>],
) -> bool {
    let node = Arc::clone(cluster.node());
    let origin = Origin {
        node: &node,
        epoch: 0,
        seq: 0,
    };
    let now = Instant::now();
    let mut batch = wire::Batch::default();
    for message in messages {
        batch.push(message, origin, now);
    }
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(OFFERS_HEADER, offers.to_string().as_str());
    let published = match cluster
        .jetstream()
        .publish_with_headers(subject, headers, batch.take())
        .await
    {
        Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(error) = &published {
        tracing::debug!(%error, "cluster: part of a batch could not be published again; the batch is redelivered whole");
    }
    published.is_ok()
}
