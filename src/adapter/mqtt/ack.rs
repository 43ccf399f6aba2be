//! PUBACK / PUBREC / PUBREL / PUBCOMP: the QoS 1 and QoS 2 flows.

use tern_mqtt::{reason, Ack, Packet, Properties};

use super::connection::Connection;
use super::error::MqttError;
use crate::core::message::Delivery;
use crate::core::session::InflightStage;

pub(super) fn ack(packet_id: u16, reason: u8) -> Ack {
    Ack {
        packet_id,
        reason,
        properties: Properties::default(),
    }
}

/// QoS 1 delivery acknowledged. An unknown id is ignored (it may be a late ack
/// of a message already resent and acknowledged).
pub(super) fn handle_puback(conn: &mut Connection, puback: Ack) {
    match conn
        .session
        .finish_inflight_delivery(puback.packet_id, InflightStage::Sent)
    {
        Some(delivery) => stream_acked(conn, &delivery),
        None => {
            tracing::debug!(client_id = %conn.session.client_id, packet_id = puback.packet_id, "PUBACK for unknown packet id")
        }
    }
}

/// A streamed message acknowledged: a named consumer's offset moves on.
fn stream_acked(conn: &Connection, delivery: &Delivery) {
    if let Some(filter) = delivery
        .filter
        .as_deref()
        .filter(|f| crate::core::stream::is_stream_filter(f))
    {
        conn.ctx
            .router
            .streams()
            .acked(&conn.session, filter, &delivery.message);
    }
}

/// QoS 2 delivery received by the client: answer PUBREL. A PUBREC carrying an
/// error code ends the flow without PUBREL.
pub(super) fn handle_pubrec(conn: &mut Connection, pubrec: Ack) -> Result<(), MqttError> {
    let id = pubrec.packet_id;
    if pubrec.reason >= 0x80 {
        conn.session.finish_inflight(id, InflightStage::Sent);
        return Ok(());
    }
    let code = if conn.session.release_inflight(id) {
        0
    } else {
        reason::PACKET_ID_NOT_FOUND
    };
    conn.send(&Packet::PubRel(ack(
        id,
        if conn.is_v5() { code } else { 0 },
    )))
}

/// Client releases a QoS 2 message it sent us: answer PUBCOMP.
pub(super) fn handle_pubrel(conn: &mut Connection, pubrel: Ack) -> Result<(), MqttError> {
    let id = pubrel.packet_id;
    let code = if conn.session.release_incoming_qos2(id) {
        0
    } else {
        reason::PACKET_ID_NOT_FOUND
    };
    conn.send(&Packet::PubComp(ack(
        id,
        if conn.is_v5() { code } else { 0 },
    )))
}

/// QoS 2 delivery complete.
pub(super) fn handle_pubcomp(conn: &mut Connection, pubcomp: Ack) {
    match conn
        .session
        .finish_inflight_delivery(pubcomp.packet_id, InflightStage::Released)
    {
        Some(delivery) => stream_acked(conn, &delivery),
        None => {
            tracing::debug!(client_id = %conn.session.client_id, packet_id = pubcomp.packet_id, "PUBCOMP for unknown packet id")
        }
    }
}
