//! Will messages: kept from CONNECT, published when the connection ends
//! abnormally, after the MQTT 5 will delay unless the client comes back first.

use std::sync::Arc;
use std::time::Duration;

use crate::core::message::Message;
use crate::core::router::Router;
use crate::core::session::Session;

#[derive(Debug)]
pub(super) struct PendingWill {
    pub(super) message: Message,
    /// MQTT 5 will delay interval, seconds.
    pub(super) delay: u32,
    /// MQTT 5 message expiry of the will, counted from when it is published.
    pub(super) expiry_interval: Option<u32>,
}

impl PendingWill {
    /// Publishes now, or after the delay (capped by the session's expiry) if the
    /// session is not resumed by then.
    pub(super) fn publish_or_schedule(self, router: &Arc<Router>, session: &Arc<Session>) {
        let delay = self.delay.min(session.expiry_interval());
        if delay == 0 {
            router.publish(Arc::new(self.into_message()));
            return;
        }
        let generation = session.generation();
        let router = Arc::clone(router);
        let session = Arc::clone(session);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(u64::from(delay))).await;
            if session.generation() == generation && !session.is_connected() {
                router.publish(Arc::new(self.into_message()));
            }
        });
    }

    /// The message expiry of a will counts from when it is published, not from CONNECT.
    fn into_message(self) -> Message {
        let mut message = self.message;
        message.expires_at = self.expiry_interval.and_then(Message::expiry_from_interval);
        message
    }
}
