//! STOMP transactions: SENDs and ACKs take effect at COMMIT, vanish on ABORT or
//! disconnect; unknown and duplicate transactions are errors.

mod common;

use common::stomp::{body, frame, StompClient};
use common::*;
use tern_stomp::Command;

#[tokio::test]
async fn sends_in_a_transaction_are_delivered_at_commit() {
    let server = start_server().await;
    let mut sub = StompClient::connect(server.stomp).await;
    sub.subscribe("s", "/topic/tx", "auto").await;
    let mut c = StompClient::connect(server.stomp).await;
    c.send_with_receipt(frame(Command::Begin, &[("transaction", "t1")], b""))
        .await;
    c.send("/topic/tx", b"a", &[("transaction", "t1")]).await;
    c.send("/topic/tx", b"b", &[("transaction", "t1")]).await;
    sub.expect_nothing().await;
    c.send_with_receipt(frame(Command::Commit, &[("transaction", "t1")], b""))
        .await;
    assert_eq!(body(&sub.message().await), "a");
    assert_eq!(body(&sub.message().await), "b");
}

#[tokio::test]
async fn abort_discards_the_transaction() {
    let server = start_server().await;
    let mut sub = StompClient::connect(server.stomp).await;
    sub.subscribe("s", "/queue/txq", "auto").await;
    let mut c = StompClient::connect(server.stomp).await;
    c.send_with_receipt(frame(Command::Begin, &[("transaction", "t")], b""))
        .await;
    c.send("/queue/txq", b"never", &[("transaction", "t")])
        .await;
    c.send_with_receipt(frame(Command::Abort, &[("transaction", "t")], b""))
        .await;
    c.send("/queue/txq", b"outside", &[]).await;
    assert_eq!(body(&sub.message().await), "outside");
    sub.expect_nothing().await;
}

#[tokio::test]
async fn disconnect_discards_open_transactions() {
    let server = start_server().await;
    let mut sub = StompClient::connect(server.stomp).await;
    sub.subscribe("s", "/topic/txd", "auto").await;
    let mut c = StompClient::connect(server.stomp).await;
    c.send_with_receipt(frame(Command::Begin, &[("transaction", "t")], b""))
        .await;
    c.send("/topic/txd", b"never", &[("transaction", "t")])
        .await;
    c.disconnect().await;
    sub.expect_nothing().await;
}

#[tokio::test]
async fn acks_in_a_transaction_take_effect_at_commit() {
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
    let mut c = StompClient::connect(server.stomp).await;
    c.subscribe("s", "/queue/txack", "client-individual").await;
    c.send("/queue/txack", b"m", &[]).await;
    let m = c.message().await;
    c.send_with_receipt(frame(Command::Begin, &[("transaction", "t")], b""))
        .await;
    c.ack_message(Command::Ack, &m, &[("transaction", "t")])
        .await;
    assert_eq!(queues().unacked, 1);
    c.send_with_receipt(frame(Command::Commit, &[("transaction", "t")], b""))
        .await;
    assert_eq!(queues().unacked, 0);
}

#[tokio::test]
async fn aborted_ack_leaves_the_message_unacknowledged() {
    let server = start_server().await;
    let mut c = StompClient::connect(server.stomp).await;
    c.subscribe("s", "/queue/txabort", "client-individual")
        .await;
    c.send("/queue/txabort", b"m", &[]).await;
    let m = c.message().await;
    c.send_with_receipt(frame(Command::Begin, &[("transaction", "t")], b""))
        .await;
    c.ack_message(Command::Ack, &m, &[("transaction", "t")])
        .await;
    c.send_with_receipt(frame(Command::Abort, &[("transaction", "t")], b""))
        .await;
    // Still unacknowledged: it can be acked now.
    c.ack_message(Command::Ack, &m, &[]).await;
}

#[tokio::test]
async fn commit_of_an_unknown_transaction_is_an_error() {
    let server = start_server().await;
    let mut c = StompClient::connect(server.stomp).await;
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

#[tokio::test]
async fn send_in_an_unknown_transaction_is_an_error() {
    let server = start_server().await;
    let mut c = StompClient::connect(server.stomp).await;
    c.send_frame(&frame(
        Command::Send,
        &[("destination", "/topic/x"), ("transaction", "nope")],
        b"x",
    ))
    .await;
    c.expect_error().await;
}

#[tokio::test]
async fn beginning_an_open_transaction_again_is_an_error() {
    let server = start_server().await;
    let mut c = StompClient::connect(server.stomp).await;
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
