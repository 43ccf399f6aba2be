//! Bridges: this broker as an MQTT client of remote brokers (`[[bridge]]`).
//!
//! A bridge is a core client like an adapter: it never opens the store. Its
//! outbound side is a persistent core session (`$bridge/<name>`) subscribed to
//! the local side of the `out` rules, so what waits for the remote is kept
//! (QoS 1/2 in the store, with packet ids) across link drops and restarts,
//! bounded by the bridge's queue limits. Its inbound side subscribes on the
//! remote and publishes locally as that same session, so no-local keeps a
//! message from going back out over the bridge it came in by.
//!
//! - `settings.rs`: the `[[bridge]]` table and its checks.
//! - `rule.rs`: topic rules in Mosquitto's syntax and the prefix mapping.

pub mod rule;
pub mod settings;
