//! ACK / NACK and the messages still waiting for one.
//!
//! - The message is named by `id` in 1.2 (the MESSAGE's `ack` header) and by
//!   `message-id` in 1.1 and 1.0: ids are unique per connection, so that alone
//!   finds it. A 1.1 `subscription` header is only a hint: clients in the wild
//!   send other values (RabbitMQ accepts them too), so a mismatch is logged at
//!   debug, never refused.
//! - With ack=client the ACK or NACK also covers every earlier unacknowledged
//!   message of the same subscription; with client-individual only that one.
//! - An id this connection never delivered to an acknowledging subscription,
//!   or one already acknowledged, is an error.
//! - A queue message ACKed leaves its queue; NACKed, it goes back to the front of
//!   the queue for the next consumer in turn. A topic message NACKed is dropped:
//!   it was a copy for this subscription only (the spec leaves NACK's effect to
//!   the server).
//! - Inside a transaction the id is checked at once; the effect (and the
//!   RECEIPT) happens at COMMIT.

use std::collections::BTreeMap;
use std::sync::Arc;

use tern_stomp::{Command, Frame, Version};

use super::connection::Connection;
use super::error::StompAdapterError;
use super::headers::required;
use super::op::TxOp;
use super::subscribe::AckMode;
use crate::core::message::Message;

/// A MESSAGE written to an acknowledging subscription and not yet acknowledged.
#[derive(Debug, Clone)]
pub(super) struct Outstanding {
    pub(super) subscription: Arc<str>,
    /// For a queue message: the queue and the message, to settle it there.
    pub(super) queue: Option<(Arc<str>, Arc<Message>)>,
    /// For a streamed message: its stream filter and the message, whose ACK
    /// moves a named consumer's offset on.
    pub(super) stream: Option<(Arc<str>, Arc<Message>)>,
}

/// Unacknowledged messages by message sequence number (delivery order).
#[derive(Debug, Default)]
pub(super) struct Unacked {
    entries: BTreeMap<u64, Outstanding>,
}

impl Unacked {
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn insert(&mut self, seq: u64, outstanding: Outstanding) {
        self.entries.insert(seq, outstanding);
    }

    fn get(&self, seq: u64) -> Option<&Outstanding> {
        self.entries.get(&seq)
    }

    /// Removes message `seq` of `subscription` and, when `cumulative`, every
    /// earlier one of the same subscription. Oldest first.
    fn take(&mut self, seq: u64, subscription: &str, cumulative: bool) -> Vec<Outstanding> {
        if !cumulative {
            return match self.entries.get(&seq) {
                Some(o) if &*o.subscription == subscription => {
                    self.entries.remove(&seq).into_iter().collect()
                }
                _ => Vec::new(),
            };
        }
        let seqs: Vec<u64> = self
            .entries
            .range(..=seq)
            .filter(|(_, o)| &*o.subscription == subscription)
            .map(|(s, _)| *s)
            .collect();
        seqs.into_iter()
            .filter_map(|s| self.entries.remove(&s))
            .collect()
    }

    /// Forgets every message of a subscription (UNSUBSCRIBE); returns them oldest first.
    pub(super) fn remove_subscription(&mut self, subscription: &str) -> Vec<Outstanding> {
        let seqs: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, o)| &*o.subscription == subscription)
            .map(|(s, _)| *s)
            .collect();
        seqs.into_iter()
            .filter_map(|s| self.entries.remove(&s))
            .collect()
    }
}

/// A checked ACK or NACK, applied now or at COMMIT.
#[derive(Debug, Clone)]
pub(super) struct AckRequest {
    seq: u64,
    subscription: Arc<str>,
    nack: bool,
}

/// Checks an ACK/NACK; the dispatcher applies it now or at COMMIT.
pub(super) fn handle_ack(conn: &mut Connection, frame: &Frame) -> Result<TxOp, StompAdapterError> {
    Ok(TxOp::Ack(resolve(conn, frame)?))
}

/// Finds the message an ACK/NACK names; an error if it is not waiting for one.
fn resolve(conn: &Connection, frame: &Frame) -> Result<AckRequest, StompAdapterError> {
    let id = match conn.protocol.version {
        Version::V1_2 => required(frame, "id")?,
        _ => required(frame, "message-id")?,
    };
    let unknown = || StompAdapterError::UnknownAck {
        command: frame.command,
        id: id.chars().take(128).collect(),
    };
    let seq = conn.parse_message_id(id).ok_or_else(unknown)?;
    let entry = conn.protocol.unacked.get(seq).ok_or_else(unknown)?;
    if let Some(hint) = frame.header("subscription") {
        if hint != &*entry.subscription {
            tracing::debug!(
                client_id = %conn.session.client_id,
                command = %frame.command,
                subscription = hint,
                delivered_to = %entry.subscription,
                "ACK/NACK names another subscription than its message's: the message id decides"
            );
        }
    }
    Ok(AckRequest {
        seq,
        subscription: Arc::clone(&entry.subscription),
        nack: frame.command == Command::Nack,
    })
}

/// Settles the messages an ACK/NACK covers. Messages settled meanwhile (twice in
/// one transaction, or their subscription gone) are simply not there any more.
pub(super) fn apply(conn: &mut Connection, request: &AckRequest) {
    let cumulative = conn
        .protocol
        .subscriptions
        .get(&request.subscription)
        .is_some_and(|s| s.ack == AckMode::Client);
    let settled = conn
        .protocol
        .unacked
        .take(request.seq, &request.subscription, cumulative);
    let router = Arc::clone(&conn.ctx.router);
    let queues = router.queues();
    for outstanding in settled {
        if let (Some((filter, message)), false) = (&outstanding.stream, request.nack) {
            conn.ctx
                .router
                .streams()
                .acked(&conn.session, filter, message);
        }
        let Some((queue, message)) = outstanding.queue else {
            if request.nack {
                tracing::debug!(client_id = %conn.session.client_id, subscription = %request.subscription, "topic message NACKed: dropped");
            }
            continue;
        };
        let settled = if request.nack {
            queues.nack(&queue, &conn.session, &message)
        } else {
            queues.ack(&queue, &conn.session, &message)
        };
        conn.stored(settled.unwrap_or_default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outstanding(sub: &str) -> Outstanding {
        Outstanding {
            subscription: Arc::from(sub),
            queue: None,
            stream: None,
        }
    }

    #[test]
    fn cumulative_take_covers_earlier_messages_of_the_same_subscription_only() {
        let mut unacked = Unacked::default();
        for (seq, sub) in [(1, "a"), (2, "b"), (3, "a"), (4, "a")] {
            unacked.insert(seq, outstanding(sub));
        }
        assert_eq!(unacked.take(3, "a", true).len(), 2);
        assert_eq!(unacked.len(), 2);
        assert!(unacked.take(2, "a", false).is_empty(), "wrong subscription");
        assert_eq!(unacked.take(2, "b", false).len(), 1);
        assert_eq!(unacked.remove_subscription("a").len(), 1);
        assert_eq!(unacked.len(), 0);
    }
}
