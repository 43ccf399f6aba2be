//! PUBLISH both ways: inbound (topic aliases, QoS 0/1/2 into the core) and
//! outbound (a core delivery encoded for this client's version and limits).

use std::sync::Arc;
use std::time::Instant;

use tern_mqtt::{reason, Packet, Publish, PublishRef};

use super::ack::ack;
use super::alias::{Alias, OutboundAliases};
use super::connection::Connection;
use super::error::{MqttError, PublishOutcome};
use super::properties::{message_from_parts, publish_properties};
use super::{core_qos, wire_qos};
use crate::admin::Protocol;
use crate::auth::Action;
use crate::core::message::{Delivery, QoS};
use crate::core::router::PublishRefused;

/// Handles a PUBLISH in place (its payload is taken from it: see `dispatch`).
pub(super) fn handle_publish(
    conn: &mut Connection,
    publish: &mut Publish,
) -> Result<(), MqttError> {
    let topic = resolve_topic(conn, publish)?;
    let qos = core_qos(publish.qos);
    let packet_id = publish.packet_id.unwrap_or(0);
    if let Err(over) = conn.ctx.limits().topic_limits().check(&topic) {
        // A QoS 0 one can only be refused by closing the connection.
        let code = PublishOutcome::TopicOverLimit.ack_code(conn.protocol.version);
        let (Some(code), false) = (code, qos == QoS::AtMostOnce) else {
            return Err(MqttError::TopicOverLimit(over));
        };
        let mut reply = ack(packet_id, code);
        reply.properties.reason_string = Some(over.to_string());
        return match qos {
            QoS::ExactlyOnce => conn.send(&Packet::PubRec(reply)),
            _ => conn.send(&Packet::PubAck(reply)),
        };
    }
    let username = conn.username.as_deref();
    if !conn.ctx.allowed(
        username,
        &conn.session.client_id,
        Action::Publish,
        &topic,
        &mut conn.log_limit,
    ) {
        return answer_denied_publish(conn, qos, packet_id);
    }
    let metrics = &conn.ctx.monitor.metrics;
    metrics
        .traffic(Protocol::Mqtt)
        .received(qos, publish.payload.len());
    metrics.top_topics.record(&topic);
    if qos == QoS::ExactlyOnce {
        match conn.session.record_incoming_qos2(packet_id) {
            Some(commit) => conn.depends_on(commit),
            None => {
                // A resend of a QoS 2 message already accepted: acknowledge, do not
                // route again (checked first: a resend does not count against the
                // receive maximum). Its record was submitted earlier, by this or a
                // previous connection, so the latest commit covers it.
                conn.depends_on(conn.ctx.router.latest_commit());
                return conn.send(&Packet::PubRec(ack(packet_id, 0)));
            }
        }
        let limit = usize::from(conn.ctx.limits().receive_maximum);
        if conn.session.incoming_qos2_len() > limit {
            conn.session.release_incoming_qos2(packet_id);
            return Err(MqttError::ReceiveMaximumExceeded);
        }
    }
    let message = message_from_parts(
        topic,
        std::mem::take(&mut publish.payload),
        qos,
        publish.retain,
        &publish.properties,
        Arc::clone(&conn.session.client_id),
    );
    let version = conn.protocol.version;
    let reply = match conn.ctx.router.publish_checked(Arc::new(message)) {
        Ok(published) => {
            if qos != QoS::AtMostOnce {
                // The PUBACK / PUBREC goes out once what the message stored is committed.
                conn.depends_on(published.commit);
            } else if !published.commit.is_none() {
                conn.protocol.stored_unacked();
            }
            let outcome = PublishOutcome::Accepted {
                matched: published.matched > 0,
            };
            ack(packet_id, outcome.ack_code(version).unwrap_or(0))
        }
        Err(refused) => {
            // A retained cap and a schema's refusal are logged by the core, rate-limited.
            if !matches!(
                refused,
                PublishRefused::RetainedFull(_) | PublishRefused::SchemaInvalid(_)
            ) {
                if let Some(suppressed) = conn.log_limit.admit(std::time::Instant::now()) {
                    tracing::warn!(client_id = %conn.session.client_id, error = %refused, suppressed, "publish refused");
                }
            }
            if qos == QoS::AtMostOnce {
                return Ok(());
            }
            if refused.is_payload_invalid() {
                return answer_invalid_payload(conn, qos, packet_id, &refused);
            }
            if qos == QoS::ExactlyOnce {
                // Not accepted: a resend with this id is a new message (forgotten
                // in the store before the refusal goes out).
                if let Some(commit) = conn.session.release_incoming_qos2(packet_id) {
                    conn.depends_on(commit);
                }
            }
            let Some(code) = PublishOutcome::Refused.ack_code(version) else {
                return Err(MqttError::Refused(refused));
            };
            let mut reply = ack(packet_id, code);
            reply.properties.reason_string = Some(refused.to_string());
            reply
        }
    };
    match qos {
        QoS::AtMostOnce => Ok(()),
        QoS::AtLeastOnce => conn.send(&Packet::PubAck(reply)),
        QoS::ExactlyOnce => conn.send(&Packet::PubRec(reply)),
    }
}

/// A PUBLISH the ACL denies is not routed. MQTT 5 is told (PUBACK/PUBREC 0x87);
/// 3.x has no way to say no, so its flow completes as if accepted (the refusal is logged).
fn answer_denied_publish(conn: &mut Connection, qos: QoS, packet_id: u16) -> Result<(), MqttError> {
    let code = PublishOutcome::Denied
        .ack_code(conn.protocol.version)
        .unwrap_or(reason::NOT_AUTHORIZED);
    match qos {
        QoS::AtMostOnce => Ok(()),
        QoS::AtLeastOnce => conn.send(&Packet::PubAck(ack(packet_id, code))),
        QoS::ExactlyOnce => {
            if code == reason::SUCCESS {
                // The 3.x flow goes on to PUBREL/PUBCOMP like an accepted message.
                if let Some(commit) = conn.session.record_incoming_qos2(packet_id) {
                    conn.depends_on(commit);
                }
            }
            conn.send(&Packet::PubRec(ack(packet_id, code)))
        }
    }
}

/// A QoS 1/2 PUBLISH whose payload the core refused (a `reject` schema,
/// UTF-8): MQTT 5 is told (PUBACK / PUBREC 0x99 with the reason string);
/// 3.x cannot be, so its flow completes as if accepted and the message is
/// dropped (the core counted it and logged it, rate-limited).
fn answer_invalid_payload(
    conn: &mut Connection,
    qos: QoS,
    packet_id: u16,
    refused: &PublishRefused,
) -> Result<(), MqttError> {
    let code = PublishOutcome::PayloadInvalid
        .ack_code(conn.protocol.version)
        .unwrap_or(reason::PAYLOAD_FORMAT_INVALID);
    let mut reply = ack(packet_id, code);
    if code != reason::SUCCESS {
        reply.properties.reason_string = Some(refused.to_string());
        if qos == QoS::ExactlyOnce {
            // Not accepted: a resend with this id is a new message.
            if let Some(commit) = conn.session.release_incoming_qos2(packet_id) {
                conn.depends_on(commit);
            }
        }
    }
    match qos {
        QoS::ExactlyOnce => conn.send(&Packet::PubRec(reply)),
        _ => conn.send(&Packet::PubAck(reply)),
    }
}

/// The topic a PUBLISH goes to, applying and recording MQTT 5 topic aliases.
fn resolve_topic(conn: &mut Connection, publish: &Publish) -> Result<Arc<str>, MqttError> {
    let Some(alias) = publish.properties.topic_alias else {
        return Ok(shared_topic(&mut conn.protocol.last_topic, &publish.topic));
    };
    let max = conn.ctx.limits().topic_alias_maximum;
    if alias == 0 || alias > max {
        return Err(MqttError::TopicAliasInvalid(
            "alias is 0 or above the topic alias maximum",
        ));
    }
    if publish.topic.is_empty() {
        conn.protocol
            .aliases()
            .and_then(|aliases| aliases.inbound.get(&alias))
            .cloned()
            .ok_or(MqttError::Protocol("topic alias used before it was set"))
    } else {
        let topic: Arc<str> = Arc::from(publish.topic.as_str());
        conn.protocol
            .aliases_mut()
            .inbound
            .insert(alias, Arc::clone(&topic));
        Ok(topic)
    }
}

/// `topic` as an `Arc`, reusing `last` when it is the same topic.
fn shared_topic(last: &mut Option<Arc<str>>, topic: &str) -> Arc<str> {
    match last {
        Some(shared) if **shared == *topic => Arc::clone(shared),
        _ => Arc::clone(last.insert(Arc::from(topic))),
    }
}

/// Encodes one delivery into the write buffer. A delivery larger than the client's
/// maximum packet size is discarded, as MQTT 5 requires.
pub(super) fn write_delivery(
    conn: &mut Connection,
    delivery: &Delivery,
    packet_id: Option<u16>,
    dup: bool,
    now: Instant,
) -> Result<(), MqttError> {
    let message = &delivery.message;
    let traffic = conn.ctx.monitor.metrics.traffic(Protocol::Mqtt);
    traffic.sent(delivery.qos, message.payload.len());
    let mut properties = publish_properties(delivery, conn.protocol.version, now);
    if conn.protocol.outbound_alias_max > 0 {
        // Measured with an alias (3 bytes) and the full topic: the largest form it may take.
        properties.topic_alias = Some(1);
    }
    let publish = PublishRef {
        dup,
        qos: wire_qos(delivery.qos),
        retain: delivery.retain,
        topic: &message.topic,
        packet_id,
        properties: &properties,
        payload: &message.payload,
    };
    if let Some(max) = conn.protocol.client_max_packet {
        if tern_mqtt::publish_encoded_len(&publish, conn.protocol.version)? > max.get() as usize {
            tracing::debug!(client_id = %conn.session.client_id, topic = %message.topic, "message larger than the client's maximum packet size discarded");
            if let Some(id) = packet_id {
                // Never sent: forget it so the window does not leak.
                let stage = crate::core::session::InflightStage::Sent;
                conn.session.finish_inflight(id, stage);
            }
            return Ok(());
        }
    }
    // Assigned only for a PUBLISH that goes out, so the client's map and ours agree.
    let alias = outbound_alias(conn, &message.topic);
    properties.topic_alias = alias.map(|(Alias::Known(n) | Alias::Assigned(n))| n);
    let publish = PublishRef {
        dup,
        qos: wire_qos(delivery.qos),
        retain: delivery.retain,
        topic: match alias {
            Some(Alias::Known(_)) => "",
            _ => &message.topic,
        },
        packet_id,
        properties: &properties,
        payload: &message.payload,
    };
    tern_mqtt::encode_publish(&publish, conn.protocol.version, &mut conn.write_buf)?;
    Ok(())
}

/// The alias `topic` goes out with on this connection, if the client takes aliases.
fn outbound_alias(conn: &mut Connection, topic: &Arc<str>) -> Option<Alias> {
    if conn.protocol.outbound_alias_max == 0 {
        return None;
    }
    let max = conn.protocol.outbound_alias_max;
    conn.protocol
        .aliases_mut()
        .outbound
        .get_or_insert_with(|| OutboundAliases::new(max))
        .alias_for(topic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_topic_is_shared_and_a_new_one_replaces_it() {
        let mut last = None;
        let first = shared_topic(&mut last, "a/b");
        let again = shared_topic(&mut last, "a/b");
        assert!(Arc::ptr_eq(&first, &again));
        let other = shared_topic(&mut last, "a/c");
        assert_eq!(&*other, "a/c");
        assert!(last.as_ref().is_some_and(|l| Arc::ptr_eq(l, &other)));
    }
}
