//! Will messages: kept from CONNECT, handed to the core when the connection
//! ends abnormally (the core waits out the MQTT 5 will delay).

use std::sync::Arc;

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
        router.publish_will(session, self.message, self.delay, self.expiry_interval);
    }
}
