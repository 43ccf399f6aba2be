//! BEGIN / COMMIT / ABORT: SENDs and ACKs inside a transaction take effect at
//! COMMIT, in the order they arrived, and vanish on ABORT or disconnect.
//!
//! A deferred frame's RECEIPT waits for the end of its transaction (as RabbitMQ
//! does), since nothing happened when it arrived: at COMMIT each one follows its
//! frame's effect, in frame order, before the COMMIT's own RECEIPT, and all of
//! them go out only after what the transaction stored is committed (a RECEIPT
//! means done and durable); at ABORT they go out before the ABORT's RECEIPT.
//!
//! Transactions are bounded per connection (open ones, frames and body bytes
//! each) so a client cannot make the broker buffer without limit; going over is
//! an error. What they hold also counts against the broker-wide buffer budget
//! (`limits.max_buffered_bytes`), until the transaction or the connection ends. A COMMIT whose SEND finds its queue full stops there with an ERROR:
//! what came before it in the transaction has taken effect.

use std::sync::Arc;

use tern_stomp::Frame;

use super::connection::Connection;
use super::error::StompAdapterError;
use super::headers::required;
use super::op::TxOp;
use crate::adapter::budget::{BufferBudget, Reservation};
use crate::core::message::Message;

/// Transactions open at once on one connection.
pub(super) const MAX_OPEN: usize = 64;
/// Frames (SEND, ACK, NACK) in one transaction.
pub(super) const MAX_FRAMES: usize = 10_000;
/// Body bytes of the SENDs of one transaction (and the receipt ids it holds).
pub(super) const MAX_BYTES: usize = 64 * 1024 * 1024;

/// What a deferred frame holds besides its body (and its topic and headers,
/// which most frames have few bytes of), as it counts against the buffer budget.
const FRAME_OVERHEAD: usize = std::mem::size_of::<Deferred>() + std::mem::size_of::<Message>() + 64;

/// A deferred frame and the `receipt` it asked for, answered when the transaction ends.
#[derive(Debug)]
pub(super) struct Deferred {
    op: TxOp,
    receipt: Option<String>,
}

impl Deferred {
    pub(super) fn into_parts(self) -> (TxOp, Option<String>) {
        (self.op, self.receipt)
    }
}

#[derive(Debug, Default)]
struct Transaction {
    ops: Vec<Deferred>,
    /// Body bytes and receipt ids held: both wait for the end of the transaction.
    bytes: usize,
    /// Its share of the broker's buffer budget, given back when it ends (or
    /// the connection does); taken at its first frame.
    reservation: Option<Reservation>,
}

/// A connection's open transactions: at most [`MAX_OPEN`], so a list (smaller than
/// a map in every idle connection) searched by id.
#[derive(Debug, Default)]
pub(super) struct Transactions {
    open: Vec<(String, Transaction)>,
}

impl Transactions {
    fn begin(&mut self, id: &str) -> Result<(), StompAdapterError> {
        if self.find(id).is_some() {
            return Err(StompAdapterError::DuplicateTransaction(clip(id)));
        }
        if self.open.len() >= MAX_OPEN {
            return Err(StompAdapterError::TransactionLimit(
                "too many open transactions on one connection (limit 64)",
            ));
        }
        self.open.push((id.to_string(), Transaction::default()));
        Ok(())
    }

    fn find(&self, id: &str) -> Option<usize> {
        self.open.iter().position(|(open, _)| open == id)
    }

    /// Defers a frame of transaction `id`; `bytes` is its body size; `receipt`
    /// is answered when the transaction ends. The frame takes its share of `budget`.
    pub(super) fn push(
        &mut self,
        id: &str,
        op: TxOp,
        bytes: usize,
        receipt: Option<String>,
        budget: &Arc<BufferBudget>,
    ) -> Result<(), StompAdapterError> {
        let bytes = bytes.saturating_add(receipt.as_ref().map_or(0, String::len));
        let index = self
            .find(id)
            .ok_or_else(|| StompAdapterError::UnknownTransaction(clip(id)))?;
        let tx = &mut self.open[index].1;
        if tx.ops.len() >= MAX_FRAMES {
            return Err(StompAdapterError::TransactionLimit(
                "too many frames in one transaction (limit 10000)",
            ));
        }
        if tx.bytes.saturating_add(bytes) > MAX_BYTES {
            return Err(StompAdapterError::TransactionLimit(
                "transaction bodies exceed 64 MiB",
            ));
        }
        let charged = bytes.saturating_add(FRAME_OVERHEAD);
        tx.reservation
            .get_or_insert_with(|| Reservation::new(budget))
            .grow(charged)?;
        tx.bytes += bytes;
        tx.ops.push(Deferred { op, receipt });
        Ok(())
    }

    fn end(&mut self, id: &str) -> Result<Vec<Deferred>, StompAdapterError> {
        self.find(id)
            .map(|index| self.open.swap_remove(index).1.ops)
            .ok_or_else(|| StompAdapterError::UnknownTransaction(clip(id)))
    }
}

fn clip(id: &str) -> String {
    id.chars().take(128).collect()
}

/// Defers the current frame into transaction `id`; its `receipt` (if any) now
/// waits for the end of the transaction. On error the receipt stays with the
/// frame, for the ERROR's `receipt-id`.
pub(super) fn defer(
    conn: &mut Connection,
    id: &str,
    op: TxOp,
    bytes: usize,
) -> Result<(), StompAdapterError> {
    let budget = &conn.ctx.buffer_budget;
    conn.protocol
        .transactions
        .push(id, op, bytes, conn.protocol.receipt.clone(), budget)?;
    conn.protocol.receipt = None;
    Ok(())
}

pub(super) fn handle_begin(conn: &mut Connection, frame: &Frame) -> Result<(), StompAdapterError> {
    let id = required(frame, "transaction")?;
    conn.protocol.transactions.begin(id)
}

/// Ends transaction `id`; returns its frames, in order, for the dispatcher to apply.
pub(super) fn handle_commit(
    conn: &mut Connection,
    frame: &Frame,
) -> Result<Vec<Deferred>, StompAdapterError> {
    let id = required(frame, "transaction")?;
    let ops = conn.protocol.transactions.end(id)?;
    tracing::debug!(client_id = %conn.session.client_id, transaction = id, frames = ops.len(), "commit");
    Ok(ops)
}

pub(super) fn handle_abort(conn: &mut Connection, frame: &Frame) -> Result<(), StompAdapterError> {
    let id = required(frame, "transaction")?;
    let ops = conn.protocol.transactions.end(id)?;
    tracing::debug!(client_id = %conn.session.client_id, transaction = id, frames = ops.len(), "abort");
    for receipt in ops.into_iter().filter_map(|deferred| deferred.receipt) {
        conn.send_receipt(receipt);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::core::message::Message;

    #[test]
    fn begin_push_end_and_their_errors() {
        let budget = Arc::new(BufferBudget::new(0));
        let mut txs = Transactions::default();
        txs.begin("t").unwrap();
        assert!(matches!(
            txs.begin("t"),
            Err(StompAdapterError::DuplicateTransaction(_))
        ));
        assert!(matches!(
            txs.push(
                "nope",
                TxOp::Send(Arc::new(Message::new(
                    "a",
                    Default::default(),
                    crate::core::message::QoS::AtMostOnce,
                    false
                ))),
                1,
                None,
                &budget
            ),
            Err(StompAdapterError::UnknownTransaction(_))
        ));
        assert!(matches!(
            txs.push(
                "t",
                TxOp::Send(Arc::new(Message::new(
                    "a",
                    Default::default(),
                    crate::core::message::QoS::AtMostOnce,
                    false
                ))),
                MAX_BYTES + 1,
                None,
                &budget
            ),
            Err(StompAdapterError::TransactionLimit(_))
        ));
        assert!(txs.end("t").unwrap().is_empty());
        assert!(matches!(
            txs.end("t"),
            Err(StompAdapterError::UnknownTransaction(_))
        ));
    }

    fn send_op() -> TxOp {
        TxOp::Send(Arc::new(Message::new(
            "a",
            Default::default(),
            crate::core::message::QoS::AtMostOnce,
            false,
        )))
    }

    #[test]
    fn open_transactions_hold_the_buffer_budget_until_they_end() {
        let budget = Arc::new(BufferBudget::new(10_000 + 2 * FRAME_OVERHEAD));
        let mut txs = Transactions::default();
        txs.begin("a").unwrap();
        txs.begin("b").unwrap();
        txs.push("a", send_op(), 6_000, None, &budget).unwrap();
        assert!(matches!(
            txs.push("b", send_op(), 6_000, None, &budget),
            Err(StompAdapterError::OverBudget(_))
        ));
        txs.push("b", send_op(), 4_000, None, &budget).unwrap();
        assert_eq!(budget.held(), 10_000 + 2 * FRAME_OVERHEAD);
        txs.end("a").unwrap();
        assert_eq!(budget.held(), 4_000 + FRAME_OVERHEAD);
        drop(txs);
        assert_eq!(budget.held(), 0, "given back when the connection ends");
    }

    #[test]
    fn open_transactions_are_bounded() {
        let mut txs = Transactions::default();
        for i in 0..MAX_OPEN {
            txs.begin(&i.to_string()).unwrap();
        }
        assert!(matches!(
            txs.begin("one more"),
            Err(StompAdapterError::TransactionLimit(_))
        ));
    }
}
