//! MQTT 3.1, 3.1.1 and 5.0 wire codec for the Tern broker.
//!
//! Sans-IO and strict: [`decode`] turns bytes from a `BytesMut` into [`Packet`]s and rejects
//! anything the specifications call malformed or a protocol error, mapping each failure to
//! the reason code the broker answers with ([`DecodeError::reason_code`]). [`encode`] writes
//! packets for a negotiated [`ProtocolVersion`] and refuses, rather than truncates, anything
//! that does not fit the wire format. No I/O, no async runtime, no broker state: topic filter
//! syntax, topic alias bounds, packet id bookkeeping and authentication are the caller's job.
//!
//! # Layout
//!
//! - `types`: packet structs, [`Packet`], [`ProtocolVersion`], [`QoS`], [`Properties`].
//! - `codes`: [`reason`] codes (5.0), [`connack_v3`] return codes, and which codes each
//!   packet type may carry.
//! - `error`: [`DecodeError`] (with its reason code) and [`EncodeError`].
//! - `wire`: bounds-checked reader, variable byte integers, strings, and the write/count sink.
//! - `properties`: 5.0 property table (which packet allows what), decoding and encoding.
//! - `topic`: topic name checks shared by PUBLISH and the CONNECT will.
//! - `connect`: CONNECT and CONNACK bodies.
//! - `publish`: PUBLISH and PUBACK/PUBREC/PUBREL/PUBCOMP bodies.
//! - `subscribe`: SUBSCRIBE/SUBACK/UNSUBSCRIBE/UNSUBACK bodies.
//! - `control`: DISCONNECT and AUTH bodies.
//! - `decode`: fixed header, size limit and dispatch ([`decode`]).
//! - `encode`: fixed header and dispatch ([`encode`], [`encoded_len`]).
//! - `test_util` (tests only): byte-building and round-trip helpers for the unit tests.
//!
//! Integration tests live in `tests/` (round trip, mqttbytes oracle, regression byte strings,
//! fuzz smoke test); the cargo-fuzz target is in `fuzz/`.

mod codes;
mod connect;
mod control;
mod decode;
mod encode;
mod error;
mod properties;
mod publish;
mod subscribe;
mod topic;
mod types;
mod wire;

#[cfg(test)]
mod test_util;

pub use codes::{connack_v3, reason};
pub use decode::decode;
pub use encode::{encode, encode_publish, encoded_len, publish_encoded_len};
pub use error::{DecodeError, EncodeError};
pub use types::{
    Ack, Auth, ConnAck, Connect, Disconnect, Packet, Properties, ProtocolVersion, Publish,
    PublishRef, QoS, SubAck, Subscribe, SubscribeFilter, SubscriptionOptions, UnsubAck,
    Unsubscribe, Will,
};
