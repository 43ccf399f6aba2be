//! Unit tests of the queues' push consumers (leases: `lease.rs`).

use bytes::Bytes;

use super::*;
use crate::core::session::{DeliveryStyle, OverflowPolicy, QueueLimits};

/// A connected session with the given queue ack window (shared with `cluster.rs`'s tests).
pub(super) fn session(id: &str, window: Option<usize>) -> Arc<Session> {
    let session = Arc::new(Session::new(
        Arc::from(id),
        0,
        QueueLimits {
            max_queued: 100,
            max_queued_bytes: 0,
            overflow: OverflowPolicy::DropNew,
            max_queued_age_ms: 0,
        },
    ));
    let (tx, _rx) = tokio::sync::oneshot::channel();
    session.attach(1, tx, 0);
    session.set_delivery_style(DeliveryStyle {
        per_subscription: true,
        queue_ack_window: window,
    });
    session
}

pub(super) fn message(body: &'static str) -> Arc<Message> {
    Arc::new(Message::new(
        "$queue/jobs",
        Bytes::from_static(body.as_bytes()),
        QoS::AtLeastOnce,
        false,
    ))
}

fn bodies(session: &Session) -> Vec<String> {
    let mut out = Vec::new();
    session.take_pending(usize::MAX, &mut out);
    out.iter()
        .map(|d| String::from_utf8_lossy(&d.message.payload).into_owned())
        .collect()
}

#[test]
fn queue_name_accepts_plain_names_only() {
    assert_eq!(queue_name("$queue/jobs"), Some("jobs"));
    assert_eq!(queue_name("$queue/a/b"), Some("a/b"));
    assert_eq!(queue_name("$queue/"), None);
    assert_eq!(queue_name("$queue/a/+"), None);
    assert_eq!(queue_name("$queue/#"), None);
    assert_eq!(queue_name("queue/jobs"), None);
}

#[test]
fn messages_wait_for_a_consumer_then_go_round_robin() {
    let queues = QueueRegistry::new(10);
    for body in ["1", "2", "3", "4"] {
        queues.enqueue("jobs", message(body)).unwrap();
    }
    assert_eq!(queues.depth("jobs").ready, 4);
    let a = session("a", Some(10));
    let b = session("b", Some(10));
    queues.add_consumer("jobs", &a, QoS::AtLeastOnce, None, None, Exceptions::NONE);
    queues.add_consumer("jobs", &b, QoS::AtLeastOnce, None, None, Exceptions::NONE);
    // a was alone when it joined: it took everything waiting.
    assert_eq!(bodies(&a), ["1", "2", "3", "4"]);
    for body in ["5", "6", "7", "8"] {
        queues.enqueue("jobs", message(body)).unwrap();
    }
    let (from_a, from_b) = (bodies(&a), bodies(&b));
    assert_eq!(from_a.len() + from_b.len(), 4);
    assert_eq!(from_a.len(), 2, "{from_a:?} {from_b:?}");
}

#[test]
fn full_queue_refuses_and_ack_frees_room() {
    let queues = QueueRegistry::new(2);
    let a = session("a", Some(10));
    queues.add_consumer("jobs", &a, QoS::AtLeastOnce, None, None, Exceptions::NONE);
    let first = message("1");
    queues.enqueue("jobs", Arc::clone(&first)).unwrap();
    queues.enqueue("jobs", message("2")).unwrap();
    assert!(matches!(
        queues.enqueue("jobs", message("3")),
        Err(QueueError::Full { max: 2, .. })
    ));
    assert!(queues.ack("jobs", &a, &first).is_some());
    assert!(
        queues.ack("jobs", &a, &first).is_none(),
        "second ack is unknown"
    );
    queues.enqueue("jobs", message("3")).unwrap();
}

#[test]
fn nack_and_consumer_leaving_redeliver_in_order() {
    let queues = QueueRegistry::new(10);
    let a = session("a", Some(10));
    queues.add_consumer("jobs", &a, QoS::AtLeastOnce, None, None, Exceptions::NONE);
    let (m1, m2) = (message("1"), message("2"));
    queues.enqueue("jobs", Arc::clone(&m1)).unwrap();
    queues.enqueue("jobs", Arc::clone(&m2)).unwrap();
    assert_eq!(bodies(&a), ["1", "2"]);
    assert!(queues.claim("jobs", &a, &m1));
    assert!(!queues.claim("jobs", &a, &m1), "claimed once only");
    assert!(queues.nack("jobs", &a, &m1).is_some());
    assert_eq!(bodies(&a), ["1"], "the only consumer gets it again");
    assert!(queues.remove_consumer("jobs", &a));
    assert_eq!(queues.depth("jobs").ready, 2);
    let b = session("b", Some(10));
    queues.add_consumer("jobs", &b, QoS::AtLeastOnce, None, None, Exceptions::NONE);
    assert_eq!(bodies(&b), ["1", "2"]);
}

#[test]
fn ack_window_limits_what_one_consumer_holds() {
    let queues = QueueRegistry::new(10);
    let a = session("a", Some(1));
    let b = session("b", Some(1));
    queues.add_consumer("jobs", &a, QoS::AtLeastOnce, None, None, Exceptions::NONE);
    queues.add_consumer("jobs", &b, QoS::AtLeastOnce, None, None, Exceptions::NONE);
    let m1 = message("1");
    queues.enqueue("jobs", Arc::clone(&m1)).unwrap();
    queues.enqueue("jobs", message("2")).unwrap();
    queues.enqueue("jobs", message("3")).unwrap();
    assert_eq!(queues.depth("jobs").ready, 1);
    assert_eq!(bodies(&a), ["1"]);
    assert_eq!(bodies(&b), ["2"]);
    assert!(queues.ack("jobs", &a, &m1).is_some());
    assert_eq!(bodies(&a), ["3"]);
}

#[test]
fn consumers_without_a_window_are_done_on_hand_over() {
    let queues = QueueRegistry::new(1);
    let a = session("a", None);
    queues.add_consumer("jobs", &a, QoS::AtMostOnce, None, None, Exceptions::NONE);
    queues.enqueue("jobs", message("1")).unwrap();
    queues.enqueue("jobs", message("2")).unwrap();
    let mut out = Vec::new();
    a.take_pending(10, &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].qos, QoS::AtMostOnce);
    assert_eq!(out[0].filter.as_deref(), Some("$queue/jobs"));
    assert_eq!(queues.depth("jobs").unacked, 0);
}

#[test]
fn idle_queues_are_forgotten() {
    let queues = QueueRegistry::new(10);
    let a = session("a", Some(10));
    queues.add_consumer("jobs", &a, QoS::AtLeastOnce, None, None, Exceptions::NONE);
    let m = message("1");
    queues.enqueue("jobs", Arc::clone(&m)).unwrap();
    assert!(queues.ack("jobs", &a, &m).is_some());
    assert!(queues.remove_consumer("jobs", &a));
    assert_eq!(queues.queue_count(), 0);
}
