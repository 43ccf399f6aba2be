//! Wills waiting for their delay (MQTT 5 will delay interval). A will is
//! published when its delay passes or its session ends, whichever comes first,
//! and never if a connection resumes the session meanwhile. Wills of persistent
//! sessions are stored, so a broker restart neither loses nor repeats them.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::core::message::Message;
use crate::core::router::Router;
use crate::core::session::Session;
use crate::store::record::{unix_ms_now, MessageRecord, WillRecord};
use crate::store::StoreOp;

/// A will waiting in the router.
#[derive(Debug)]
pub(crate) struct WaitingWill {
    /// Tells this will from a later one of the same client id.
    token: u64,
    message: Message,
    /// Message expiry of the will, counted from when it is published.
    expiry_interval: Option<u32>,
    stored: bool,
}

impl WaitingWill {
    /// The message expiry of a will counts from when it is published, not from CONNECT.
    fn into_message(self) -> Message {
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
        let delay = delay.min(session.expiry_interval());
        let token = self.next_will_token();
        let mut will = WaitingWill {
            token,
            message,
            expiry_interval,
            stored: false,
        };
        if delay == 0 {
            self.publish(Arc::new(will.into_message()));
            return;
        }
        let due_at_ms = unix_ms_now().saturating_add(u64::from(delay) * 1000);
        if let Some(store) = self.store() {
            will.stored = true;
            store.submit([StoreOp::PutWill {
                client_id: session.client_id.to_string(),
                record: WillRecord {
                    message: MessageRecord::from_message(&will.message),
                    expiry_interval,
                    due_at_ms,
                },
            }]);
        }
        self.wait_for_will(Arc::clone(&session.client_id), will, delay_ms(due_at_ms));
    }

    fn next_will_token(&self) -> u64 {
        self.will_tokens.fetch_add(1, Ordering::Relaxed)
    }

    /// Parks `will` and publishes it after `after`, unless it was taken meanwhile.
    fn wait_for_will(self: &Arc<Self>, client_id: Arc<str>, will: WaitingWill, after: Duration) {
        let token = will.token;
        if let Some(previous) = self.wills.insert(Arc::clone(&client_id), will) {
            // Only one will per client id can wait: a session has one connection at a time.
            self.send_will(&client_id, previous);
        }
        let router = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            if let Some((client_id, will)) =
                router.wills.remove_if(&client_id, |_, w| w.token == token)
            {
                router.send_will(&client_id, will);
            }
        });
    }

    /// Publishes a will taken out of the waiting map and forgets its stored copy.
    fn send_will(&self, client_id: &str, will: WaitingWill) {
        let stored = will.stored;
        tracing::debug!(client_id, topic = %will.message.topic, "will published");
        // Published (and its deliveries submitted) before the stored will is removed:
        // a crash in between repeats the will rather than losing it.
        self.publish(Arc::new(will.into_message()));
        if let (true, Some(store)) = (stored, self.store()) {
            store.submit([StoreOp::DeleteWill {
                client_id: client_id.to_string(),
            }]);
        }
    }

    /// Cuts short the wait of `client_id`'s will, if one waits.
    pub(crate) fn settle_will(&self, client_id: &str, action: WillAction) {
        let Some((client_id, will)) = self.wills.remove(client_id) else {
            return;
        };
        match action {
            WillAction::Publish => self.send_will(&client_id, will),
            WillAction::Cancel => {
                tracing::debug!(client_id = %client_id, "session resumed: will cancelled");
                if let (true, Some(store)) = (will.stored, self.store()) {
                    store.submit([StoreOp::DeleteWill {
                        client_id: client_id.to_string(),
                    }]);
                }
            }
        }
    }

    /// Wills waiting for their delay (for the admin side and tests).
    pub fn waiting_will_count(&self) -> usize {
        self.wills.len()
    }

    /// Brings back stored wills at start: each waits for what is left of its delay,
    /// or is sent now if that passed or its session is gone.
    pub(crate) fn restore_wills(self: &Arc<Self>, wills: Vec<(String, WillRecord)>) -> usize {
        let count = wills.len();
        for (client_id, record) in wills {
            let will = WaitingWill {
                token: self.next_will_token(),
                message: record.message.into_message(),
                expiry_interval: record.expiry_interval,
                stored: true,
            };
            let after = delay_ms(record.due_at_ms);
            if after.is_zero() || self.session(&client_id).is_none() {
                self.send_will(&client_id, will);
            } else {
                self.wait_for_will(Arc::from(client_id), will, after);
            }
        }
        count
    }
}

/// Time from now until the wall-clock instant `due_at_ms`.
fn delay_ms(due_at_ms: u64) -> Duration {
    Duration::from_millis(due_at_ms.saturating_sub(unix_ms_now()))
}
