//! SUBSCRIBE / UNSUBSCRIBE: one reason code per filter, then the retained
//! messages the new subscriptions ask for. MQTT 5 SUBSCRIBE may carry a
//! selector (user property `selector`) for all its filters.

use std::sync::Arc;

use tern_mqtt::{reason, Packet, Properties, SubAck, Subscribe, UnsubAck, Unsubscribe};

use super::connection::Connection;
use super::core_qos;
use super::error::{unsuback_code, FilterRefusal, MqttError};
use crate::core::selector::{Selector, SelectorError};
use crate::core::session::SubscriptionOptions;
use crate::core::topic::Filter;

/// The SUBSCRIBE user property that carries a selector.
const SELECTOR_PROPERTY: &str = "selector";

pub(super) fn handle_subscribe(
    conn: &mut Connection,
    subscribe: Subscribe,
) -> Result<(), MqttError> {
    let subscription_id = subscribe
        .properties
        .subscription_identifiers
        .first()
        .copied();
    let mut codes = Vec::with_capacity(subscribe.filters.len());
    let mut retained_requests = Vec::new();
    // Refusals are logged once for the packet (one may carry 100,000 filters).
    let mut refused = Refused::default();
    // Why the first stream filter was refused, for the SUBACK's reason string.
    let mut stream_refusal = None;
    // MQTT 5: the user property `selector` applies to every filter of the
    // packet; a bad one refuses them all (0x8F, the error as reason string).
    let selector = match selector_property(conn, &subscribe.properties) {
        Ok(selector) => selector,
        Err(error) => {
            let why = error.to_string();
            for requested in &subscribe.filters {
                refused.note(FilterRefusal::Invalid, &requested.filter, &why);
            }
            refused.log(conn);
            let codes = vec![reason::TOPIC_FILTER_INVALID; subscribe.filters.len()];
            let properties = Properties {
                reason_string: Some(why),
                ..Properties::default()
            };
            conn.send(&Packet::SubAck(SubAck {
                packet_id: subscribe.packet_id,
                codes,
                properties,
            }))?;
            return Ok(());
        }
    };
    for requested in subscribe.filters {
        if crate::core::stream::is_stream_filter(&requested.filter) {
            let code = super::stream::subscribe(
                conn,
                &requested.filter,
                requested.options.qos,
                &subscribe.properties,
                subscription_id,
                selector.clone(),
            );
            codes.push(code.unwrap_or_else(|(code, why)| {
                refused.note(FilterRefusal::Invalid, &requested.filter, &why);
                stream_refusal.get_or_insert(why);
                code
            }));
            continue;
        }
        let limits = conn.ctx.limits().topic_limits();
        let parsed = Filter::parse(&requested.filter).map_err(|e| e.to_string());
        let filter = match parsed.and_then(|f| {
            limits.check_filter(&f).map_err(|e| e.to_string())?;
            Ok(f)
        }) {
            Ok(filter) => filter,
            Err(e) => {
                refused.note(FilterRefusal::Invalid, &requested.filter, &e.to_string());
                codes.push(FilterRefusal::Invalid.suback_code(conn.protocol.version));
                continue;
            }
        };
        if filter.share_group().is_some() && requested.options.no_local && conn.is_v5() {
            return Err(MqttError::Protocol("no-local on a shared subscription"));
        }
        let username = conn.username.as_deref();
        let Some(exceptions) =
            conn.ctx
                .subscription_exceptions(username, &conn.session.client_id, filter.as_str())
        else {
            refused.note(FilterRefusal::Denied, filter.as_str(), "denied by ACL");
            codes.push(FilterRefusal::Denied.suback_code(conn.protocol.version));
            continue;
        };
        let max = conn.ctx.limits().max_subscriptions_per_client;
        if conn.session.subscriptions_full(filter.as_str(), max) {
            let why = format!("too many subscriptions (limit {max})");
            refused.note(FilterRefusal::OverQuota, filter.as_str(), &why);
            codes.push(FilterRefusal::OverQuota.suback_code(conn.protocol.version));
            continue;
        }
        // A 3.x bridge (Mosquitto's `try_private`) is not sent back what it
        // published, and gets retain flags as published, as Mosquitto does.
        let bridge = conn.protocol.bridge() && filter.share_group().is_none();
        let options = SubscriptionOptions {
            qos: core_qos(requested.options.qos),
            no_local: requested.options.no_local || bridge,
            retain_as_published: requested.options.retain_as_published || bridge,
            retain_handling: requested.options.retain_handling,
            subscription_id,
            exceptions,
            selector: selector.clone(),
        };
        let subscribed = conn
            .ctx
            .router
            .subscribe(&conn.session, filter.clone(), options.clone());
        // The SUBACK goes out once the session record with it is committed.
        conn.depends_on(subscribed.commit);
        codes.push(requested.options.qos as u8);
        // Shared subscriptions never get retained messages on subscribe.
        let wants_retained = match options.retain_handling {
            0 => true,
            1 => !subscribed.existed,
            _ => false,
        };
        if wants_retained && filter.share_group().is_none() {
            retained_requests.push((filter, options));
        }
    }
    refused.log(conn);
    let mut properties = Properties::default();
    if conn.is_v5() {
        properties.reason_string = stream_refusal;
    }
    conn.send(&Packet::SubAck(SubAck {
        packet_id: subscribe.packet_id,
        codes,
        properties,
    }))?;
    // Queued after the SUBACK is in the write buffer, so they follow it on the
    // wire; fed to the client as it takes them, not all queued at once.
    for (filter, options) in retained_requests {
        // The core leaves out the topics the subscription's exceptions name.
        let mut retained = conn
            .ctx
            .router
            .retained_matching(&filter, &options.exceptions);
        Selector::keep_matching(options.selector.as_deref(), &mut retained);
        let expired = conn
            .ctx
            .router
            .send_retained(&conn.session, &filter, &options, retained);
        conn.ctx.monitor.metrics.dropped_expired(expired);
    }
    Ok(())
}

/// The SUBSCRIBE's user property `selector`, compiled (MQTT 5 only: 3.1.1
/// has no properties).
fn selector_property(
    conn: &Connection,
    properties: &Properties,
) -> Result<Option<Arc<Selector>>, SelectorError> {
    if !conn.is_v5() {
        return Ok(None);
    }
    match properties
        .user_properties
        .iter()
        .find(|(key, _)| key == SELECTOR_PROPERTY)
    {
        Some((_, text)) => conn.ctx.router.compile_selector(text).map(Some),
        None => Ok(None),
    }
}

/// The filters one SUBSCRIBE had refused, logged as one line.
#[derive(Default)]
struct Refused {
    invalid: usize,
    denied: usize,
    over_quota: usize,
    /// The first refused filter and why, as an example for the operator.
    first: Option<(String, String)>,
}

impl Refused {
    fn note(&mut self, why: FilterRefusal, filter: &str, reason: &str) {
        *match why {
            FilterRefusal::Invalid => &mut self.invalid,
            FilterRefusal::Denied => &mut self.denied,
            FilterRefusal::OverQuota => &mut self.over_quota,
        } += 1;
        if self.first.is_none() {
            // A filter may be 64 KiB: the example is cut.
            let example: String = filter.chars().take(256).collect();
            self.first = Some((example, reason.to_string()));
        }
    }

    /// One line for the packet, within the connection's log limit.
    fn log(self, conn: &mut Connection) {
        let Some((filter, reason)) = self.first else {
            return;
        };
        let Some(suppressed) = conn.log_limit.admit(std::time::Instant::now()) else {
            return;
        };
        tracing::warn!(
            client_id = %conn.session.client_id,
            username = conn.username.as_deref().unwrap_or(""),
            refused = self.invalid + self.denied + self.over_quota,
            invalid = self.invalid,
            denied = self.denied,
            over_quota = self.over_quota,
            first = %filter,
            reason = %reason,
            suppressed,
            "subscriptions refused"
        );
    }
}

pub(super) fn handle_unsubscribe(
    conn: &mut Connection,
    unsubscribe: Unsubscribe,
) -> Result<(), MqttError> {
    let limits = conn.ctx.limits().topic_limits();
    let codes = unsubscribe
        .filters
        .iter()
        .map(|filter| {
            // Over the limits: it can name no subscription, and is not looked up.
            let invalid = conn.is_v5() && limits.check(filter).is_err();
            let removed = if invalid {
                false
            } else if let Some(commit) = conn.ctx.router.unsubscribe(&conn.session, filter) {
                conn.depends_on(commit);
                true
            } else {
                false
            };
            unsuback_code(invalid, removed)
        })
        .collect();
    conn.send(&Packet::UnsubAck(UnsubAck {
        packet_id: unsubscribe.packet_id,
        codes,
        properties: Properties::default(),
    }))
}
