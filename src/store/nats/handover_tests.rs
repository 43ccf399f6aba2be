//! A client let go to another node against a real `nats-server -js`: the
//! old holder's late bucket writes of its records never land over the new
//! holder's, and a takeover reads the previous holder's journal only; a
//! dead node's journal goes once nothing in it is needed.

use std::time::Instant;

use super::tests::Fixture;
use super::*;
use crate::store::suite::{message, put, put_message, put_session};

pub(super) fn ack(client: &str, seq: u64) -> StoreOp {
    StoreOp::DeleteDelivery {
        client_id: client.into(),
        seq,
    }
}

/// Whether the store bucket has a value under `key` now.
fn in_bucket(f: &Fixture, key: &str) -> bool {
    let js = f.jetstream();
    f.runtime.block_on(async {
        let kv = js.get_key_value(BUCKET).await.expect("bucket");
        kv.get(key).await.expect("read").is_some()
    })
}

/// tern-a holds x with delivery 1 in its journal only and lets x go (its
/// rounds held off); tern-b takes x over. Returns both.
fn handed_over(f: &Fixture) -> (Arc<NatsBackend>, Arc<NatsBackend>) {
    let a = f.open_nats("tern-a", &[]);
    let paused = f.runtime.block_on(a.compactor.pause());
    let ops = [put_session("x"), put_message(1, "t"), put("x", 1, 1)];
    a.apply(&ops, true).unwrap();
    assert!(a.release_client("x"));
    let b = f.open_nats("tern-b", &["x"]);
    assert!(b.load().unwrap().sessions.is_empty());
    let snap = b
        .load_client("x", Some(&["tern-a"]))
        .unwrap()
        .expect("shared");
    assert_eq!(snap.deliveries.len(), 1, "read from tern-a's journal");
    drop(paused);
    (a, b)
}

/// What tern-c reads of x, taken over from tern-b.
fn taken_over_by_c(f: &Fixture) -> Snapshot {
    let c = f.open("tern-c", &["x"]);
    c.load_client("x", Some(&["tern-b"]))
        .unwrap()
        .expect("shared")
}

/// After both nodes' rounds: no record of x's delivery anywhere.
fn assert_delivery_gone(f: &Fixture) {
    let key = keys::delivery("x", 1);
    assert!(!in_bucket(f, &key), "{key} stays deleted in the bucket");
    let snap = taken_over_by_c(f);
    assert_eq!(snap.sessions.len(), 1);
    assert!(snap.deliveries.is_empty(), "no delivery comes back");
}

#[test]
fn a_late_write_of_the_old_holder_after_the_new_holders_delete_is_refused() {
    let f = Fixture::new();
    let (a, b) = handed_over(&f);
    let paused = f.runtime.block_on(a.compactor.pause());
    assert_eq!(b.apply(&[ack("x", 1)], true).unwrap(), -1);
    f.runtime.block_on(b.compactor.round(true)).unwrap();
    drop(paused);
    // tern-a's handover round, late: its write of delivery 1 is refused.
    f.runtime.block_on(a.compactor.round(true)).unwrap();
    assert_delivery_gone(&f);
}

#[test]
fn the_new_holders_delete_after_a_late_write_of_the_old_holder_wins() {
    let f = Fixture::new();
    let (a, b) = handed_over(&f);
    f.runtime.block_on(a.compactor.round(true)).unwrap();
    assert!(
        in_bucket(&f, &keys::delivery("x", 1)),
        "tern-a's handover wrote delivery 1"
    );
    assert_eq!(b.apply(&[ack("x", 1)], true).unwrap(), -1);
    f.runtime.block_on(b.compactor.round(true)).unwrap();
    assert_delivery_gone(&f);
}

#[test]
fn a_takeover_reads_the_previous_holders_journal_not_every_nodes() {
    let f = Fixture::new();
    // tern-z's journal: 8 MB of records of other clients, never compacted.
    let js = f.jetstream();
    f.runtime.block_on(async {
        journal::open(&js, 1).await.expect("journal");
        let entries: Vec<journal::Entry> = (0..64)
            .map(|n| journal::Entry::Put(keys::session(&format!("z{n}")), vec![7; 128 * 1024]))
            .collect();
        let subject = journal::subject("tern-z");
        journal::append(&js, &subject, &entries, "z.1")
            .await
            .expect("append");
    });
    let a = f.open_nats("tern-a", &[]);
    a.apply(
        &[put_session("x"), put_message(1, "t"), put("x", 1, 1)],
        true,
    )
    .unwrap();
    let timed = |node: &str, previous: Option<&str>| {
        let backend = f.open_nats(node, &["x"]);
        let started = Instant::now();
        let snap = backend
            .load_client("x", previous.as_ref().map(std::slice::from_ref))
            .unwrap()
            .expect("shared");
        let elapsed = started.elapsed();
        assert_eq!(snap.sessions.len(), 1, "{node} read x");
        assert_eq!(snap.deliveries.len(), 1, "{node} read x's delivery");
        elapsed
    };
    let every = timed("tern-b", None);
    let previous = timed("tern-c", Some("tern-b"));
    println!(
        "load_client with 8 MB of another node's journal: every journal {} ms, previous holder's only {} ms",
        every.as_millis(),
        previous.as_millis()
    );
}

/// The entries in node `node`'s journal now.
fn journal_len(f: &Fixture, node: &str) -> usize {
    let js = f.jetstream();
    f.runtime
        .block_on(journal::read(&js, &journal::subject(node)))
        .expect("journal")
        .len()
}

fn purge_dead(f: &Fixture, node: &str) -> bool {
    let js = f.jetstream();
    f.runtime
        .block_on(purge_dead_journal(&js, node))
        .expect("purge")
}

#[test]
fn a_dead_nodes_journal_goes_once_its_sessions_are_adopted_and_not_before() {
    let f = Fixture::new();
    let a = f.open_nats("tern-a", &[]);
    let paused = f.runtime.block_on(a.compactor.pause());
    let ops = [
        put_session("x"),
        put_message(1, "t"),
        put("x", 1, 1),
        put_session("y"),
    ];
    a.apply(&ops, true).unwrap();
    drop(paused);
    drop(a); // died before a round: all of it in its journal only
    assert!(!purge_dead(&f, "tern-a"), "x and y not adopted yet");
    let b = f.open_nats("tern-b", &["x", "y"]);
    let snap = b
        .load_client("x", Some(&["tern-a"]))
        .unwrap()
        .expect("shared");
    assert_eq!(snap.deliveries.len(), 1);
    assert!(!purge_dead(&f, "tern-a"), "y not adopted yet");
    b.load_client("y", Some(&["tern-a"]))
        .unwrap()
        .expect("shared");
    assert!(
        purge_dead(&f, "tern-a"),
        "only voided records and a message adopted"
    );
    assert_eq!(journal_len(&f, "tern-a"), 0);
    b.close();
    let snap = taken_over_by_c(&f);
    assert_eq!(snap.sessions.len(), 1);
    assert_eq!(snap.messages.len(), 1, "the message came with its delivery");
}

#[test]
fn a_dead_nodes_journal_with_records_only_it_writes_is_kept() {
    let f = Fixture::new();
    let a = f.open_nats("tern-a", &[]);
    let paused = f.runtime.block_on(a.compactor.pause());
    let retained = StoreOp::PutRetained {
        record: message("r"),
    };
    a.apply(&[put_session("x"), retained], true).unwrap();
    drop(paused);
    drop(a);
    let b = f.open_nats("tern-b", &["x"]);
    b.load_client("x", Some(&["tern-a"]))
        .unwrap()
        .expect("shared");
    assert!(
        !purge_dead(&f, "tern-a"),
        "the retained message is tern-a's to write"
    );
    assert!(journal_len(&f, "tern-a") > 0);
    let snap = f.open("tern-a", &["x"]).load().unwrap();
    assert_eq!(
        snap.retained,
        vec![message("r")],
        "a restart still finds it"
    );
}

#[test]
fn a_takeover_reads_the_previous_holders_marks_from_its_journal_and_they_keep_no_journal() {
    use crate::store::suite_marks::{mark, put_marks};
    let f = Fixture::new();
    let a = f.open_nats("tern-a", &[]);
    let paused = f.runtime.block_on(a.compactor.pause());
    let marks = [mark("tern-o", 7, 120), mark("tern-a", 3, 40)];
    a.apply(&[put_session("x"), put_marks("tern-a", &marks)], true)
        .unwrap();
    drop(paused);
    drop(a); // died before a round: its marks are in its journal only
    let b = f.open_nats("tern-b", &["x"]);
    for previous in [None, Some("tern-a")] {
        let snap = b
            .load_client("x", previous.as_ref().map(std::slice::from_ref))
            .unwrap()
            .expect("shared");
        assert_eq!(
            snap.peer_marks,
            vec![("tern-a".to_string(), marks.to_vec())],
            "read with previous holder {previous:?}"
        );
    }
    assert!(
        purge_dead(&f, "tern-a"),
        "its marks keep no dead node's journal"
    );
}

/// A session's delivery numbers start again at 1 when it has none stored
/// (all acknowledged, then moved): a key compacted and deleted before comes
/// back. Let go while only in the journal, it still reaches the bucket (no
/// other node wrote it since), and the node taking it over reads it.
#[test]
fn a_released_record_under_a_key_deleted_before_reaches_the_new_holder() {
    let f = Fixture::new();
    let a = f.open_nats("tern-a", &[]);
    let ops = [put_session("x"), put_message(1, "t"), put("x", 1, 1)];
    a.apply(&ops, true).unwrap();
    f.runtime.block_on(a.compactor.round(true)).unwrap();
    assert_eq!(a.apply(&[ack("x", 1)], true).unwrap(), -1);
    f.runtime.block_on(a.compactor.round(true)).unwrap();
    let key = keys::delivery("x", 1);
    assert!(!in_bucket(&f, &key), "{key} deleted in the bucket");
    // The same key again, in tern-a's journal only; then x goes.
    let paused = f.runtime.block_on(a.compactor.pause());
    a.apply(&[put_message(2, "u"), put("x", 1, 2)], true)
        .unwrap();
    assert!(a.release_client("x"));
    drop(paused);
    f.runtime.block_on(a.compactor.round(true)).unwrap();
    assert!(in_bucket(&f, &key), "the handover wrote {key} again");
    let b = f.open_nats("tern-b", &["x"]);
    let snap = b
        .load_client("x", Some(&["tern-a"]))
        .unwrap()
        .expect("shared");
    assert_eq!(snap.deliveries.len(), 1, "the delivery tern-a held");
}

/// x on tern-a (deliveries 1 and 2 in the bucket), then on tern-b (it
/// acknowledged 1 and 5 and owes 3, all compacted). Returns tern-a.
fn to_b(f: &Fixture) -> Arc<NatsBackend> {
    let a = f.open_nats("tern-a", &[]);
    let ops = [
        put_session("x"),
        put_message(1, "a1"),
        put("x", 1, 1),
        put_message(2, "a2"),
        put("x", 2, 2),
    ];
    a.apply(&ops, true).unwrap();
    compact(f, &a);
    assert!(a.release_client("x"));
    compact(f, &a);
    let b = f.open_nats("tern-b", &["x"]);
    assert!(b.load().unwrap().sessions.is_empty());
    let snap = b
        .load_client("x", Some(&["tern-a"]))
        .unwrap()
        .expect("shared");
    assert_eq!(snap.deliveries.len(), 2, "tern-b read x's deliveries");
    let ops = [ack("x", 1), put_message(1, "b1"), put("x", 3, 1)];
    b.apply(&ops, true).unwrap();
    b.apply(&[put_message(2, "b2"), put("x", 5, 2)], true)
        .unwrap();
    compact(f, &b);
    b.apply(&[ack("x", 5)], true).unwrap();
    compact(f, &b);
    for seq in [1, 5] {
        let key = keys::delivery("x", seq);
        assert!(!in_bucket(f, &key), "tern-b deleted {key}");
    }
    assert!(b.release_client("x"));
    compact(f, &b);
    b.close();
    a
}

/// x back on tern-a (its rounds held off by the caller).
fn back_to_a(a: &NatsBackend) {
    a.hold_client("x");
    let snap = a
        .load_client("x", Some(&["tern-b"]))
        .unwrap()
        .expect("shared");
    assert_eq!(snap.deliveries.len(), 2, "tern-a read deliveries 2 and 3");
}

/// x back on tern-a (its rounds held off by the caller): it acknowledges
/// 2 and 3 and owes 1 again (a key tern-b deleted) and 4, in its journal
/// only, and lets x go.
fn back_to_a_and_let_go(a: &NatsBackend) {
    back_to_a(a);
    let ops = [
        ack("x", 2),
        ack("x", 3),
        put_message(10, "a10"),
        put("x", 1, 10),
        put_message(11, "a11"),
        put("x", 4, 11),
    ];
    a.apply(&ops, true).unwrap();
    assert!(a.release_client("x"));
}

/// The topics of `snap`'s deliveries, by delivery number.
fn owed(snap: &Snapshot) -> Vec<(u64, &str)> {
    let topic = |id: u64| {
        let m = snap.messages.iter().find(|m| m.0 == id).expect("message");
        m.1.topic.as_str()
    };
    let mut owed: Vec<(u64, &str)> = snap
        .deliveries
        .iter()
        .map(|d| (d.1, topic(d.2.message_id)))
        .collect();
    owed.sort();
    owed
}

pub(super) fn compact(f: &Fixture, node: &NatsBackend) {
    f.runtime.block_on(node.compactor.round(true)).unwrap();
}

/// Node `node` takes x over from `previous`.
fn take_over(f: &Fixture, node: &str, previous: &str) -> (Arc<NatsBackend>, Snapshot) {
    let backend = f.open_nats(node, &["x"]);
    let snap = backend.load_client("x", Some(&[previous])).unwrap();
    (backend, snap.expect("shared"))
}

/// A → B → A → C: tern-a's handover lands over tern-b's writes and deletes
/// of the move before (tern-c reads them after tern-a's `Forget`, from the
/// bucket alone): every delivery tern-a owed reaches tern-c, and none it
/// had acknowledged comes back.
#[test]
fn records_moved_a_b_a_c_reach_c_over_the_keys_b_wrote_and_deleted() {
    let f = Fixture::new();
    let a = to_b(&f);
    let paused = f.runtime.block_on(a.compactor.pause());
    back_to_a_and_let_go(&a);
    drop(paused);
    compact(&f, &a);
    let (_, snap) = take_over(&f, "tern-c", "tern-a");
    let owed = owed(&snap);
    assert_eq!(
        owed,
        [(1, "a10"), (4, "a11")],
        "tern-c owes what tern-a owed"
    );
}

/// A → B → A → C, tern-c reading tern-a's journal before tern-a's round and
/// acknowledging delivery 4: tern-a's late handover lands over tern-b's
/// keys, never over tern-c's delete.
#[test]
fn records_moved_a_b_a_c_never_land_over_the_new_holders_writes() {
    let f = Fixture::new();
    let a = to_b(&f);
    let paused = f.runtime.block_on(a.compactor.pause());
    back_to_a_and_let_go(&a);
    let (c, snap) = take_over(&f, "tern-c", "tern-a");
    assert_eq!(owed(&snap).len(), 2, "read from tern-a's journal");
    assert_eq!(c.apply(&[ack("x", 4)], true).unwrap(), -1);
    compact(&f, &c);
    drop(paused);
    compact(&f, &a);
    assert!(
        !in_bucket(&f, &keys::delivery("x", 4)),
        "tern-a's late write of delivery 4 refused"
    );
    c.close();
    let (_, snap) = take_over(&f, "tern-d", "tern-c");
    assert_eq!(owed(&snap), [(1, "a10")]);
}

/// A → B → A, tern-a restarted (its start writes what its journal held),
/// then owing 5 again (a key tern-b deleted), in its journal only, and
/// letting x go → C: the handover lands over tern-b's delete.
#[test]
fn records_moved_a_b_a_c_reach_c_after_a_restart_of_a() {
    let f = Fixture::new();
    let a = to_b(&f);
    let paused = f.runtime.block_on(a.compactor.pause());
    back_to_a(&a);
    drop(paused);
    drop(a); // died; restarted
    let a = f.open_nats("tern-a", &[]);
    assert_eq!(a.load().unwrap().deliveries.len(), 2, "x restored");
    let paused = f.runtime.block_on(a.compactor.pause());
    a.apply(&[put_message(10, "a10"), put("x", 5, 10)], true)
        .unwrap();
    assert!(a.release_client("x"));
    drop(paused);
    compact(&f, &a);
    let (_, snap) = take_over(&f, "tern-c", "tern-a");
    let owed = owed(&snap);
    let expected = [(2, "a2"), (3, "b1"), (5, "a10")];
    assert_eq!(owed, expected, "tern-c owes what tern-a owed");
}

/// tern-a holds x (delivery 1) and writes its marks, is killed (after
/// compacting everything when `compacted`), and its next run, which does
/// not hold x, writes `later` marks; tern-b takes x over from tern-a
/// (reading tern-a's journal and its own, or every node's when `from` is
/// None, as a live move with no word does). Returns the tern-a marks
/// tern-b read.
fn marks_read_after_a_later_run(
    compacted: bool,
    later: &[crate::store::record::PeerMarkRecord],
    from: Option<&[&str]>,
) -> Vec<Vec<crate::store::record::PeerMarkRecord>> {
    use crate::store::suite_marks::{mark, put_marks};
    let f = Fixture::new();
    let a = f.open_nats("tern-a", &[]);
    let ops = [put_session("x"), put_message(1, "t"), put("x", 1, 1)];
    a.apply(&ops, true).unwrap();
    a.apply(&[put_marks("tern-a", &[mark("tern-o", 7, 120)])], true)
        .unwrap();
    if compacted {
        a.close(); // its journal is empty
    }
    drop(a); // killed; x is claimed by tern-b meanwhile
    let again = f.open_nats("tern-a", &["x"]);
    assert!(again.load().unwrap().sessions.is_empty());
    again.apply(&[put_marks("tern-a", later)], true).unwrap();
    let b = f.open_nats("tern-b", &["x"]);
    let snap = b.load_client("x", from).unwrap().expect("shared");
    assert_eq!(snap.deliveries.len(), 1);
    tern_a_marks(snap)
}

fn tern_a_marks(snap: Snapshot) -> Vec<Vec<crate::store::record::PeerMarkRecord>> {
    snap.peer_marks
        .into_iter()
        .filter(|(n, _)| n == "tern-a")
        .map(|(_, m)| m)
        .collect()
}

/// Its next run does not hold x: its marks say what it routed, not what x had.
#[test]
fn a_takeover_uses_the_marks_of_the_run_that_held_the_client_not_a_later_runs() {
    use crate::store::suite_marks::mark;
    let later = [mark("tern-o", 7, 500), mark("tern-a", 9, 60)];
    let marks = marks_read_after_a_later_run(false, &later, Some(&["tern-a"]));
    assert!(
        marks.iter().all(|m| m.as_slice() != later),
        "a later run's marks would drop messages x never had: {marks:?}"
    );
}

/// The same when the run that held the client compacted all of it before
/// it was killed: its journal has no entry of the client, so the stored
/// marks cannot be tied to that run, and none are used (a later run's
/// would drop messages the session never had; the crash test lost two so).
#[test]
fn a_takeover_from_a_node_whose_journal_has_nothing_of_the_client_uses_no_stored_marks() {
    use crate::store::suite_marks::mark;
    let later = [mark("tern-o", 7, 500), mark("tern-a", 9, 60)];
    for from in [Some(&["tern-a"][..]), None] {
        let marks = marks_read_after_a_later_run(true, &later, from);
        assert!(marks.is_empty(), "stored marks used ({from:?}): {marks:?}");
    }
}

/// The same run of tern-a lets x go and, holding other sessions, writes
/// marks on: those say what they had, not x. A node that reads x with no
/// word of tern-a's marks (every journal, as a live move does when the
/// claim's word does not come) uses tern-a's marks written with its last
/// write of x, and none when those were compacted (the clustered crash
/// test lost four acknowledged messages so: x's capture left them out).
/// `compact`: before x is let go, after, or not at all.
#[test]
fn marks_a_node_wrote_after_it_let_a_client_go_are_not_the_clients() {
    use crate::store::suite_marks::{mark, put_marks};
    let held = [mark("tern-o", 7, 120)];
    let later = [mark("tern-o", 7, 500)];
    for compact_at in ["never", "before", "after"] {
        let f = Fixture::new();
        let a = f.open_nats("tern-a", &[]);
        let ops = [
            put_session("x"),
            put_message(1, "t"),
            put("x", 1, 1),
            put_marks("tern-a", &held),
        ];
        a.apply(&ops, true).unwrap();
        if compact_at == "before" {
            compact(&f, &a);
        }
        assert!(a.release_client("x"));
        if compact_at == "after" {
            compact(&f, &a);
        }
        a.apply(&[put_marks("tern-a", &later)], true).unwrap();
        let b = f.open_nats("tern-b", &["x"]);
        let snap = b.load_client("x", None).unwrap().expect("shared");
        assert_eq!(snap.deliveries.len(), 1, "x's delivery read");
        let marks = tern_a_marks(snap);
        match compact_at {
            "never" => assert_eq!(marks, [held.to_vec()]),
            "before" => assert!(marks.is_empty(), "untied marks used: {marks:?}"),
            _ => assert!(
                marks.iter().all(|m| m.as_slice() != later),
                "marks written after x went used: {marks:?}"
            ),
        }
    }
}
