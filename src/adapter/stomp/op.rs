//! What a checked SEND or ACK/NACK does. Its handler (`send.rs`, `ack.rs`)
//! checks the frame and returns the operation; the dispatcher applies it now,
//! or defers it into the frame's `transaction` (`transaction.rs`), to be applied
//! here at COMMIT. So handlers and transactions never call each other.

use std::sync::Arc;

use tern_stomp::Frame;

use super::ack::{self, AckRequest};
use super::connection::Connection;
use super::error::StompAdapterError;
use super::send;
use super::transaction::{self, Deferred};
use crate::core::message::Message;

/// The effect of one SEND, ACK or NACK frame.
#[derive(Debug)]
pub(super) enum TxOp {
    Send(Arc<Message>),
    Ack(AckRequest),
}

impl TxOp {
    /// Body bytes a transaction holds for this operation until it ends.
    pub(super) fn bytes(&self) -> usize {
        match self {
            TxOp::Send(message) => message.payload.len(),
            TxOp::Ack(_) => 0,
        }
    }
}

/// Applies `op` now, or defers it when `frame` names a transaction.
pub(super) fn apply_or_defer(
    conn: &mut Connection,
    frame: &Frame,
    op: TxOp,
) -> Result<(), StompAdapterError> {
    match frame.header("transaction") {
        Some(id) => {
            let bytes = op.bytes();
            transaction::defer(conn, id, op, bytes)
        }
        None => apply(conn, op),
    }
}

fn apply(conn: &mut Connection, op: TxOp) -> Result<(), StompAdapterError> {
    match op {
        TxOp::Send(message) => send::publish(conn, message),
        TxOp::Ack(request) => {
            ack::apply(conn, &request);
            Ok(())
        }
    }
}

/// Applies a committed transaction's frames in order, each one's RECEIPT after its effect.
pub(super) fn apply_committed(
    conn: &mut Connection,
    committed: Vec<Deferred>,
) -> Result<(), StompAdapterError> {
    for deferred in committed {
        let (op, receipt) = deferred.into_parts();
        apply(conn, op)?;
        if let Some(receipt) = receipt {
            conn.send_receipt(receipt);
        }
    }
    Ok(())
}
