//! Wills waiting for their delay (MQTT 5 will delay interval). A will is
//! published when its delay passes or its session ends, whichever comes first,
//! and never if a connection resumes the session meanwhile. Wills of persistent
//! sessions are stored, so a broker restart neither loses nor repeats them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;

use crate::core::message::Message;
use crate::store::record::unix_ms_now;

/// A will waiting in the router.
#[derive(Debug)]
pub(crate) struct WaitingWill {
    /// Tells this will from a later one of the same client id.
    token: u64,
    message: Message,
    /// Message expiry of the will, counted from when it is published.
    expiry_interval: Option<u32>,
    /// Whether a copy is in the store (deleted when the will is settled).
    pub(crate) stored: bool,
}

impl WaitingWill {
    pub(crate) fn topic(&self) -> &str {
        &self.message.topic
    }

    /// The message as it goes out: its expiry counts from when it is published,
    /// not from CONNECT.
    pub(crate) fn into_message(self) -> Message {
        let mut message = self.message;
        message.expires_at = self.expiry_interval.and_then(Message::expiry_from_interval);
        message
    }
}

/// What becomes of a waiting will when its wait is cut short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WillAction {
    /// A connection resumed the session: the will is never sent.
    Cancel,
    /// The session ended (expiry, clean start): the will is sent now.
    Publish,
}

/// The wills waiting for their delay, by client id. Only one will per client
/// id can wait: a session has one connection at a time.
#[derive(Debug)]
pub(crate) struct Wills {
    waiting: DashMap<Arc<str>, WaitingWill>,
    next_token: AtomicU64,
}

impl Wills {
    pub(crate) fn new() -> Wills {
        Wills {
            waiting: DashMap::new(),
            next_token: AtomicU64::new(1),
        }
    }

    /// A will not yet waiting, with a token no other will has.
    pub(crate) fn will(
        &self,
        message: Message,
        expiry_interval: Option<u32>,
        stored: bool,
    ) -> WaitingWill {
        WaitingWill {
            token: self.next_token.fetch_add(1, Ordering::Relaxed),
            message,
            expiry_interval,
            stored,
        }
    }

    /// Parks `will`; returns its token and the will it replaced, if any.
    pub(crate) fn park(
        &self,
        client_id: Arc<str>,
        will: WaitingWill,
    ) -> (u64, Option<WaitingWill>) {
        let token = will.token;
        (token, self.waiting.insert(client_id, will))
    }

    /// Takes the will of `client_id` if it is still the one parked with `token`.
    pub(crate) fn take_if_due(
        &self,
        client_id: &str,
        token: u64,
    ) -> Option<(Arc<str>, WaitingWill)> {
        self.waiting.remove_if(client_id, |_, w| w.token == token)
    }

    /// Takes the will of `client_id`, if one waits.
    pub(crate) fn take(&self, client_id: &str) -> Option<(Arc<str>, WaitingWill)> {
        self.waiting.remove(client_id)
    }

    pub(crate) fn count(&self) -> usize {
        self.waiting.len()
    }
}

/// Time from now until the wall-clock instant `due_at_ms`.
pub(crate) fn delay_until(due_at_ms: u64) -> Duration {
    Duration::from_millis(due_at_ms.saturating_sub(unix_ms_now()))
}
