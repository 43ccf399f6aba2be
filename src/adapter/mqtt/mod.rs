//! MQTT 3.1 / 3.1.1 / 5.0 adapter: one task per connection turns packets into
//! core calls and core deliveries into packets.
//!
//! - `connection.rs`: MQTT's hooks for the connection driver (`adapter/serve.rs`,
//!   which runs the loop): the packet dispatcher, deliveries, keep-alive, goodbye.
//! - `connect.rs`: CONNECT → session attach → CONNACK.
//! - `publish.rs`: inbound PUBLISH (QoS 0/1/2, topic aliases) and outbound deliveries.
//! - `properties.rs`: PUBLISH properties ⇄ core message, both ways (pure functions).
//! - `subscribe.rs`: SUBSCRIBE / UNSUBSCRIBE and retained messages on subscribe.
//! - `stream.rs`: SUBSCRIBE to `$stream/<name>/…` (durable streams).
//! - `alias.rs`: topic aliases the server assigns on outbound PUBLISH (MQTT 5), LRU.
//! - `ack.rs`: PUBACK / PUBREC / PUBREL / PUBCOMP.
//! - `will.rs`: will messages and their delay.
//! - `error.rs`: where errors become replies: every error and refusal and the
//!   DISCONNECT / CONNACK / PUBACK / SUBACK code it is answered with per version.

mod ack;
mod alias;
mod connect;
mod connection;
mod error;
mod properties;
mod publish;
mod stream;
mod subscribe;
mod will;

pub use connection::serve;
pub use error::MqttError;

/// Maps the wire QoS to the core's.
pub(crate) fn core_qos(qos: tern_mqtt::QoS) -> crate::core::message::QoS {
    match qos {
        tern_mqtt::QoS::AtMostOnce => crate::core::message::QoS::AtMostOnce,
        tern_mqtt::QoS::AtLeastOnce => crate::core::message::QoS::AtLeastOnce,
        tern_mqtt::QoS::ExactlyOnce => crate::core::message::QoS::ExactlyOnce,
    }
}

/// Maps the core QoS to the wire's.
pub(crate) fn wire_qos(qos: crate::core::message::QoS) -> tern_mqtt::QoS {
    match qos {
        crate::core::message::QoS::AtMostOnce => tern_mqtt::QoS::AtMostOnce,
        crate::core::message::QoS::AtLeastOnce => tern_mqtt::QoS::AtLeastOnce,
        crate::core::message::QoS::ExactlyOnce => tern_mqtt::QoS::ExactlyOnce,
    }
}
