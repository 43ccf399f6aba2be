//! Tern: a multi-protocol IoT message broker. MQTT devices and STOMP web apps
//! exchange messages through one routing core.
//!
//! # Layout
//!
//! - [`config`]: settings from built-in defaults, a file and `TERN_*` variables.
//! - [`server`]: [`Server::start`] wires listeners, adapters and the core.
//! - [`transport`]: listeners yielding byte streams (TCP, TLS with reloadable
//!   certificates, WebSocket) behind connection caps that a reload can change.
//! - [`reload`]: SIGHUP re-reads the config: ACL rules, log level, limits.
//! - [`systemd`]: tells systemd (`Type=notify`) when the broker is ready,
//!   reloading or stopping; a no-op outside systemd.
//! - [`adapter`]: protocol adapters (MQTT, STOMP) turning frames into core calls.
//! - [`bridge`]: `[[bridge]]`: MQTT client links to remote brokers, carrying
//!   topics each way by Mosquitto-style rules, with store-and-forward through a
//!   persistent core session per bridge.
//! - [`auth`]: the password file, logins and ACL rules; called by adapters.
//! - [`certs`]: `tern certs dev`, a development CA and certificates.
//! - [`admin`]: operations: Prometheus metrics, `/healthz`, the admin API, the web
//!   dashboard, `$SYS` topics.
//! - [`core`]: the routing core: topics, the subscription trie, retained
//!   messages, sessions (with their byte-counted pending queues, and QoS 1/2
//!   packet ids made at first use), point-to-point queues and the router. It
//!   knows no protocol. The router (`core/router/`) is a façade over one type
//!   per concern: routing (trie, retained, queues), the session registry, the
//!   waiting wills and persistence (store operations and the conversions
//!   between core types and store records). Payload schemas (`core/schema/`:
//!   JSON Schema, Avro) are checked on publish before routing.
//! - [`cluster`]: cluster mode: nodes sharing one NATS deployment; the fabric
//!   that carries messages between nodes by interest (implements the core's
//!   `core::fabric::Fabric`).
//! - [`store`]: the message store behind a group-commit writer: redb, or
//!   JetStream KV in cluster mode (`store/nats/`). It knows records and bytes
//!   only, never the core's types.
//!
//! The wire codecs live in their own crates: `tern-mqtt` (protocols/mqtt) and
//! `tern-stomp` (protocols/stomp).

pub mod adapter;
pub mod admin;
pub mod auth;
pub mod bridge;
pub mod certs;
pub mod cluster;
pub mod config;
pub mod core;
pub mod reload;
pub mod server;
pub mod store;
pub mod systemd;
pub mod transport;

pub use config::Settings;
pub use server::Server;
