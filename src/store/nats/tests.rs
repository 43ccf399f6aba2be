//! The NATS backend against a real `nats-server -js`: the store test suite
//! (`store/suite.rs`), and what is its own: sessions other nodes own are left
//! to them, a delivery of another node's message, idempotent writes.

use std::collections::HashSet;
use std::sync::Arc;

use super::test_server::Nats;
use super::*;
use crate::store::suite::{message, put, put_incoming, put_message, put_session};

/// A server of its own per case, and a runtime for the NATS connection (the
/// seam's calls come from the test thread, as from the store's writer thread).
pub(crate) struct Fixture {
    pub(crate) nats: Nats,
    pub(crate) runtime: tokio::runtime::Runtime,
}

impl Fixture {
    pub(crate) fn new() -> Fixture {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let nats = runtime.block_on(Nats::start());
        Fixture { nats, runtime }
    }

    pub(crate) fn open(&self, node: &str, foreign: &[&str]) -> Arc<dyn Backend> {
        self.open_nats(node, foreign) as Arc<dyn Backend>
    }

    pub(crate) fn open_nats(&self, node: &str, foreign: &[&str]) -> Arc<NatsBackend> {
        let foreign: HashSet<String> = foreign.iter().map(|c| c.to_string()).collect();
        self.runtime.block_on(async {
            let connect = || async_nats::connect(&self.nats.url);
            let client = connect().await.expect("connect");
            let backend = NatsBackend::open(jetstream::new(client), node, 1, foreign)
                .await
                .expect("open the bucket")
                // As a node runs it: streams on connections of their own.
                .with_stream_connections(
                    jetstream::new(connect().await.expect("connect")),
                    jetstream::new(connect().await.expect("connect")),
                    1,
                );
            Arc::new(backend)
        })
    }

    /// A JetStream context of its own (what another process would see).
    pub(crate) fn jetstream(&self) -> jetstream::Context {
        self.runtime.block_on(async {
            let client = async_nats::connect(&self.nats.url).await.expect("connect");
            jetstream::new(client)
        })
    }
}

fn fixture(_name: &str) -> (Arc<Fixture>, impl FnMut() -> Arc<dyn Backend>) {
    let fixture = Arc::new(Fixture::new());
    let guard = Arc::clone(&fixture);
    (guard, move || fixture.open("tern-1", &[]))
}

crate::store::suite::store_suite!(fixture);

#[test]
fn sessions_another_node_owns_are_left_to_it() {
    let f = Fixture::new();
    let a = f.open("tern-a", &[]);
    let ops = [
        put_session("mine"),
        put_session("theirs"),
        put_message(1, "a"),
        put("mine", 1, 1),
        put("theirs", 1, 1),
        put_incoming("theirs", 3),
        StoreOp::PutQueued {
            queue: "q".into(),
            seq: 1,
            record: message("q"),
        },
    ];
    a.apply(&ops, true).unwrap();
    // Stopped: its journal is in the bucket (a start reads only its own journal).
    a.close();
    let own = put_message(1, "b");
    f.open("tern-b", &[]).apply(&[own], true).unwrap();
    let b = f.open("tern-b", &["theirs"]);
    let snap = b.load().unwrap();
    let clients: Vec<&str> = snap.sessions.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(clients, vec!["mine"], "an unowned session is loaded");
    assert_eq!(snap.deliveries.len(), 1);
    assert!(snap.incoming_qos2.is_empty(), "theirs stays with its owner");
    assert!(
        snap.queued.is_empty(),
        "queued messages stay with their node"
    );
    // The delivery refers to tern-a's message 1 under an id of tern-b's
    // above tern-b's own.
    let mut messages = snap.messages.clone();
    messages.sort_by_key(|m| m.0);
    assert_eq!(messages, vec![(1, message("b")), (2, message("a"))]);
    assert_eq!(snap.deliveries[0].2.message_id, 2);
    // Acknowledged on tern-b: tern-a's message stays (tern-a's "theirs" refers to it).
    let ack = StoreOp::DeleteDelivery {
        client_id: "mine".into(),
        seq: 1,
    };
    assert_eq!(b.apply(&[ack], true).unwrap(), -1);
    let snap = f.open("tern-a", &["mine"]).load().unwrap();
    assert_eq!(snap.deliveries.len(), 1);
    assert_eq!(snap.messages, vec![(1, message("a"))]);
}

#[test]
fn a_write_sent_again_with_the_same_message_id_is_stored_once() {
    let f = Fixture::new();
    let (first, second) = f.runtime.block_on(async {
        let client = async_nats::connect(&f.nats.url).await.expect("connect");
        let js = jetstream::new(client);
        open_bucket(&js, BUCKET, 1).await.expect("bucket");
        let write = |payload: &'static [u8]| {
            vec![(
                keys::retained("t"),
                Some(bytes::Bytes::from_static(payload)),
            )]
        };
        publish::publish(js.clone(), write(b"1"), "n.1.1".into())
            .await
            .unwrap();
        let stream = js.get_stream(format!("KV_{BUCKET}")).await.unwrap();
        let first = stream.cached_info().state.last_sequence;
        // A resend after a lost acknowledgement: same id, even if the value differed.
        publish::publish(js.clone(), write(b"2"), "n.1.1".into())
            .await
            .unwrap();
        let mut stream = js.get_stream(format!("KV_{BUCKET}")).await.unwrap();
        let second = stream.info().await.unwrap().state.last_sequence;
        (first, second)
    });
    assert_eq!(first, second, "the second send was a duplicate");
}

#[test]
fn a_session_taken_over_is_read_by_its_client_id_and_let_go_without_writes() {
    let f = Fixture::new();
    let a = f.open("tern-a", &[]);
    let ops = [
        put_session("c"),
        put_message(1, "a"),
        put("c", 1, 1),
        put("c", 2, 1),
        StoreOp::MarkDelivery {
            client_id: "c".into(),
            seq: 1,
            packet_id: 11,
            released: false,
        },
        put_incoming("c", 4),
    ];
    a.apply(&ops, true).unwrap();
    let b = f.open("tern-b", &["c"]);
    assert!(
        b.load().unwrap().sessions.is_empty(),
        "c was tern-a's at start"
    );
    let snap = b
        .load_client("c", Some(&["tern-a"]))
        .unwrap()
        .expect("a shared store");
    assert_eq!(snap.sessions.len(), 1);
    assert_eq!(snap.incoming_qos2, vec![("c".to_string(), 4)]);
    let ids: Vec<(u64, Option<u16>)> = snap
        .deliveries
        .iter()
        .map(|d| (d.1, d.2.packet_id))
        .collect();
    assert_eq!(ids, vec![(1, Some(11)), (2, None)], "packet ids kept");
    let message_id = snap.deliveries[0].2.message_id;
    assert!(
        message_id >= 1 << 62,
        "far from the ids tern-b's core gives"
    );
    assert_eq!(snap.messages, vec![(message_id, message("a"))]);
    assert!(a.release_client("c"), "tern-a lets go and deletes nothing");
    // tern-b now counts and deletes c's records as its own.
    let end = StoreOp::DeleteSession {
        client_id: "c".into(),
    };
    assert_eq!(b.apply(&[end], true).unwrap(), -2);
    // Its deletes reach the bucket (over the records it wrote there when
    // it took c over).
    b.close();
    let snap = f.open("tern-a", &[]).load().unwrap();
    assert!(snap.sessions.is_empty() && snap.deliveries.is_empty());
}

/// A batch's writes go out in the order the batch made them, so a node killed
/// mid-batch leaves a prefix in JetStream: never delivery 2 without delivery 1
/// (the crash test once saw a subscriber get 147 before 146 when they were
/// published in hash order).
#[test]
fn a_batch_is_written_in_the_order_of_its_operations() {
    let mut mirror = mirror::Mirror::new("n1");
    let mut ops = vec![put_session("c")];
    for n in 1..=50 {
        ops.push(put_message(n, "t"));
        ops.push(put("c", n, n));
    }
    let (writes, _) = mirror.plan(&ops);
    let expected: Vec<String> = (1..=50).map(|n| keys::delivery("c", n)).collect();
    let written: Vec<&String> = writes.keys().filter(|k| expected.contains(k)).collect();
    assert_eq!(written, expected.iter().collect::<Vec<_>>());
    let first_message = writes
        .get_index_of(&keys::message("n1", 1))
        .expect("message 1 written");
    let first_delivery = writes
        .get_index_of(&keys::delivery("c", 1))
        .expect("delivery 1 written");
    assert!(
        first_message < first_delivery,
        "a delivery's message goes first"
    );
}

/// A message stored, delivered and acknowledged within one batch (while the
/// previous commit was out) costs no write; one acknowledged in a later
/// batch leaves tombstones that delete what JetStream has.
#[test]
fn records_made_and_deleted_in_one_batch_are_not_written() {
    let mut mirror = mirror::Mirror::new("n1");
    let ack = |seq| StoreOp::DeleteDelivery {
        client_id: "c".into(),
        seq,
    };
    let mark = StoreOp::MarkDelivery {
        client_id: "c".into(),
        seq: 1,
        packet_id: 7,
        released: false,
    };
    let queued = StoreOp::PutQueued {
        queue: "q".into(),
        seq: 1,
        record: message("q"),
    };
    let dequeued = StoreOp::DeleteQueued {
        queue: "q".into(),
        seq: 1,
    };
    let ops = [
        put_session("c"),
        put_message(1, "t"),
        put("c", 1, 1),
        mark,
        ack(1),
        put_message(2, "t"),
        put("c", 2, 2),
        put_incoming("c", 5),
        StoreOp::DeleteIncomingQos2 {
            client_id: "c".into(),
            packet_id: 5,
        },
        queued,
        dequeued,
    ];
    let (writes, held) = mirror.plan(&ops);
    let keys: Vec<&String> = writes.keys().collect();
    assert_eq!(
        keys,
        vec![
            &keys::session("c"),
            &keys::message("n1", 2),
            &keys::delivery("c", 2)
        ],
        "message 1, its delivery, the QoS 2 id and the queued message came and went"
    );
    assert_eq!(held, 1);
    // Delivery 2 is in JetStream now: its acknowledgement deletes it there.
    let (writes, held) = mirror.plan(&[ack(2)]);
    let expected = [
        (keys::delivery("c", 2), None),
        (keys::message("n1", 2), None),
    ];
    assert_eq!(writes.into_iter().collect::<Vec<_>>(), expected);
    assert_eq!(held, -1);
}

/// A message two sessions here refer to, one of them let go to another
/// node (which refers to it under this node's key): the other's
/// acknowledgement does not delete it.
#[test]
fn a_message_a_released_client_refers_to_is_not_deleted_by_another_sessions_ack() {
    let mut mirror = mirror::Mirror::new("n1");
    let ops = [
        put_session("mine"),
        put_session("moving"),
        put_message(1, "t"),
        put("mine", 1, 1),
        put("moving", 1, 1),
    ];
    mirror.plan(&ops);
    mirror.release("moving");
    let ack = StoreOp::DeleteDelivery {
        client_id: "mine".into(),
        seq: 1,
    };
    let (writes, _) = mirror.plan(&[ack]);
    assert!(
        !writes.contains_key(&keys::message("n1", 1)),
        "message 1 stays for the node holding \"moving\": {writes:?}"
    );
    assert!(writes.contains_key(&keys::delivery("mine", 1)));
}

/// A session let go was the last here to refer to this node's message; a
/// session taken over later brings it back (its deliveries refer to the
/// same key) and acknowledges it: still not deleted, as the session let go
/// refers to it on the other node (the clustered crash test: an offline
/// subscriber's last deliveries lost their messages once a restarted node
/// took over an online session and it acknowledged them).
#[test]
fn a_message_a_session_taken_over_brings_back_is_not_deleted_by_its_ack() {
    let mut mirror = mirror::Mirror::new("n1");
    let ops = [
        put_session("moving"),
        put_message(1, "t"),
        put("moving", 1, 1),
    ];
    mirror.plan(&ops);
    mirror.release("moving");
    let mut taken = mirror::Mirror::new("n1");
    taken.plan(&[put_session("back"), put_message(1, "t"), put("back", 1, 1)]);
    mirror.merge(taken);
    let ack = StoreOp::DeleteDelivery {
        client_id: "back".into(),
        seq: 1,
    };
    let (writes, _) = mirror.plan(&[ack]);
    assert!(
        !writes.contains_key(&keys::message("n1", 1)),
        "message 1 stays for the node holding \"moving\": {writes:?}"
    );
    assert!(writes.contains_key(&keys::delivery("back", 1)));
}

/// The same after a restart: a session another node holds now refers to
/// this node's message (read at start from the bucket), so this node's own
/// session acknowledging it does not delete it.
#[test]
fn a_message_a_foreign_session_refers_to_survives_a_local_ack_after_a_restart() {
    let f = Fixture::new();
    let a = f.open("tern-a", &[]);
    let ops = [
        put_session("mine"),
        put_session("theirs"),
        put_message(1, "t"),
        put("mine", 1, 1),
        put("theirs", 1, 1),
    ];
    a.apply(&ops, true).unwrap();
    a.close();
    let a = f.open("tern-a", &["theirs"]);
    assert_eq!(a.load().unwrap().deliveries.len(), 1, "mine only");
    let ack = StoreOp::DeleteDelivery {
        client_id: "mine".into(),
        seq: 1,
    };
    a.apply(&[ack], true).unwrap();
    a.close();
    let snap = f.open("tern-b", &["mine"]).load().unwrap();
    assert_eq!(
        snap.deliveries.len(),
        1,
        "theirs' delivery: {:?}",
        snap.deliveries
    );
    assert_eq!(snap.messages.len(), 1, "with its message");
}

/// More writes in one commit than async-nats lets a context have
/// unacknowledged (5,000): the commit collects acknowledgements while it
/// sends (it used to hold them all and wait for a permit until it timed out).
#[test]
fn a_commit_of_more_writes_than_the_clients_ack_window() {
    let f = Fixture::new();
    let ops: Vec<StoreOp> = (1..=6_000).map(|n| put_message(n, "t")).collect();
    f.open("tern-1", &[]).apply(&ops, true).unwrap();
    let snap = f.open("tern-1", &[]).load().unwrap();
    assert_eq!(snap.messages.len(), 6_000);
}

#[test]
fn a_node_that_let_a_session_go_writes_none_of_its_records_until_it_holds_it_again() {
    let f = Fixture::new();
    let a = f.open("tern-a", &[]);
    a.apply(&[put_session("c"), put_incoming("c", 4)], true)
        .unwrap();
    assert!(a.release_client("c"));
    // Late writes of tern-a (in flight when tern-b took c over): dropped.
    let late = [
        StoreOp::DeleteSession {
            client_id: "c".into(),
        },
        put_incoming("c", 5),
        put_session("d"),
    ];
    a.apply(&late, true).unwrap();
    a.close();
    let b = f.open("tern-b", &["c"]);
    let clients: Vec<String> = b
        .load()
        .unwrap()
        .sessions
        .into_iter()
        .map(|s| s.0)
        .collect();
    assert_eq!(clients, vec!["d"], "d (never let go) written");
    let snap = b
        .load_client("c", Some(&["tern-a"]))
        .unwrap()
        .expect("shared");
    assert_eq!(snap.sessions.len(), 1, "c kept");
    assert_eq!(snap.incoming_qos2, vec![("c".to_string(), 4)]);
    // Held again (its client came back to tern-a): written again.
    a.hold_client("c");
    a.apply(&[put_incoming("c", 6)], true).unwrap();
    let snap = f
        .open("tern-c", &[])
        .load_client("c", Some(&["tern-a"]))
        .unwrap()
        .expect("shared");
    assert!(snap.incoming_qos2.contains(&("c".to_string(), 6)));
}

#[test]
fn a_stream_created_or_deleted_on_one_node_is_told_to_the_others() {
    let f = Fixture::new();
    let (a, b) = (f.open_nats("tern-a", &[]), f.open_nats("tern-b", &[]));
    let mut changes = b.stream_changes().expect("b hears of other nodes' streams");
    assert!(b.stream_changes().is_none(), "taken once");
    let mut own = a.stream_changes().expect("a too");
    let settings = br#"{"name":"made","topics":["m/#"]}"#.to_vec();
    a.apply(
        &[StoreOp::PutStreamDeclaration {
            stream: "made".into(),
            settings: settings.clone(),
        }],
        true,
    )
    .unwrap();
    a.apply(
        &[StoreOp::DeleteStream {
            stream: "made".into(),
        }],
        true,
    )
    .unwrap();
    let next = |rx: &mut tokio::sync::mpsc::Receiver<crate::store::StreamChange>| {
        f.runtime.block_on(async {
            tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
                .await
                .expect("a change within 5 s")
        })
    };
    let Some(crate::store::StreamChange::Created {
        stream,
        settings: got,
    }) = next(&mut changes)
    else {
        panic!("the creation first");
    };
    assert_eq!(stream, "made");
    let json = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).unwrap();
    assert_eq!(json(&got), json(&settings));
    assert_eq!(
        next(&mut changes),
        Some(crate::store::StreamChange::Deleted {
            stream: "made".into()
        })
    );
    assert!(
        own.try_recv().is_err(),
        "a node is not told its own changes"
    );
}

#[test]
fn a_new_run_gives_message_ids_above_every_one_an_earlier_run_gave() {
    // The earlier run's messages are gone from this node's records (one was
    // delivered, one moved with a session): another node may still write
    // their keys, so a new run must never reuse their ids.
    let f = Fixture::new();
    let first = f.open("tern-a", &[]);
    let used = first.first_message_id() + 7;
    let ops = [put_session("c"), put_message(used, "a"), put("c", 1, used)];
    first.apply(&ops, true).expect("commit");
    let delivered = StoreOp::DeleteDelivery {
        client_id: "c".into(),
        seq: 1,
    };
    first.apply(&[delivered], true).expect("commit");
    drop(first);
    let again = f.open("tern-a", &[]);
    assert!(again.load().expect("load").messages.is_empty());
    assert!(
        again.first_message_id() > used,
        "{} must be above {used}",
        again.first_message_id()
    );
    assert!(again.first_message_id() < TAKEN_OVER_IDS);
}
