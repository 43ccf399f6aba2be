//! PUBACK / PUBREC / PUBREL / PUBCOMP: the QoS 1 and QoS 2 flows.

use tern_mqtt::{Ack, Packet, Properties};

use super::connection::Connection;
use super::error::{packet_id_code, MqttError};
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
pub(super) fn handle_puback(conn: &mut Connection, puback: &Ack) {
    // Nothing answers a PUBACK, so nothing waits for its removal from the store.
    match conn
        .session
        .finish_inflight_delivery(puback.packet_id, InflightStage::Sent)
    {
        Some((_, delivery)) => stream_acked(conn, &delivery),
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
pub(super) fn handle_pubrec(conn: &mut Connection, pubrec: &Ack) -> Result<(), MqttError> {
    let id = pubrec.packet_id;
    if pubrec.reason >= 0x80 {
        conn.session.finish_inflight(id, InflightStage::Sent);
        return Ok(());
    }
    let code = match conn.session.release_inflight(id) {
        Some(commit) => {
            // The PUBREL goes out once the release stage is stored.
            conn.depends_on(commit);
            packet_id_code(true, conn.protocol.version)
        }
        None => packet_id_code(false, conn.protocol.version),
    };
    conn.send(&Packet::PubRel(ack(id, code)))
}

/// Client releases a QoS 2 message it sent us: answer PUBCOMP.
pub(super) fn handle_pubrel(conn: &mut Connection, pubrel: &Ack) -> Result<(), MqttError> {
    let id = pubrel.packet_id;
    let code = match conn.session.release_incoming_qos2(id) {
        Some(commit) => {
            // The client may reuse the id once it has the PUBCOMP: the id is
            // forgotten in the store first, or a restart would take it for a resend.
            conn.depends_on(commit);
            packet_id_code(true, conn.protocol.version)
        }
        None => packet_id_code(false, conn.protocol.version),
    };
    conn.send(&Packet::PubComp(ack(id, code)))
}

/// QoS 2 delivery complete.
pub(super) fn handle_pubcomp(conn: &mut Connection, pubcomp: &Ack) {
    match conn
        .session
        .finish_inflight_delivery(pubcomp.packet_id, InflightStage::Released)
    {
        Some((_, delivery)) => stream_acked(conn, &delivery),
        None => {
            tracing::debug!(client_id = %conn.session.client_id, packet_id = pubcomp.packet_id, "PUBCOMP for unknown packet id")
        }
    }
}
