//! SUBSCRIBE / UNSUBSCRIBE: one reason code per filter, then the retained
//! messages the new subscriptions ask for.

use tern_mqtt::{reason, Packet, Properties, SubAck, Subscribe, UnsubAck, Unsubscribe};

use super::connection::Connection;
use super::core_qos;
use super::error::MqttError;
use crate::auth::Action;
use crate::core::session::SubscriptionOptions;
use crate::core::topic::Filter;

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
    for requested in subscribe.filters {
        let limits = conn.ctx.limits().topic_limits();
        let parsed = Filter::parse(&requested.filter).map_err(|e| e.to_string());
        let filter = match parsed.and_then(|f| {
            limits.check_filter(&f).map_err(|e| e.to_string())?;
            Ok(f)
        }) {
            Ok(filter) => filter,
            Err(e) => {
                tracing::info!(client_id = %conn.session.client_id, filter = %requested.filter, error = %e, "subscription refused");
                codes.push(if conn.is_v5() {
                    reason::TOPIC_FILTER_INVALID
                } else {
                    reason::UNSPECIFIED
                });
                continue;
            }
        };
        if filter.share_group().is_some() && requested.options.no_local && conn.is_v5() {
            return Err(MqttError::Protocol("no-local on a shared subscription"));
        }
        let username = conn.username.as_deref();
        if !conn.ctx.allowed(
            username,
            &conn.session.client_id,
            Action::Subscribe,
            filter.as_str(),
        ) {
            codes.push(if conn.is_v5() {
                reason::NOT_AUTHORIZED
            } else {
                reason::UNSPECIFIED
            });
            continue;
        }
        let max = conn.ctx.limits().max_subscriptions_per_client;
        if conn.session.subscriptions_full(filter.as_str(), max) {
            tracing::info!(client_id = %conn.session.client_id, filter = %filter.as_str(), max, "subscription refused: too many subscriptions");
            codes.push(if conn.is_v5() {
                reason::QUOTA_EXCEEDED
            } else {
                reason::UNSPECIFIED
            });
            continue;
        }
        let options = SubscriptionOptions {
            qos: core_qos(requested.options.qos),
            no_local: requested.options.no_local,
            retain_as_published: requested.options.retain_as_published,
            retain_handling: requested.options.retain_handling,
            subscription_id,
        };
        let existed = conn
            .ctx
            .router
            .subscribe(&conn.session, filter.clone(), options.clone());
        codes.push(requested.options.qos as u8);
        // Shared subscriptions never get retained messages on subscribe.
        let wants_retained = match options.retain_handling {
            0 => true,
            1 => !existed,
            _ => false,
        };
        if wants_retained && filter.share_group().is_none() {
            retained_requests.push((filter, options));
        }
    }
    conn.send(&Packet::SubAck(SubAck {
        packet_id: subscribe.packet_id,
        codes,
        properties: Properties::default(),
    }))?;
    // Queued after the SUBACK is in the write buffer, so they follow it on the
    // wire; fed to the client as it takes them, not all queued at once.
    for (filter, options) in retained_requests {
        // A filter may be allowed while some topics below it are not (a deny rule).
        let username = conn.username.as_deref();
        let retained: Vec<_> = conn
            .ctx
            .router
            .retained_matching(&filter)
            .into_iter()
            .filter(|message| {
                conn.ctx
                    .can_read(username, &conn.session.client_id, &message.topic)
            })
            .collect();
        let expired = conn
            .ctx
            .router
            .send_retained(&conn.session, &filter, &options, retained);
        conn.ctx.monitor.metrics.dropped_expired(expired);
    }
    Ok(())
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
            if conn.is_v5() && limits.check(filter).is_err() {
                // Over the limits: it can name no subscription, and is not looked up.
                reason::TOPIC_FILTER_INVALID
            } else if conn.ctx.router.unsubscribe(&conn.session, filter) {
                reason::SUCCESS
            } else {
                reason::NO_SUBSCRIPTION_EXISTED
            }
        })
        .collect();
    conn.send(&Packet::UnsubAck(UnsubAck {
        packet_id: unsubscribe.packet_id,
        codes,
        properties: Properties::default(),
    }))
}
