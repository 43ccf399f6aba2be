//! Tern: a multi-protocol IoT message broker. MQTT devices and STOMP web apps
//! exchange messages through one routing core.
//!
//! # Layout
//!
//! - [`config`]: settings from built-in defaults, a file and `TERN_*` variables.
//! - [`server`]: [`Server::start`] wires listeners, adapters and the core.
//! - [`transport`]: listeners yielding byte streams (TCP).
//! - [`adapter`]: protocol adapters (MQTT) turning frames into core calls.
//! - [`core`]: the routing core: topics, the subscription trie, retained
//!   messages, sessions and the router. It knows no protocol.
//!
//! The wire codecs live in their own crates: `tern-mqtt` (protocols/mqtt).

pub mod adapter;
pub mod config;
pub mod core;
pub mod server;
pub mod store;
pub mod transport;

pub use config::Settings;
pub use server::Server;
