//! A slow consumer never makes the broker's memory grow without bound: a
//! subscriber that stops reading has its queue held at the cap, the overflow
//! policy drops and counts, and a healthy subscriber of the same topic gets
//! every message.

mod common;

use std::sync::atomic::Ordering;

use common::*;
use tern::core::session::OverflowPolicy;

const CAP: usize = 200;
const MESSAGES: usize = 5_000;

#[tokio::test]
async fn a_subscriber_that_stops_reading_is_held_at_its_cap_and_others_keep_up() {
    let server = start_server_with(|s| {
        s.limits.max_queued_messages = CAP;
        s.limits.queue_overflow = OverflowPolicy::DropOldest;
    })
    .await;
    // Subscribed, then never reads again: its socket buffers fill and the broker's
    // writes to it stall.
    let _stalled = raw_subscriber(server.mqtt, 4, "stalled", "flood/#", 0x00).await;
    let mut healthy = v4::Client::connect(server.mqtt, "healthy").await;
    healthy.subscribe("flood/#", 1).await;

    let payload_len = 8 * 1024;
    // The healthy subscriber reads all the time, in its own task.
    let reader = tokio::spawn(async move {
        let mut received = 0;
        while received < MESSAGES {
            let m = healthy.recv().await;
            assert_eq!(m.payload.len(), payload_len);
            received += 1;
        }
        received
    });
    let mut publisher = v4::Client::connect(server.mqtt, "publisher").await;
    let payload = vec![b'x'; payload_len];
    let router = server.server.as_ref().expect("server").router().clone();
    let stalled = router.session("stalled").expect("stalled session");
    let mut peak = 0;
    for _ in 0..MESSAGES {
        // QoS 1: each PUBACK paces the publisher; 40 MB in all, far more than the
        // stalled socket's buffers hold.
        publisher.publish("flood/data", 1, false, &payload).await;
        peak = peak.max(stalled.pending_len());
    }
    let received = reader.await.expect("reader task");
    assert_eq!(received, MESSAGES, "the healthy subscriber got everything");
    assert!(
        peak <= CAP,
        "the stalled queue stayed at its cap (peak {peak})"
    );
    let dropped = router.stats.deliveries_dropped.load(Ordering::Relaxed);
    assert!(dropped > 0, "the overflow drops were counted");
    assert!(
        stalled.dropped_count() > 0,
        "the drops are the stalled subscriber's"
    );
}
