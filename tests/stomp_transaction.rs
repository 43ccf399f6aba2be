//! STOMP transactions: SENDs and ACKs take effect at COMMIT, vanish on ABORT or
//! disconnect; unknown and duplicate transactions are errors.

mod common;

use common::stomp::{body, frame, StompClient};
use common::*;
use tern_stomp::Command;

async fn sends_in_a_transaction_are_delivered_at_commit(version: &str) {
    let server = start_server().await;
    let mut sub = StompClient::connect_version(server.stomp, version).await;
    sub.subscribe("s", "/topic/tx", "auto").await;
    let mut c = StompClient::connect_version(server.stomp, version).await;
    c.send_with_receipt(frame(Command::Begin, &[("transaction", "t1")], b""))
        .await;
    let tx_send = |b: &'static [u8]| {
        frame(
            Command::Send,
            &[("destination", "/topic/tx"), ("transaction", "t1")],
            b,
        )
    };
    let ra = c.send_deferred(tx_send(b"a")).await;
    let rb = c.send_deferred(tx_send(b"b")).await;
    sub.expect_nothing().await;
    let receipts = c
        .end_transaction(frame(Command::Commit, &[("transaction", "t1")], b""))
        .await;
    assert_eq!(
        receipts,
        [ra, rb],
        "the SENDs' RECEIPTs, in order, before COMMIT's"
    );
    assert_eq!(body(&sub.message().await), "a");
    assert_eq!(body(&sub.message().await), "b");
}

async fn abort_discards_the_transaction(version: &str) {
    let server = start_server().await;
    let mut sub = StompClient::connect_version(server.stomp, version).await;
    sub.subscribe("s", "/queue/txq", "auto").await;
    let mut c = StompClient::connect_version(server.stomp, version).await;
    c.send_with_receipt(frame(Command::Begin, &[("transaction", "t")], b""))
        .await;
    let r = c
        .send_deferred(frame(
            Command::Send,
            &[("destination", "/queue/txq"), ("transaction", "t")],
            b"never",
        ))
        .await;
    let receipts = c
        .end_transaction(frame(Command::Abort, &[("transaction", "t")], b""))
        .await;
    assert_eq!(receipts, [r], "the SEND's RECEIPT comes before ABORT's");
    c.send("/queue/txq", b"outside", &[]).await;
    assert_eq!(body(&sub.message().await), "outside");
    sub.expect_nothing().await;
}

async fn disconnect_discards_open_transactions(version: &str) {
    let server = start_server().await;
    let mut sub = StompClient::connect_version(server.stomp, version).await;
    sub.subscribe("s", "/topic/txd", "auto").await;
    let mut c = StompClient::connect_version(server.stomp, version).await;
    c.send_with_receipt(frame(Command::Begin, &[("transaction", "t")], b""))
        .await;
    c.send_frame(&frame(
        Command::Send,
        &[("destination", "/topic/txd"), ("transaction", "t")],
        b"never",
    ))
    .await;
    c.disconnect().await;
    sub.expect_nothing().await;
}

async fn acks_in_a_transaction_take_effect_at_commit(version: &str) {
    let server = start_server().await;
    let queues = || {
        server
            .server
            .as_ref()
            .unwrap()
            .router()
            .queues()
            .depth("txack")
    };
    let mut c = StompClient::connect_version(server.stomp, version).await;
    c.subscribe("s", "/queue/txack", "client-individual").await;
    c.send("/queue/txack", b"m", &[]).await;
    let m = c.message().await;
    c.send_with_receipt(frame(Command::Begin, &[("transaction", "t")], b""))
        .await;
    let r = c
        .send_deferred(c.ack_frame(Command::Ack, &m, &[("transaction", "t")]))
        .await;
    // A frame outside the transaction is answered at once, and alone.
    c.send_with_receipt(frame(Command::Begin, &[("transaction", "other")], b""))
        .await;
    assert_eq!(queues().unacked, 1);
    let receipts = c
        .end_transaction(frame(Command::Commit, &[("transaction", "t")], b""))
        .await;
    assert_eq!(receipts, [r]);
    assert_eq!(queues().unacked, 0);
}

async fn aborted_ack_leaves_the_message_unacknowledged(version: &str) {
    let server = start_server().await;
    let mut c = StompClient::connect_version(server.stomp, version).await;
    c.subscribe("s", "/queue/txabort", "client-individual")
        .await;
    c.send("/queue/txabort", b"m", &[]).await;
    let m = c.message().await;
    c.send_with_receipt(frame(Command::Begin, &[("transaction", "t")], b""))
        .await;
    let r = c
        .send_deferred(c.ack_frame(Command::Ack, &m, &[("transaction", "t")]))
        .await;
    let receipts = c
        .end_transaction(frame(Command::Abort, &[("transaction", "t")], b""))
        .await;
    assert_eq!(receipts, [r]);
    // Still unacknowledged: it can be acked now.
    c.ack_message(Command::Ack, &m, &[]).await;
}

async fn commit_of_an_unknown_transaction_is_an_error(version: &str) {
    let server = start_server().await;
    let mut c = StompClient::connect_version(server.stomp, version).await;
    c.send_frame(&frame(
        Command::Commit,
        &[("transaction", "nope"), ("receipt", "r")],
        b"",
    ))
    .await;
    let e = c.expect_error().await;
    assert_eq!(e.header("message"), Some("no open transaction \"nope\""));
    assert_eq!(e.header("receipt-id"), Some("r"));
}

async fn send_in_an_unknown_transaction_is_an_error(version: &str) {
    let server = start_server().await;
    let mut c = StompClient::connect_version(server.stomp, version).await;
    c.send_frame(&frame(
        Command::Send,
        &[("destination", "/topic/x"), ("transaction", "nope")],
        b"x",
    ))
    .await;
    c.expect_error().await;
}

async fn beginning_an_open_transaction_again_is_an_error(version: &str) {
    let server = start_server().await;
    let mut c = StompClient::connect_version(server.stomp, version).await;
    c.send_with_receipt(frame(Command::Begin, &[("transaction", "t")], b""))
        .await;
    c.send_frame(&frame(Command::Begin, &[("transaction", "t")], b""))
        .await;
    let e = c.expect_error().await;
    assert!(
        e.header("message").unwrap().contains("already open"),
        "{e:?}"
    );
}

async fn receipts_of_transactional_frames_wait_for_the_end_of_their_transaction(version: &str) {
    let server = start_server().await;
    let depth = || {
        server
            .server
            .as_ref()
            .unwrap()
            .router()
            .queues()
            .depth("txreceipts")
    };
    let mut c = StompClient::connect_version(server.stomp, version).await;
    for t in ["t1", "t2"] {
        c.send_with_receipt(frame(Command::Begin, &[("transaction", t)], b""))
            .await;
    }
    let send = |t: &'static str, b: &'static [u8]| {
        frame(
            Command::Send,
            &[("destination", "/queue/txreceipts"), ("transaction", t)],
            b,
        )
    };
    let r1 = c.send_deferred(send("t1", b"1")).await;
    let r2 = c.send_deferred(send("t2", b"2")).await;
    let r3 = c.send_deferred(send("t1", b"3")).await;
    // The next RECEIPT is this frame's own (send_with_receipt fails on another).
    c.send_with_receipt(frame(
        Command::Subscribe,
        &[("id", "s"), ("destination", "/topic/unrelated")],
        b"",
    ))
    .await;
    assert_eq!(depth().ready, 0, "nothing happened yet");
    let receipts = c
        .end_transaction(frame(Command::Commit, &[("transaction", "t1")], b""))
        .await;
    assert_eq!(receipts, [r1, r3], "t1's receipts in frame order, t2's not");
    assert_eq!(depth().ready, 2, "a RECEIPT means done");
    let receipts = c
        .end_transaction(frame(Command::Commit, &[("transaction", "t2")], b""))
        .await;
    assert_eq!(receipts, [r2]);
    assert_eq!(depth().ready, 3);
}

// Behaviour meant to be the same in STOMP 1.0, 1.1 and 1.2: each case runs in each.
each_stomp_version!(
    sends_in_a_transaction_are_delivered_at_commit,
    abort_discards_the_transaction,
    disconnect_discards_open_transactions,
    acks_in_a_transaction_take_effect_at_commit,
    aborted_ack_leaves_the_message_unacknowledged,
    commit_of_an_unknown_transaction_is_an_error,
    send_in_an_unknown_transaction_is_an_error,
    beginning_an_open_transaction_again_is_an_error,
    receipts_of_transactional_frames_wait_for_the_end_of_their_transaction,
);
