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
//! - `link.rs`: opening the link: TCP / TLS, CONNECT, the remote SUBSCRIBE.
//! - `run.rs`: the bridge task: the core session, the link served and reopened.
//! - `status.rs`: what operators see of each bridge.

mod link;
pub mod rule;
mod run;
pub mod settings;
pub mod status;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::core::router::Router;
pub use link::LinkError;
use settings::BridgeSettings;
use status::BridgeStatus;

/// Starts one task per bridge (rules already checked with the config); their
/// status, in config order.
pub fn start(
    bridges: &[BridgeSettings],
    router: &Arc<Router>,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
) -> Vec<Arc<BridgeStatus>> {
    let mut statuses = Vec::with_capacity(bridges.len());
    for settings in bridges {
        let rules = match settings.check() {
            Ok(rules) => rules,
            Err(e) => {
                tracing::error!(error = %e, "bridge not started");
                continue;
            }
        };
        let status = Arc::new(BridgeStatus::new(&settings.name));
        statuses.push(Arc::clone(&status));
        let bridge = run::Bridge {
            settings: settings.clone(),
            rules,
            router: Arc::clone(router),
            status,
            shutdown: shutdown.clone(),
        };
        tracker.spawn(bridge.run());
    }
    statuses
}
