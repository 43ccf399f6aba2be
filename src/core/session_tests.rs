//! One session's queue and in-flight window, without a router or a store: what
//! each overflow policy keeps, the byte limit, the window that keeps order,
//! expiry and the age bound when the queue is drained, and the QoS 1/2 bookkeeping.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use tokio::sync::oneshot;

use crate::core::message::{Delivery, Message, QoS};
use crate::core::session::{InflightStage, OverflowPolicy, PushOutcome, QueueLimits, Session};

fn limits(max_queued: u32, max_queued_bytes: usize, overflow: OverflowPolicy) -> QueueLimits {
    QueueLimits {
        max_queued,
        max_queued_bytes,
        overflow,
        max_queued_age_ms: 0,
    }
}

/// A session with a live connection (offline sessions drop QoS 0 on their own).
fn online(limits: QueueLimits) -> Session {
    let session = Session::new(Arc::from("client"), 0, limits);
    let (kick, _kicked) = oneshot::channel();
    assert!(session.attach(1, kick, 0).is_none());
    session
}

fn message(topic: &str, payload: &str, qos: QoS) -> Arc<Message> {
    Arc::new(Message::new(
        topic,
        Bytes::copy_from_slice(payload.as_bytes()),
        qos,
        false,
    ))
}

fn delivery_of(message: Arc<Message>) -> Delivery {
    Delivery {
        qos: message.qos,
        message,
        retain: false,
        subscription_ids: Vec::new(),
        filter: None,
        seq: 0,
    }
}

/// A delivery on topic "t" whose payload is `payload` (counts 1 + len bytes).
fn delivery(payload: &str, qos: QoS) -> Delivery {
    delivery_of(message("t", payload, qos))
}

/// Payloads of what is pending, in queue order (drains the queue).
fn drain_payloads(session: &Session) -> Vec<String> {
    let mut out = Vec::new();
    session.take_pending(usize::MAX, &mut out);
    out.iter()
        .map(|d| String::from_utf8_lossy(&d.message.payload).into_owned())
        .collect()
}

fn payloads(out: &[(Delivery, Option<u16>)]) -> Vec<String> {
    out.iter()
        .map(|(d, _)| String::from_utf8_lossy(&d.message.payload).into_owned())
        .collect()
}

// ------------------------------------------------------------------ overflow policies

#[test]
fn drop_oldest_keeps_the_newest_messages_and_counts_the_dropped() {
    let session = online(limits(3, 0, OverflowPolicy::DropOldest));
    for p in ["1", "2", "3"] {
        assert_eq!(
            session.push(delivery(p, QoS::AtLeastOnce)),
            PushOutcome::Queued
        );
    }
    for p in ["4", "5"] {
        assert_eq!(
            session.push(delivery(p, QoS::AtLeastOnce)),
            PushOutcome::QueuedDroppedOldest
        );
    }
    assert_eq!(session.dropped_count(), 2);
    assert_eq!(drain_payloads(&session), ["3", "4", "5"]);
}

#[test]
fn drop_oldest_drops_as_many_old_messages_as_the_byte_limit_needs() {
    // Each "t"+"xxxx" delivery counts 5 bytes; the limit is 15.
    let session = online(limits(100, 15, OverflowPolicy::DropOldest));
    for p in ["aaaa", "bbbb", "cccc"] {
        assert_eq!(
            session.push(delivery(p, QoS::AtLeastOnce)),
            PushOutcome::Queued
        );
    }
    // 10 bytes: two of the three must go for it to fit.
    assert_eq!(
        session.push(delivery("ddddddddd", QoS::AtLeastOnce)),
        PushOutcome::QueuedDroppedOldest
    );
    assert_eq!(session.dropped_count(), 2);
    assert_eq!(drain_payloads(&session), ["cccc", "ddddddddd"]);
}

#[test]
fn drop_oldest_drops_a_message_bigger_than_the_whole_byte_limit_and_keeps_the_queue() {
    let session = online(limits(100, 10, OverflowPolicy::DropOldest));
    assert_eq!(
        session.push(delivery("old", QoS::AtLeastOnce)),
        PushOutcome::Queued
    );
    // 1 + 10 bytes can never fit: emptying the queue for it would lose "old" for nothing.
    assert_eq!(
        session.push(delivery("0123456789", QoS::AtLeastOnce)),
        PushOutcome::Dropped
    );
    assert_eq!(session.dropped_count(), 1);
    assert_eq!(drain_payloads(&session), ["old"]);
}

#[test]
fn drop_oldest_takes_a_message_that_fills_the_byte_limit_exactly() {
    let session = online(limits(100, 10, OverflowPolicy::DropOldest));
    assert_eq!(
        session.push(delivery("old", QoS::AtLeastOnce)),
        PushOutcome::Queued
    );
    assert_eq!(
        session.push(delivery("123456789", QoS::AtLeastOnce)),
        PushOutcome::QueuedDroppedOldest
    );
    assert_eq!(drain_payloads(&session), ["123456789"]);
}

#[test]
fn drop_new_keeps_what_is_queued_and_drops_the_new_message() {
    let session = online(limits(2, 0, OverflowPolicy::DropNew));
    assert_eq!(
        session.push(delivery("1", QoS::AtLeastOnce)),
        PushOutcome::Queued
    );
    assert_eq!(
        session.push(delivery("2", QoS::ExactlyOnce)),
        PushOutcome::Queued
    );
    assert_eq!(
        session.push(delivery("3", QoS::AtLeastOnce)),
        PushOutcome::Dropped
    );
    assert_eq!(
        session.push(delivery("4", QoS::AtMostOnce)),
        PushOutcome::Dropped
    );
    assert_eq!(session.dropped_count(), 2);
    assert_eq!(drain_payloads(&session), ["1", "2"]);
    // Room again once drained.
    assert_eq!(
        session.push(delivery("5", QoS::AtLeastOnce)),
        PushOutcome::Queued
    );
}

#[test]
fn drop_new_applies_the_byte_limit_too() {
    let session = online(limits(100, 8, OverflowPolicy::DropNew));
    assert_eq!(
        session.push(delivery("abc", QoS::AtLeastOnce)),
        PushOutcome::Queued
    );
    assert_eq!(
        session.push(delivery("abcd", QoS::AtLeastOnce)),
        PushOutcome::Dropped
    );
    assert_eq!(
        session.push(delivery("ab", QoS::AtLeastOnce)),
        PushOutcome::Queued
    );
    assert_eq!(drain_payloads(&session), ["abc", "ab"]);
}

#[test]
fn refuse_says_so_before_the_push_only_when_full() {
    let session = online(limits(2, 0, OverflowPolicy::Refuse));
    assert!(!session.refuses(1));
    session.push(delivery("1", QoS::AtLeastOnce));
    assert!(!session.refuses(1), "one more still fits");
    session.push(delivery("2", QoS::AtLeastOnce));
    assert!(session.refuses(1), "full by count");
    // Whoever pushes anyway (the router never does for QoS 1/2) gets it dropped.
    assert_eq!(
        session.push(delivery("3", QoS::AtLeastOnce)),
        PushOutcome::Dropped
    );
    assert_eq!(drain_payloads(&session), ["1", "2"]);
    assert!(!session.refuses(1));
}

#[test]
fn refuse_counts_the_size_of_the_message_offered() {
    let session = online(limits(100, 10, OverflowPolicy::Refuse));
    session.push(delivery("abcd", QoS::AtLeastOnce)); // 5 bytes
    assert!(!session.refuses(5), "exactly at the limit fits");
    assert!(session.refuses(6));
    assert!(session.refuses(11), "bigger than the whole limit");
}

#[test]
fn only_the_refuse_policy_refuses() {
    for overflow in [OverflowPolicy::DropOldest, OverflowPolicy::DropNew] {
        let session = online(limits(1, 0, overflow));
        session.push(delivery("1", QoS::AtLeastOnce));
        assert!(
            !session.refuses(1),
            "{overflow:?} drops instead of refusing"
        );
    }
}

// ------------------------------------------------------------------ byte limits

#[test]
fn the_byte_limit_counts_topic_and_payload() {
    let session = online(limits(100, 10, OverflowPolicy::DropNew));
    // "topic" (5) + "12345" (5) = 10: fits exactly.
    let exact = delivery_of(message("topic", "12345", QoS::AtLeastOnce));
    assert_eq!(session.push(exact), PushOutcome::Queued);
    let one_more = delivery_of(message("t", "", QoS::AtLeastOnce));
    assert_eq!(session.push(one_more), PushOutcome::Dropped);
}

#[test]
fn a_byte_limit_of_zero_means_no_byte_limit() {
    let session = online(limits(3, 0, OverflowPolicy::DropNew));
    let big = "x".repeat(1 << 20);
    for _ in 0..3 {
        assert_eq!(
            session.push(delivery(&big, QoS::AtLeastOnce)),
            PushOutcome::Queued
        );
    }
    assert_eq!(session.pending_len(), 3);
}

#[test]
fn bytes_taken_out_of_the_queue_make_room_again() {
    let session = online(limits(100, 10, OverflowPolicy::DropNew));
    session.push(delivery("12345678", QoS::AtLeastOnce)); // 9 bytes
    assert_eq!(
        session.push(delivery("12", QoS::AtLeastOnce)),
        PushOutcome::Dropped
    );
    let mut out = Vec::new();
    session.take_deliverable(10, 10, Instant::now(), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(
        session.push(delivery("12", QoS::AtLeastOnce)),
        PushOutcome::Queued
    );
}

#[test]
fn lowered_limits_keep_what_is_queued_and_take_more_only_once_below() {
    let session = online(limits(10, 0, OverflowPolicy::DropNew));
    for p in ["1", "2", "3"] {
        session.push(delivery(p, QoS::AtLeastOnce));
    }
    session.set_limits(limits(2, 0, OverflowPolicy::DropNew));
    assert_eq!(session.pending_len(), 3, "nothing queued is thrown away");
    assert_eq!(
        session.push(delivery("4", QoS::AtLeastOnce)),
        PushOutcome::Dropped
    );
    let mut out = Vec::new();
    session.take_pending(2, &mut out);
    assert_eq!(
        session.push(delivery("5", QoS::AtLeastOnce)),
        PushOutcome::Queued
    );
    assert_eq!(drain_payloads(&session), ["3", "5"]);
}

// ------------------------------------------------------------------ offline sessions

#[test]
fn an_offline_session_keeps_qos_1_and_2_but_not_qos_0() {
    let session = Session::new(
        Arc::from("away"),
        60,
        limits(10, 0, OverflowPolicy::DropNew),
    );
    assert!(!session.is_connected());
    assert_eq!(
        session.push(delivery("0", QoS::AtMostOnce)),
        PushOutcome::Dropped
    );
    assert_eq!(
        session.push(delivery("1", QoS::AtLeastOnce)),
        PushOutcome::Queued
    );
    assert_eq!(
        session.push(delivery("2", QoS::ExactlyOnce)),
        PushOutcome::Queued
    );
    assert_eq!(drain_payloads(&session), ["1", "2"]);
}

// ------------------------------------------------------------------ wake-ups

#[tokio::test]
async fn the_connection_is_woken_when_the_queue_stops_being_empty_not_per_message() {
    let session = online(limits(10, 0, OverflowPolicy::DropNew));
    session.push(delivery("1", QoS::AtLeastOnce));
    assert!(
        session.notified().now_or_never().is_some(),
        "the first message wakes the connection"
    );
    session.push(delivery("2", QoS::AtLeastOnce));
    assert!(
        session.notified().now_or_never().is_none(),
        "a second message into a non-empty queue costs no wake-up"
    );
    drain_payloads(&session);
    session.push(delivery("3", QoS::AtLeastOnce));
    assert!(session.notified().now_or_never().is_some());
}

// ------------------------------------------------------------------ in-flight window

#[test]
fn the_window_stops_at_the_first_qos1_delivery_that_does_not_fit() {
    let session = online(limits(10, 0, OverflowPolicy::DropNew));
    session.push(delivery("a1", QoS::AtLeastOnce));
    session.push(delivery("b2", QoS::ExactlyOnce));
    session.push(delivery("c1", QoS::AtLeastOnce));
    session.push(delivery("d0", QoS::AtMostOnce));
    let mut out = Vec::new();
    session.take_deliverable(10, 2, Instant::now(), &mut out);
    assert_eq!(payloads(&out), ["a1", "b2"]);
    // The QoS 0 message behind "c1" waits too: nothing overtakes.
    assert_eq!(session.pending_len(), 2);
    assert_eq!(session.inflight_len(), 2);

    let first_id = out[0].1.expect("a QoS 1 delivery gets a packet id");
    assert!(session
        .finish_inflight(first_id, InflightStage::Sent)
        .is_some());
    out.clear();
    session.take_deliverable(10, 2, Instant::now(), &mut out);
    assert_eq!(payloads(&out), ["c1", "d0"]);
    assert_eq!(out[1].1, None, "QoS 0 needs no packet id");
}

#[test]
fn qos0_deliveries_ahead_of_a_full_window_still_go() {
    let session = online(limits(10, 0, OverflowPolicy::DropNew));
    session.push(delivery("x0", QoS::AtMostOnce));
    session.push(delivery("a1", QoS::AtLeastOnce));
    session.push(delivery("y0", QoS::AtMostOnce));
    let mut out = Vec::new();
    session.take_deliverable(10, 0, Instant::now(), &mut out);
    assert_eq!(payloads(&out), ["x0"]);
    assert_eq!(session.pending_len(), 2);
}

#[test]
fn take_deliverable_takes_at_most_max_and_gives_distinct_packet_ids() {
    let session = online(limits(10, 0, OverflowPolicy::DropNew));
    for p in ["1", "2", "3", "4"] {
        session.push(delivery(p, QoS::AtLeastOnce));
    }
    let mut out = Vec::new();
    session.take_deliverable(3, 100, Instant::now(), &mut out);
    assert_eq!(payloads(&out), ["1", "2", "3"]);
    let mut ids: Vec<u16> = out.iter().filter_map(|(_, id)| *id).collect();
    assert!(ids.iter().all(|&id| id != 0));
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 3);
    assert_eq!(session.pending_len(), 1);
}

#[test]
fn inflight_deliveries_come_back_in_send_order_for_a_resend() {
    let session = online(limits(10, 0, OverflowPolicy::DropNew));
    for p in ["1", "2", "3"] {
        session.push(delivery(p, QoS::ExactlyOnce));
    }
    let mut out = Vec::new();
    session.take_deliverable(10, 10, Instant::now(), &mut out);
    let ids: Vec<u16> = out.iter().filter_map(|(_, id)| *id).collect();
    assert!(
        session.release_inflight(ids[1]).is_some(),
        "PUBREC for the second"
    );
    let order: Vec<(u16, String, InflightStage)> = session
        .inflight_in_order()
        .into_iter()
        .map(|(id, e)| {
            let payload = String::from_utf8_lossy(&e.delivery.message.payload).into_owned();
            (id, payload, e.stage)
        })
        .collect();
    assert_eq!(
        order,
        [
            (ids[0], "1".to_string(), InflightStage::Sent),
            (ids[1], "2".to_string(), InflightStage::Released),
            (ids[2], "3".to_string(), InflightStage::Sent),
        ]
    );
}

#[test]
fn finishing_an_inflight_delivery_needs_its_id_and_stage() {
    let session = online(limits(10, 0, OverflowPolicy::DropNew));
    session.push(delivery("q2", QoS::ExactlyOnce));
    let mut out = Vec::new();
    session.take_deliverable(10, 10, Instant::now(), &mut out);
    let id = out[0].1.expect("packet id");
    assert!(
        session
            .finish_inflight(id, InflightStage::Released)
            .is_none(),
        "PUBCOMP before PUBREC"
    );
    assert!(
        session.release_inflight(id.wrapping_add(1)).is_none(),
        "unknown id"
    );
    assert!(session.release_inflight(id).is_some());
    assert!(
        session.finish_inflight(id, InflightStage::Sent).is_none(),
        "PUBACK after PUBREC"
    );
    assert!(session
        .finish_inflight(id, InflightStage::Released)
        .is_some());
    assert_eq!(session.inflight_len(), 0);
    assert!(
        session
            .finish_inflight(id, InflightStage::Released)
            .is_none(),
        "only once"
    );
}

#[test]
fn incoming_qos2_ids_are_recorded_once_until_released() {
    let session = online(limits(10, 0, OverflowPolicy::DropNew));
    assert!(session.record_incoming_qos2(7).is_some());
    assert!(
        session.record_incoming_qos2(7).is_none(),
        "a resent PUBLISH is a duplicate"
    );
    assert_eq!(session.incoming_qos2_len(), 1);
    assert!(session.release_incoming_qos2(7).is_some());
    assert!(session.release_incoming_qos2(7).is_none());
    assert!(
        session.record_incoming_qos2(7).is_some(),
        "the id may be used again"
    );
}

// ------------------------------------------------------------------ expiry

fn expiring(payload: &str, after: Duration, now: Instant) -> Delivery {
    let mut m = Message::new(
        "t",
        Bytes::copy_from_slice(payload.as_bytes()),
        QoS::AtLeastOnce,
        false,
    );
    m.expires_at = Some(now + after);
    delivery_of(Arc::new(m))
}

#[test]
fn expired_messages_are_dropped_when_the_queue_is_drained() {
    let session = online(limits(10, 0, OverflowPolicy::DropNew));
    let start = Instant::now();
    session.push(expiring("soon", Duration::from_secs(1), start));
    session.push(delivery("forever", QoS::AtLeastOnce));
    session.push(expiring("later", Duration::from_secs(60), start));
    session.push(expiring("soon too", Duration::from_secs(2), start));
    let mut out = Vec::new();
    let expired = session
        .take_deliverable(10, 10, start + Duration::from_secs(5), &mut out)
        .expired;
    assert_eq!(expired, 2);
    assert_eq!(payloads(&out), ["forever", "later"]);
    assert_eq!(session.pending_len(), 0);
    assert_eq!(
        session.inflight_len(),
        2,
        "expired messages take no window slot"
    );
}

#[test]
fn a_message_expires_at_its_instant_not_after() {
    let session = online(limits(10, 0, OverflowPolicy::DropNew));
    let start = Instant::now();
    session.push(expiring("edge", Duration::from_secs(3), start));
    let mut out = Vec::new();
    assert_eq!(
        session
            .take_deliverable(10, 10, start + Duration::from_secs(2), &mut out)
            .expired,
        0
    );
    assert_eq!(payloads(&out), ["edge"]);

    session.push(expiring("edge", Duration::from_secs(3), start));
    out.clear();
    assert_eq!(
        session
            .take_deliverable(10, 10, start + Duration::from_secs(3), &mut out)
            .expired,
        1
    );
    assert!(out.is_empty());
}

#[test]
fn expired_messages_behind_a_full_window_wait_with_the_rest() {
    let session = online(limits(10, 0, OverflowPolicy::DropNew));
    let start = Instant::now();
    session.push(delivery("blocks", QoS::AtLeastOnce));
    session.push(expiring("stale", Duration::from_secs(1), start));
    let mut out = Vec::new();
    assert_eq!(
        session
            .take_deliverable(10, 0, start + Duration::from_secs(5), &mut out)
            .expired,
        0
    );
    assert!(out.is_empty());
    assert_eq!(session.pending_len(), 2);
}

#[test]
fn deliveries_older_than_the_age_bound_are_dropped_and_counted_when_taken() {
    let mut bounded = limits(100, 0, OverflowPolicy::DropOldest);
    bounded.max_queued_age_ms = 60_000;
    let session = online(bounded);
    let now_ms = crate::store::record::unix_ms_now();
    // As restored after a restart: queued two and one hours ago, then a minute
    // less a second ago; then one queued now.
    for (payload, age_ms) in [("old1", 7_200_000), ("old2", 3_600_000), ("fresh1", 59_000)] {
        session.restore_delivery(
            delivery(payload, QoS::AtLeastOnce),
            None,
            false,
            now_ms - age_ms,
        );
    }
    assert_eq!(
        session.push(delivery("fresh2", QoS::AtLeastOnce)),
        PushOutcome::Queued
    );
    let mut out = Vec::new();
    let taken = session.take_deliverable(10, 10, Instant::now(), &mut out);
    assert_eq!((taken.aged, taken.expired), (2, 0));
    assert_eq!(payloads(&out), ["fresh1", "fresh2"]);
    assert_eq!(session.dropped_count(), 2);
}

#[test]
fn without_an_age_bound_old_deliveries_are_sent() {
    let session = online(limits(100, 0, OverflowPolicy::DropOldest));
    let long_ago = crate::store::record::unix_ms_now() - 86_400_000;
    session.restore_delivery(delivery("old", QoS::AtLeastOnce), None, false, long_ago);
    let mut out = Vec::new();
    let taken = session.take_deliverable(10, 10, Instant::now(), &mut out);
    assert_eq!((taken.aged, payloads(&out)), (0, vec!["old".to_string()]));
}
