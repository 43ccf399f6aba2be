//! One bridge's task: its core session attached for the broker's life, and
//! the link to the remote opened, served and reopened with backoff and jitter.
//!
//! Outbound: deliveries of the core session (subscribed to the local side of
//! the `out` rules) are sent as PUBLISH with the packet ids the core gave and
//! stored; an acknowledgement from the remote finishes them in the core. After
//! a reconnect (or a restart, the session restored from the store) what was
//! sent and not acknowledged is sent again first: PUBLISH with DUP, or PUBREL.
//! Inbound: a PUBLISH from the remote is published here as the bridge's
//! session, and acknowledged (PUBACK / PUBREC) only once the core committed it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tern_mqtt::{Ack, Packet, Properties, Publish, PublishRef};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::link::{self, Link, LinkError, MAX_PACKET};
use super::rule::{inbound_topic, outbound_topic, TopicRule};
use super::settings::BridgeSettings;
use super::status::BridgeStatus;
use crate::core::commit::Commit;
use crate::core::exceptions::Exceptions;
use crate::core::message::{Delivery, Message, MessageProperties, QoS};
use crate::core::router::Router;
use crate::core::session::BRIDGE_OWNER;
use crate::core::session::{InflightStage, KickReason, Session, SessionOwner, SubscriptionOptions};
use crate::core::topic::Filter;

/// Deliveries taken from the session per lock.
const BATCH: usize = 256;

/// What one bridge runs with.
pub(super) struct Bridge {
    pub settings: BridgeSettings,
    pub rules: Vec<TopicRule>,
    pub router: Arc<Router>,
    pub status: Arc<BridgeStatus>,
    pub shutdown: CancellationToken,
}

/// How serving a link ended without a link error.
enum Ended {
    /// The broker is shutting down (or the session was taken away).
    Stop,
}

impl Bridge {
    /// Runs until shutdown.
    pub(super) async fn run(self) {
        let client_id: Arc<str> = Arc::from(self.settings.local_client_id());
        let attached = match self.router.attach(
            &client_id,
            &SessionOwner::User(Arc::from(BRIDGE_OWNER)),
            false,
            u32::MAX,
        ) {
            Ok(attached) => attached,
            Err(e) => {
                tracing::error!(bridge = %self.settings.name, error = %e, "bridge cannot attach its session");
                return;
            }
        };
        let session = Arc::clone(&attached.session);
        session.set_limits(self.settings.queue_limits());
        self.status.set_session(Arc::clone(&session));
        let mut commit = attached.commit;
        // A restored session keeps the filters of rules since removed from the config.
        let wanted: Vec<String> = self
            .rules
            .iter()
            .filter(|r| r.direction.outbound())
            .map(|r| r.local_filter())
            .collect();
        for (filter, _) in session.subscriptions() {
            if !wanted.iter().any(|w| w == filter.as_str()) {
                if let Some(removed) = self.router.unsubscribe(&session, filter.as_str()) {
                    commit.include(removed);
                }
            }
        }
        for rule in self.rules.iter().filter(|r| r.direction.outbound()) {
            let Ok(filter) = Filter::parse(&rule.local_filter()) else {
                continue; // checked with the config
            };
            let options = local_options(rule.qos);
            commit.include(self.router.subscribe(&session, filter, options).commit);
        }
        let _ = self.router.wait_committed(commit).await;
        let mut kicked = attached.kicked;
        let mut failures: u32 = 0;
        loop {
            let outcome = tokio::select! {
                outcome = self.serve_link(&session, &mut kicked, &mut failures) => outcome,
                _ = self.shutdown.cancelled() => Ok(Ended::Stop),
            };
            match outcome {
                Ok(Ended::Stop) => break,
                Err(e) => {
                    if self.status.is_connected() {
                        tracing::warn!(bridge = %self.settings.name, error = %e, "bridge link lost");
                    } else if failures == 0 {
                        tracing::warn!(bridge = %self.settings.name, error = %e, "bridge cannot connect");
                    }
                    self.status.link_down(e.to_string());
                }
            }
            let wait = self.backoff(failures);
            failures = failures.saturating_add(1);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = &mut kicked => break,
                _ = self.shutdown.cancelled() => break,
            }
        }
        self.status.link_down("stopped".into());
        self.router.detach(&session, attached.connection_id);
    }

    /// Wait before the next attempt: doubled per failure from the minimum to
    /// the maximum, then a random half to all of it, so bridges of many edge
    /// brokers do not all come back at once.
    fn backoff(&self, failures: u32) -> Duration {
        let min = self.settings.reconnect_min_secs.max(1) * 1000;
        let max = self.settings.reconnect_max_secs.max(1) * 1000;
        let full = min.saturating_mul(1u64 << failures.min(20)).min(max);
        let jittered = full / 2 + rand::random_range(0..=full / 2);
        Duration::from_millis(jittered)
    }

    /// Opens the link and serves it until it ends.
    async fn serve_link(
        &self,
        session: &Arc<Session>,
        kicked: &mut oneshot::Receiver<KickReason>,
        failures: &mut u32,
    ) -> Result<Ended, LinkError> {
        let link = link::open(&self.settings).await?;
        tracing::info!(bridge = %self.settings.name, address = %link.address, "bridge connected");
        self.status.link_up(&link.address);
        *failures = 0;
        let mut served = Served {
            bridge: self,
            session,
            link,
            write_buf: BytesMut::with_capacity(64 * 1024),
            commit: Commit::NONE,
            subscribe_id: None,
            sent_qos0: 0,
        };
        served.start()?;
        served.serve(kicked).await
    }
}

/// Options of the bridge session's local subscriptions: no-local (what came
/// in over this bridge does not go back out over it), retain flags kept,
/// retained messages sent at each link-up rather than at subscribe.
fn local_options(qos: u8) -> SubscriptionOptions {
    SubscriptionOptions {
        qos: QoS::from_u8(qos).unwrap_or(QoS::AtMostOnce),
        no_local: true,
        retain_as_published: true,
        retain_handling: 2,
        subscription_id: None,
        exceptions: Exceptions::NONE,
        selector: None,
    }
}

/// One open link being served.
struct Served<'a> {
    bridge: &'a Bridge,
    session: &'a Arc<Session>,
    link: Link,
    write_buf: BytesMut,
    /// What the buffered output depends on: the next write waits for it.
    commit: Commit,
    /// Packet id of the SUBSCRIBE not yet acknowledged: nothing else is sent meanwhile.
    subscribe_id: Option<u16>,
    sent_qos0: u64,
}

impl Served<'_> {
    fn send(&mut self, packet: &Packet) -> Result<(), LinkError> {
        tern_mqtt::encode(packet, self.link.version, &mut self.write_buf)?;
        Ok(())
    }

    /// Subscribes on the remote; then resends what is unacknowledged and
    /// queues the current retained messages (see README "Bridges", reconcile).
    fn start(&mut self) -> Result<(), LinkError> {
        // An id no in-flight delivery holds.
        let in_flight: Vec<u16> = self
            .session
            .inflight_in_order()
            .iter()
            .map(|(id, _)| *id)
            .collect();
        let id = (1..=u16::MAX)
            .find(|id| !in_flight.contains(id))
            .unwrap_or(1);
        match link::subscribe_packet(&self.bridge.rules, id) {
            Some(packet) => {
                self.send(&packet)?;
                self.subscribe_id = Some(id);
            }
            None => self.after_subscribed()?,
        }
        Ok(())
    }

    fn after_subscribed(&mut self) -> Result<(), LinkError> {
        let now = Instant::now();
        for (packet_id, entry) in self.session.inflight_in_order() {
            match entry.stage {
                InflightStage::Sent => {
                    self.write_delivery(&entry.delivery, Some(packet_id), true, now)?
                }
                InflightStage::Released => self.send(&Packet::PubRel(ack(packet_id)))?,
            }
        }
        // Reconcile: the remote gets the current retained messages of every
        // out rule, after what was queued (sets and clears made meanwhile).
        let router = &self.bridge.router;
        for rule in self.bridge.rules.iter().filter(|r| r.direction.outbound()) {
            let Ok(filter) = Filter::parse(&rule.local_filter()) else {
                continue;
            };
            let retained: Vec<Arc<Message>> = router
                .retained_matching(&filter, &Exceptions::NONE)
                .into_iter()
                .filter(|m| m.publisher.as_deref() != Some(&*self.session.client_id))
                .collect();
            if !retained.is_empty() {
                router.send_retained(self.session, &filter, &local_options(rule.qos), retained);
            }
        }
        Ok(())
    }

    async fn serve(
        &mut self,
        kicked: &mut oneshot::Receiver<KickReason>,
    ) -> Result<Ended, LinkError> {
        let keep_alive = Duration::from_secs(u64::from(self.bridge.settings.keep_alive_secs));
        let mut last_write = Instant::now();
        let mut ping_sent: Option<Instant> = None;
        let mut batch: Vec<(Delivery, Option<u16>)> = Vec::with_capacity(BATCH);
        loop {
            let window_open =
                self.subscribe_id.is_none() && self.session.inflight_len() < self.link.send_window;
            if window_open {
                self.take_deliveries(&mut batch)?;
            }
            if !self.write_buf.is_empty() {
                let commit = self.commit.take();
                if !commit.is_none() {
                    self.bridge
                        .router
                        .wait_committed(commit)
                        .await
                        .map_err(|e| LinkError::Local(e.to_string()))?;
                }
                self.link.stream.write_all(&self.write_buf).await?;
                self.write_buf.clear();
                self.bridge
                    .status
                    .add_sent(std::mem::take(&mut self.sent_qos0));
                last_write = Instant::now();
            }
            let ping_at = match (keep_alive.is_zero(), ping_sent) {
                (true, _) => None,
                (false, None) => Some(last_write + keep_alive),
                // No PINGRESP within a keep-alive: the link is dead.
                (false, Some(sent)) => Some(sent + keep_alive),
            };
            let ping_sleep = async {
                match ping_at {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut *kicked => return Ok(Ended::Stop),
                read = self.link.stream.read_buf(&mut self.link.read_buf) => {
                    if read? == 0 {
                        return Err(LinkError::Closed);
                    }
                    while let Some(packet) =
                        tern_mqtt::decode(&mut self.link.read_buf, self.link.version, MAX_PACKET)?
                    {
                        if matches!(packet, Packet::PingResp) {
                            ping_sent = None;
                        }
                        self.handle(packet)?;
                    }
                }
                _ = self.session.notified(), if window_open => {}
                _ = ping_sleep => {
                    if ping_sent.is_some() {
                        return Err(LinkError::Timeout);
                    }
                    self.send(&Packet::PingReq)?;
                    ping_sent = Some(Instant::now());
                }
            }
        }
    }

    fn take_deliveries(
        &mut self,
        batch: &mut Vec<(Delivery, Option<u16>)>,
    ) -> Result<(), LinkError> {
        let now = Instant::now();
        let taken = self
            .session
            .take_deliverable(BATCH, self.link.send_window, now, batch);
        if taken.aged > 0 {
            // One line per batch taken, not per message.
            tracing::info!(
                bridge = %self.bridge.settings.name,
                dropped = taken.aged,
                max_queued_age = self.bridge.settings.max_queued_age.as_deref().unwrap_or(""),
                "bridge dropped queued messages older than max_queued_age"
            );
        }
        // A delivery's packet id is stored before its PUBLISH goes out, so a
        // resend after a restart uses the same id (QoS 2 exactly once).
        self.commit.include(taken.commit);
        for (delivery, packet_id) in batch.drain(..) {
            self.write_delivery(&delivery, packet_id, false, now)?;
            if packet_id.is_none() {
                self.sent_qos0 += 1;
            }
        }
        Ok(())
    }

    /// Appends the PUBLISH of `delivery` to the remote topic its rule maps it to.
    fn write_delivery(
        &mut self,
        delivery: &Delivery,
        packet_id: Option<u16>,
        dup: bool,
        now: Instant,
    ) -> Result<(), LinkError> {
        let message = &delivery.message;
        let Some((topic, _)) = outbound_topic(&self.bridge.rules, &message.topic) else {
            // Retained from a rule since removed: finish it so it does not block.
            if let Some(id) = packet_id {
                self.session.finish_inflight(id, InflightStage::Sent);
            }
            return Ok(());
        };
        let properties = wire_properties(message, now, self.link.version.is_v5());
        let publish = PublishRef {
            dup,
            qos: wire_qos(delivery.qos),
            retain: delivery.retain,
            topic: &topic,
            packet_id,
            properties: &properties,
            payload: &message.payload,
        };
        tern_mqtt::encode_publish(&publish, self.link.version, &mut self.write_buf)?;
        Ok(())
    }

    fn handle(&mut self, packet: Packet) -> Result<(), LinkError> {
        match packet {
            Packet::Publish(publish) => self.inbound(publish)?,
            Packet::PubAck(a) => {
                if self
                    .session
                    .finish_inflight(a.packet_id, InflightStage::Sent)
                    .is_some()
                {
                    self.bridge.status.add_sent(1);
                }
            }
            Packet::PubRec(a) => {
                if a.reason >= 0x80 {
                    self.session
                        .finish_inflight(a.packet_id, InflightStage::Sent);
                    return Ok(());
                }
                if let Some(commit) = self.session.release_inflight(a.packet_id) {
                    // The PUBREL goes out once the release stage is stored.
                    self.commit.include(commit);
                }
                self.send(&Packet::PubRel(ack(a.packet_id)))?;
            }
            Packet::PubComp(a) => {
                if self
                    .session
                    .finish_inflight(a.packet_id, InflightStage::Released)
                    .is_some()
                {
                    self.bridge.status.add_sent(1);
                }
            }
            Packet::PubRel(a) => {
                if let Some(commit) = self.session.release_incoming_qos2(a.packet_id) {
                    self.commit.include(commit);
                }
                self.send(&Packet::PubComp(ack(a.packet_id)))?;
            }
            Packet::SubAck(suback) => {
                if self.subscribe_id == Some(suback.packet_id) {
                    self.subscribe_id = None;
                    if suback.codes.iter().any(|code| *code >= 0x80) {
                        tracing::warn!(bridge = %self.bridge.settings.name, codes = ?suback.codes, "remote refused some bridge subscriptions");
                    }
                    self.after_subscribed()?;
                }
            }
            Packet::PingResp | Packet::UnsubAck(_) => {}
            Packet::Disconnect(d) => return Err(LinkError::Disconnected(d.reason)),
            Packet::Connect(_)
            | Packet::ConnAck(_)
            | Packet::Subscribe(_)
            | Packet::Unsubscribe(_)
            | Packet::PingReq
            | Packet::Auth(_) => {
                return Err(LinkError::Protocol("client-only packet from the remote"))
            }
        }
        Ok(())
    }

    /// A message from the remote, published here as the bridge's session.
    fn inbound(&mut self, publish: Publish) -> Result<(), LinkError> {
        let qos = core_qos(publish.qos);
        let packet_id = publish.packet_id.unwrap_or(0);
        let router = &self.bridge.router;
        if qos == QoS::ExactlyOnce {
            match self.session.record_incoming_qos2(packet_id) {
                Some(commit) => self.commit.include(commit),
                None => {
                    // Already taken: acknowledge again, do not publish twice.
                    self.commit.include(router.latest_commit());
                    return self.send(&Packet::PubRec(ack(packet_id)));
                }
            }
        }
        if let Some(topic) = inbound_topic(&self.bridge.rules, &publish.topic) {
            let message = core_message(topic, publish, qos, &self.session.client_id);
            match router.publish_checked(Arc::new(message)) {
                Ok(published) => self.commit.include(published.commit),
                Err(refused) => {
                    // Not acknowledged: the remote sends it again on the next link.
                    if qos == QoS::ExactlyOnce {
                        self.session.release_incoming_qos2(packet_id);
                    }
                    return Err(LinkError::Local(refused.to_string()));
                }
            }
            self.bridge.status.add_received(1);
        }
        match qos {
            QoS::AtMostOnce => Ok(()),
            QoS::AtLeastOnce => self.send(&Packet::PubAck(ack(packet_id))),
            QoS::ExactlyOnce => self.send(&Packet::PubRec(ack(packet_id))),
        }
    }
}

fn ack(packet_id: u16) -> Ack {
    Ack {
        packet_id,
        reason: 0,
        properties: Properties::default(),
    }
}

fn core_qos(qos: tern_mqtt::QoS) -> QoS {
    match qos {
        tern_mqtt::QoS::AtMostOnce => QoS::AtMostOnce,
        tern_mqtt::QoS::AtLeastOnce => QoS::AtLeastOnce,
        tern_mqtt::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

fn wire_qos(qos: QoS) -> tern_mqtt::QoS {
    match qos {
        QoS::AtMostOnce => tern_mqtt::QoS::AtMostOnce,
        QoS::AtLeastOnce => tern_mqtt::QoS::AtLeastOnce,
        QoS::ExactlyOnce => tern_mqtt::QoS::ExactlyOnce,
    }
}

/// A remote PUBLISH as a core message of `publisher` (the bridge's session,
/// which no-local then keeps from going back out over this bridge).
fn core_message(topic: String, publish: Publish, qos: QoS, publisher: &Arc<str>) -> Message {
    let p = publish.properties;
    let shared = MessageProperties {
        payload_is_utf8: p.payload_format_indicator == Some(1),
        content_type: p.content_type,
        response_topic: p.response_topic,
        correlation_data: p.correlation_data,
        user_properties: p.user_properties,
    };
    Message {
        topic: Arc::from(topic),
        payload: publish.payload,
        qos,
        retain: publish.retain,
        expires_at: p
            .message_expiry_interval
            .and_then(Message::expiry_from_interval),
        properties: shared.shared(),
        publisher: Some(Arc::clone(publisher)),
    }
}

/// 5.0 properties of an outgoing PUBLISH (3.1.1 has none).
fn wire_properties(message: &Message, now: Instant, v5: bool) -> Properties {
    let mut properties = Properties::default();
    if !v5 {
        return properties;
    }
    let shared = message.properties();
    properties.payload_format_indicator = shared.payload_is_utf8.then_some(1);
    properties.content_type = shared.content_type.clone();
    properties.response_topic = shared.response_topic.clone();
    properties.correlation_data = shared.correlation_data.clone();
    properties.user_properties = shared.user_properties.clone();
    properties.message_expiry_interval = message.remaining_expiry(now);
    properties
}
