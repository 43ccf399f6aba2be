//! QoS 0 deliveries a connection routes while it handles one read's worth of
//! packets, held per session and pushed together when the read is done: one
//! lock and at most one wake-up per session per read instead of per message.
//! The session's lock and queue are what a publisher's thread and the
//! subscriber's thread both touch, so this is what lets a second core help.
//!
//! Only QoS 0 waits here: it carries no delivery promise, so nothing is
//! acknowledged before it is queued, and a full queue may drop it either way.
//! A delivery that does not wait (QoS 1/2, or a batch already holding
//! `MAX_SESSIONS` sessions) first pushes what its session has waiting, so
//! each session still receives one publisher's messages in order.

use std::sync::Arc;

use crate::core::message::Delivery;
use crate::core::session::Session;

/// Sessions one batch holds; beyond this (a wide fan-out), deliveries are pushed
/// one by one as before, and finding a session stays a short scan.
const MAX_SESSIONS: usize = 8;

/// See the module documentation.
#[derive(Debug, Default)]
pub struct DeliveryBatch {
    sessions: Vec<(Arc<Session>, Vec<Delivery>)>,
}

impl DeliveryBatch {
    fn position(&self, session: &Arc<Session>) -> Option<usize> {
        self.sessions
            .iter()
            .position(|(held, _)| Arc::ptr_eq(held, session))
    }

    /// Holds `delivery` for `session`, or gives it back when the batch is full.
    pub(crate) fn hold(&mut self, session: &Arc<Session>, delivery: Delivery) -> Result<(), Delivery> {
        match self.position(session) {
            Some(i) => self.sessions[i].1.push(delivery),
            None if self.sessions.len() < MAX_SESSIONS => {
                self.sessions.push((Arc::clone(session), vec![delivery]));
            }
            None => return Err(delivery),
        }
        Ok(())
    }

    /// What is held for `session`, taken out of the batch.
    pub(crate) fn take(&mut self, session: &Arc<Session>) -> Option<Vec<Delivery>> {
        let i = self.position(session)?;
        Some(self.sessions.swap_remove(i).1)
    }

    /// Everything held, by session, leaving the batch empty.
    pub(crate) fn drain(&mut self) -> std::vec::Drain<'_, (Arc<Session>, Vec<Delivery>)> {
        self.sessions.drain(..)
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}
