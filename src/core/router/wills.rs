//! Wills waiting for their delay (MQTT 5 will delay interval). A will is
//! published when its delay passes or its session ends, whichever comes first,
//! and never if a connection resumes the session meanwhile. Wills of persistent
//! sessions are stored, so a broker restart neither loses nor repeats them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;

use super::persist::message_from_record;
use super::Router;
use crate::core::message::Message;
use crate::core::session::{MovedAway, Session};
use crate::store::record::{unix_ms_now, WillRecord};

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

/// The router's wills: sent now or after their delay, settled by a resume or
/// a session's end, brought back from the store.
impl Router {
    /// Publishes `message` as the will of `session` now, or after `delay` seconds
    /// (capped by the session's expiry) unless the session is resumed first.
    pub fn publish_will(
        self: &Arc<Self>,
        session: &Arc<Session>,
        message: Message,
        delay: u32,
        expiry_interval: Option<u32>,
    ) {
        let delay = match session.moved_away() {
            // Resumed on another node (its connection was live when that node
            // claimed it): a will must not wait here, the client is back.
            Some(MovedAway::Resumed) => {
                tracing::debug!(client_id = %session.client_id, "session resumed on another node: will cancelled");
                return;
            }
            // Ended by a clean start there: the will goes now, from there
            // when the store is shared (that node read the stored copy).
            Some(MovedAway::Ended) if self.shares_store() => return,
            Some(MovedAway::Ended) => 0,
            None => delay.min(session.expiry_interval()),
        };
        if delay == 0 {
            let will = self.wills.will(message, expiry_interval, false);
            self.publish(Arc::new(will.into_message()));
            self.disarm_will(session);
            return;
        }
        let due_at_ms = unix_ms_now().saturating_add(u64::from(delay) * 1000);
        let stored =
            self.persistence
                .put_will(&session.client_id, &message, expiry_interval, due_at_ms);
        let will = self.wills.will(message, expiry_interval, stored);
        self.wait_for_will(Arc::clone(&session.client_id), will, delay_until(due_at_ms));
    }

    /// Parks `will` and publishes it after `after`, unless it was taken meanwhile.
    pub(super) fn wait_for_will(
        self: &Arc<Self>,
        client_id: Arc<str>,
        will: WaitingWill,
        after: Duration,
    ) {
        let (token, previous) = self.wills.park(Arc::clone(&client_id), will);
        if let Some(previous) = previous {
            self.send_will(&client_id, previous);
        }
        let router = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            if let Some((client_id, will)) = router.wills.take_if_due(&client_id, token) {
                router.send_will(&client_id, will);
            }
        });
    }

    /// Publishes a will taken out of the waiting ones and forgets its stored copy.
    pub(super) fn send_will(&self, client_id: &str, will: WaitingWill) {
        let stored = will.stored;
        tracing::debug!(client_id, topic = %will.topic(), "will published");
        // Published (and its deliveries submitted) before the stored will is removed:
        // a crash in between repeats the will rather than losing it.
        self.publish(Arc::new(will.into_message()));
        if stored {
            self.persistence.delete_will(client_id);
        }
    }

    /// Cuts short the wait of `client_id`'s will, if one waits.
    pub(super) fn settle_will(&self, client_id: &str, action: WillAction) {
        let Some((client_id, will)) = self.wills.take(client_id) else {
            return;
        };
        match action {
            WillAction::Publish => self.send_will(&client_id, will),
            WillAction::Cancel => {
                tracing::debug!(client_id = %client_id, "session resumed: will cancelled");
                if will.stored {
                    self.persistence.delete_will(&client_id);
                }
            }
        }
    }

    /// Wills waiting for their delay (for the admin side and tests).
    pub fn waiting_will_count(&self) -> usize {
        self.wills.count()
    }

    /// Brings back stored wills at start: each waits for what is left of its delay,
    /// or is sent now if that passed or its session is gone.
    pub(super) fn restore_wills(self: &Arc<Self>, wills: Vec<(String, WillRecord)>) -> usize {
        let count = wills.len();
        for (client_id, record) in wills {
            let armed = record.armed_delay();
            let will = self.wills.will(
                message_from_record(record.message),
                record.expiry_interval,
                true,
            );
            let session = self.session(&client_id);
            // The will of a connection that was live when its node died: its
            // delay (capped by the session's expiry) starts now.
            let after = match armed {
                Some(delay) => Duration::from_secs(u64::from(
                    delay.min(session.as_ref().map_or(0, |s| s.expiry_interval())),
                )),
                None => delay_until(record.due_at_ms),
            };
            if after.is_zero() || session.is_none() {
                self.send_will(&client_id, will);
            } else {
                self.wait_for_will(Arc::from(client_id), will, after);
            }
        }
        count
    }
}
