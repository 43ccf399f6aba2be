//! The journal against a real `nats-server -js`: records born and gone
//! between two compactions never reach the bucket, a start replays what a
//! crash left between compaction's steps, a takeover reads a dead node's
//! journal, and a journal that is not compacted stays bounded.

use super::tests::Fixture;
use super::*;
use crate::store::suite::{message, put, put_incoming, put_message, put_session};

/// Messages the store bucket's stream has taken so far (writes and deletes).
fn bucket_writes(f: &Fixture) -> u64 {
    let js = f.jetstream();
    f.runtime.block_on(async {
        let mut stream = js.get_stream(format!("KV_{BUCKET}")).await.expect("bucket");
        stream.info().await.expect("info").state.last_sequence
    })
}

/// The entries in node `node`'s journal now.
fn journal_entries(f: &Fixture, node: &str) -> Vec<journal::Entry> {
    let js = f.jetstream();
    f.runtime.block_on(async {
        let read = journal::read(&js, &journal::subject(node)).await;
        read.expect("journal").into_iter().map(|e| e.2).collect()
    })
}

/// The subjects of the store bucket's messages after sequence `after`,
/// but for journal floors (`floor.rs`): the records written since.
fn record_writes_since(f: &Fixture, after: u64) -> Vec<String> {
    let js = f.jetstream();
    f.runtime.block_on(async {
        let stream = js.get_stream(format!("KV_{BUCKET}")).await.expect("bucket");
        let mut subjects = Vec::new();
        let mut next = after + 1;
        loop {
            let read = stream
                .raw_message_builder()
                .sequence(next)
                .next_by_subject(format!("$KV.{BUCKET}.>"))
                .send()
                .await;
            let Ok(message) = read else { break };
            next = message.sequence + 1;
            let subject = message.subject.to_string();
            if !subject.starts_with(&format!("$KV.{BUCKET}.f.")) {
                subjects.push(subject);
            }
        }
        subjects
    })
}

fn ack(client: &str, seq: u64) -> StoreOp {
    StoreOp::DeleteDelivery {
        client_id: client.into(),
        seq,
    }
}

#[test]
fn records_made_and_gone_between_compactions_never_reach_the_bucket() {
    let f = Fixture::new();
    let a = f.open_nats("tern-1", &[]);
    a.apply(&[put_session("c")], true).unwrap();
    a.close();
    let before = bucket_writes(&f);
    for n in 1..=20 {
        // Each its own commit, as with an online subscriber.
        a.apply(&[put_message(n, "t"), put("c", n, n)], true)
            .unwrap();
        assert_eq!(a.apply(&[ack("c", n)], true).unwrap(), -1);
    }
    a.close();
    assert_eq!(
        record_writes_since(&f, before),
        Vec::<String>::new(),
        "no put, no delete in the bucket"
    );
    assert!(
        journal_entries(&f, "tern-1").is_empty(),
        "the journal is purged"
    );
    let snap = f.open("tern-1", &[]).load().unwrap();
    assert_eq!(snap.sessions.len(), 1);
    assert!(snap.deliveries.is_empty() && snap.messages.is_empty());
}

#[test]
fn a_start_replays_a_journal_that_was_never_compacted() {
    let f = Fixture::new();
    let a = f.open_nats("tern-1", &[]);
    a.apply(
        &[put_session("c"), put_message(1, "t"), put("c", 1, 1)],
        true,
    )
    .unwrap();
    a.apply(
        &[put_incoming("c", 9), put_message(2, "u"), put("c", 2, 2)],
        true,
    )
    .unwrap();
    a.apply(&[ack("c", 1)], true).unwrap();
    // Killed: no close, no round since (a round writes only what outlived one).
    drop(a);
    assert_eq!(bucket_writes(&f), 0, "nothing compacted");
    let b = f.open_nats("tern-1", &[]);
    let snap = b.load().unwrap();
    assert_eq!(snap.sessions.len(), 1);
    assert_eq!(snap.incoming_qos2, vec![("c".to_string(), 9)]);
    let seqs: Vec<u64> = snap.deliveries.iter().map(|d| d.1).collect();
    assert_eq!(seqs, vec![2]);
    assert_eq!(snap.messages, vec![(2, message("u"))]);
    // The load compacted the journal into the bucket and purged it.
    assert!(journal_entries(&f, "tern-1").is_empty());
    assert_eq!(b.compactor.waiting(), 0);
    drop(b);
    let snap = f.open("tern-1", &[]).load().unwrap();
    assert_eq!(snap.deliveries.len(), 1, "the same after another start");
}

#[test]
fn a_start_after_a_crash_between_the_bucket_write_and_the_purge_loads_once() {
    let f = Fixture::new();
    let js = f.jetstream();
    let writes = vec![
        (
            keys::message("tern-1", 1),
            Some(kv_value::encode(keys::VALUE_VERSION, &message("t"))),
        ),
        (
            keys::retained("r"),
            Some(kv_value::encode(keys::VALUE_VERSION, &message("r"))),
        ),
    ];
    f.runtime.block_on(async {
        journal::open(&js, 1).await.expect("journal");
        open_bucket(&js, BUCKET, 1).await.expect("bucket");
        let subject = journal::subject("tern-1");
        let entries = journal::entries(&writes);
        journal::append(&js, &subject, &entries, "t.1")
            .await
            .expect("append");
        // Compacted into the bucket, then killed before the purge.
        publish::publish(js.clone(), writes.clone(), "t.c1".into())
            .await
            .expect("bucket");
    });
    let snap = f.open("tern-1", &[]).load().unwrap();
    assert_eq!(snap.retained, vec![message("r")]);
    assert_eq!(snap.messages, vec![(1, message("t"))]);
    assert!(journal_entries(&f, "tern-1").is_empty());
}

#[test]
fn a_session_of_a_dead_node_is_read_from_its_journal_and_adopted() {
    let f = Fixture::new();
    let a = f.open_nats("tern-a", &[]);
    let ops = [
        put_session("c"),
        put_message(1, "t"),
        put("c", 1, 1),
        put("c", 2, 1),
        put_incoming("c", 4),
    ];
    a.apply(&ops, true).unwrap();
    a.apply(&[ack("c", 2)], true).unwrap();
    drop(a); // died: all of it only in its journal
    assert_eq!(bucket_writes(&f), 0);
    let b = f.open_nats("tern-b", &["c"]);
    assert!(b.load().unwrap().sessions.is_empty());
    let snap = b
        .load_client("c", Some(&["tern-a"]))
        .unwrap()
        .expect("shared");
    assert_eq!(snap.sessions.len(), 1);
    assert_eq!(snap.incoming_qos2, vec![("c".to_string(), 4)]);
    let seqs: Vec<u64> = snap.deliveries.iter().map(|d| d.1).collect();
    assert_eq!(seqs, vec![1], "the acknowledged delivery stays gone");
    assert_eq!(snap.messages.len(), 1);
    assert!(
        journal_entries(&f, "tern-a")
            .iter()
            .any(|e| matches!(e, journal::Entry::Forget(c, _) if c == "c")),
        "the dead node's journal forgets c"
    );
    // tern-b acknowledges and stops; tern-a comes back with c foreign: it
    // writes none of c's old records into the bucket.
    b.apply(&[ack("c", 1)], true).unwrap();
    b.close();
    let a = f.open_nats("tern-a", &["c"]);
    assert!(a.load().unwrap().sessions.is_empty());
    a.close();
    let snap = f
        .open("tern-c", &["c"])
        .load_client("c", Some(&["tern-b"]))
        .unwrap()
        .expect("shared");
    assert_eq!(snap.sessions.len(), 1);
    assert!(
        snap.deliveries.is_empty(),
        "tern-a did not bring delivery 1 back"
    );
}

#[test]
fn a_restart_keeps_the_records_of_a_client_claimed_meanwhile_for_its_new_holder() {
    let f = Fixture::new();
    let a = f.open_nats("tern-a", &[]);
    a.apply(&[put_session("c"), put_incoming("c", 3)], true)
        .unwrap();
    drop(a); // died
             // tern-b claimed c while tern-a was down, and has not read it yet.
    let a = f.open_nats("tern-a", &["c"]);
    assert!(a.load().unwrap().sessions.is_empty());
    a.close();
    assert_eq!(
        bucket_writes(&f),
        0,
        "c's records are not tern-a's to compact"
    );
    let snap = f
        .open("tern-b", &["c"])
        .load_client("c", Some(&["tern-a"]))
        .unwrap()
        .expect("shared");
    assert_eq!(snap.sessions.len(), 1, "tern-a's journal was not purged");
    assert_eq!(snap.incoming_qos2, vec![("c".to_string(), 3)]);
}

#[test]
fn records_waiting_for_compaction_are_bounded() {
    let f = Fixture::new();
    let a = f.open_nats("tern-1", &[]);
    a.compactor.set_max_bytes(1_024);
    for n in 0..10 {
        let ops: Vec<StoreOp> = (0..20).map(|i| put_session(&format!("c{n}-{i}"))).collect();
        a.apply(&ops, true).unwrap();
        assert!(
            a.compactor.waiting() == 0,
            "a commit over the bound waits for a round"
        );
    }
    assert!(bucket_writes(&f) >= 180, "compacted without a close");
    drop(a);
    assert_eq!(f.open("tern-1", &[]).load().unwrap().sessions.len(), 200);
}

/// A session only in a node's journal (not compacted, its client id free in
/// `tern_clients`) is claimed by that node's start: before, it was restored
/// there unclaimed and another node could claim and serve it too.
#[test]
fn a_start_claims_the_sessions_only_its_journal_holds() {
    let f = Fixture::new();
    let a = f.open_nats("tern-a", &[]);
    let paused = f.runtime.block_on(a.compactor.pause());
    a.apply(&[put_session("journal-only"), put_session("let-go")], true)
        .unwrap();
    drop(paused);
    assert!(a.release_client("let-go"));
    f.runtime.block_on(a.compactor.round(false)).unwrap();
    let js = f.jetstream();
    let clients = f
        .runtime
        .block_on(journal_clients(&js, "tern-a", 1))
        .expect("journal read");
    assert!(clients.contains("journal-only"), "{clients:?}");
    assert!(
        !clients.contains("let-go"),
        "voided by its Forget: {clients:?}"
    );
    drop(a);
    f.runtime.block_on(async {
        crate::cluster::state::claim_at_start(&js, "tern-a", 1, 1)
            .await
            .expect("tern-a's claims");
        let later = crate::cluster::state::claim_at_start(&js, "tern-b", 1, 1)
            .await
            .expect("tern-b's claims");
        assert!(
            later.foreign.contains("journal-only"),
            "tern-a holds it: {:?}",
            later.foreign
        );
    });
}
