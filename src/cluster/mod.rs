//! The cluster: several Tern nodes sharing one NATS deployment.
//! - `kv_key.rs`: client ids and topics as JetStream KV keys;
//! - `ownership.rs`: one client id, one session in the cluster (KV, CAS);
//! - `retained.rs`: retained messages, one view (KV + watch);
//! - `state.rs`: the core's `ClusterState` over those, and its tasks.

mod kv_key;
mod ownership;
mod retained;
pub mod state;

#[cfg(test)]
mod state_tests;
