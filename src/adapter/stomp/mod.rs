//! STOMP 1.0 / 1.1 / 1.2 adapter: one task per connection turns frames into
//! core calls and core deliveries into MESSAGE frames.
//!
//! A STOMP connection is a core session with a random client id
//! (`stomp-<16 hex digits>`, the CONNECTED `session` header), session expiry 0
//! (nothing survives the connection) and the `DeliveryStyle` STOMP needs: one
//! delivery per subscription, and queue messages held until acknowledged.
//!
//! - `connection.rs`: STOMP's hooks for the connection driver (`adapter/serve.rs`,
//!   which runs the loop): the frame dispatcher, RECEIPTs, deliveries,
//!   heart-beats, goodbye.
//! - `connect.rs`: CONNECT/STOMP → version, heart-beat, login → CONNECTED.
//! - `heartbeat.rs`: heart-beat negotiation.
//! - `send.rs`: SEND checked into a message for the core.
//! - `subscribe.rs`: SUBSCRIBE / UNSUBSCRIBE, the subscription table, retained
//!   messages on subscribe.
//! - `stream.rs`: SUBSCRIBE to `/stream/<name>` with `x-stream-offset`.
//! - `deliver.rs`: core deliveries → MESSAGE frames.
//! - `ack.rs`: ACK / NACK and unacknowledged messages.
//! - `op.rs`: a checked SEND / ACK / NACK, applied now or deferred into its
//!   transaction by the dispatcher (so handlers and transactions stay apart).
//! - `transaction.rs`: BEGIN / COMMIT / ABORT, the deferred frames and their RECEIPTs.
//! - `destination.rs`: `/topic/…`, `/queue/…` ⇄ core topics (pure functions).
//! - `headers.rs`: STOMP headers ⇄ core message properties, and `required`
//!   headers (pure functions).
//! - `error.rs`: every error and its ERROR frame.

mod ack;
mod connect;
mod connection;
mod deliver;
mod destination;
mod error;
mod headers;
mod heartbeat;
mod op;
mod send;
mod stream;
mod subscribe;
mod transaction;

pub use connection::serve;
pub use destination::DestinationError;
pub use error::StompAdapterError;
