//! An idle connection's memory is mostly its task: the state its future keeps
//! while it waits. These sizes are exact (not timings), so a change that makes
//! every connection carry kilobytes more fails here.

use std::sync::Arc;

use super::{Context, Peer};
use crate::config::Settings;
use crate::core::router::Router;
use crate::core::session::{OverflowPolicy, QueueLimits};

/// What one connection task may weigh while it waits (Mosquitto: about 1 KB a
/// client). Measured: MQTT 920 bytes, STOMP about 1,330 (two heart-beat timers).
const MAX_MQTT_FUTURE: usize = 1024;
const MAX_STOMP_FUTURE: usize = 1536;

fn context() -> Context {
    let limits = QueueLimits {
        max_queued: 10,
        max_queued_bytes: 0,
        overflow: OverflowPolicy::DropNew,
    };
    let router = Arc::new(Router::new(limits));
    Context::open(router, Arc::new(Settings::ephemeral()), Default::default())
}

fn peer() -> Peer {
    Peer {
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
        listener: "test",
        anonymous_allowed: true,
        admitted: true,
        cert_username: None,
    }
}

#[test]
fn connection_tasks_stay_small_while_they_wait() {
    let (stream, _) = tokio::io::duplex(64);
    let mqtt = super::mqtt::serve(stream, peer(), context());
    let mqtt_size = std::mem::size_of_val(&mqtt);
    let (stream, _) = tokio::io::duplex(64);
    let stomp = super::stomp::serve(stream, peer(), context());
    let stomp_size = std::mem::size_of_val(&stomp);
    assert!(
        mqtt_size <= MAX_MQTT_FUTURE,
        "MQTT connection future: {mqtt_size} bytes"
    );
    assert!(
        stomp_size <= MAX_STOMP_FUTURE,
        "STOMP connection future: {stomp_size} bytes"
    );
}
