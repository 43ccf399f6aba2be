//! `limits.max_buffered_bytes`: the broker-wide budget for bytes held in
//! unfinished packets and frames and in open STOMP transactions. A connection
//! that would go over it is refused (MQTT 5 DISCONNECT 0x97, 3.x the close,
//! STOMP ERROR) and closed, well-behaved clients keep working, and the bytes
//! come back when the holders go. `limits.frame_timeout_secs`: a packet or
//! frame that does not complete in time closes its connection, even with
//! keep-alive / heart-beats off.

mod common;

use std::sync::Arc;

use common::stomp::{frame, StompClient};
use common::*;
use tern::adapter::budget::BufferBudget;
use tern_stomp::Command;

/// The budget the tests configure: room for two held frames, not three.
const BUDGET: usize = 100_000;
/// What each holder sends of its frame.
const HELD: usize = 40_000;
/// The body each frame announces: larger than what is sent of it.
const BODY: usize = 60_000;

fn budget_of(server: &TestServer) -> Arc<BufferBudget> {
    let running = server.server.as_ref().expect("running");
    Arc::clone(running.buffer_budget())
}

/// A whole PUBLISH of BODY bytes at `level`: send a prefix to hold it unfinished.
fn big_publish(level: u8) -> Vec<u8> {
    publish_packet(0, "big", None, empty_props(level), &vec![b'x'; BODY])
}

/// A whole STOMP SEND of BODY bytes (`extra` headers, e.g. a transaction).
fn big_send(extra: &[(&str, &str)]) -> Vec<u8> {
    let length = BODY.to_string();
    let mut headers = vec![("destination", "/topic/big"), ("content-length", &length)];
    headers.extend_from_slice(extra);
    let mut out = bytes::BytesMut::new();
    let f = frame(Command::Send, &headers, &vec![b'x'; BODY]);
    tern_stomp::encode(&f, tern_stomp::Version::V1_2, &mut out);
    out.to_vec()
}

async fn mqtt_holders_then_one_over(level: u8) {
    let server = start_server_with(|s| s.limits.max_buffered_bytes = BUDGET).await;
    let budget = budget_of(&server);
    let mut holders = Vec::new();
    for i in 0..2 {
        let connect = connect_level(level, &format!("holder-{level}-{i}"), true, 0);
        let (mut holder, _) = raw_client(server.mqtt, &connect).await;
        send(&mut holder, &big_publish(level)[..HELD]).await;
        holders.push(holder);
    }
    eventually("both unfinished packets counted", || {
        budget.held() == 2 * HELD
    })
    .await;
    assert_broker_healthy(server.mqtt).await;

    let connect = connect_level(level, &format!("over-{level}"), true, 0);
    let (mut over, _) = raw_client(server.mqtt, &connect).await;
    send(&mut over, &big_publish(level)[..HELD]).await;
    let before_close = expect_closed(&mut over).await;
    if level == 5 {
        assert_eq!(disconnect_reason(&before_close), 0x97, "quota exceeded");
    } else {
        assert!(before_close.is_empty(), "3.x: closed without a word");
    }
    assert_eq!(budget.held(), 2 * HELD, "the refused bytes are not kept");
    assert_broker_healthy(server.mqtt).await;

    // The first holder was kept: it finishes its packet, which gives its bytes
    // back. The second goes while holding: its bytes come back too.
    let mut first = holders.remove(0);
    send(&mut first, &big_publish(level)[HELD..]).await;
    expect_alive(&mut first).await;
    drop(holders);
    eventually("the budget given back", || budget.held() == 0).await;
    // A later client may hold as much again.
    let connect = connect_level(level, &format!("later-{level}"), true, 0);
    let (mut later, _) = raw_client(server.mqtt, &connect).await;
    let packet = big_publish(level);
    send(&mut later, &packet[..HELD]).await;
    eventually("the later frame counted", || budget.held() == HELD).await;
    send(&mut later, &packet[HELD..]).await;
    expect_alive(&mut later).await;
    assert_eq!(budget.held(), 0, "a complete packet holds nothing");
}

#[tokio::test]
async fn mqtt_v5_connection_over_the_buffer_budget_gets_0x97_and_the_budget_comes_back() {
    mqtt_holders_then_one_over(5).await;
}

#[tokio::test]
async fn mqtt_v311_connection_over_the_buffer_budget_is_closed_and_the_budget_comes_back() {
    mqtt_holders_then_one_over(4).await;
}

#[tokio::test]
async fn stomp_connection_over_the_buffer_budget_gets_an_error() {
    let server = start_server_with(|s| s.limits.max_buffered_bytes = BUDGET).await;
    let budget = budget_of(&server);
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut holder = StompClient::connect(server.stomp).await;
        holder.send_raw(&big_send(&[])[..HELD]).await;
        holders.push(holder);
    }
    eventually("both unfinished frames counted", || {
        budget.held() == 2 * HELD
    })
    .await;
    let mut over = StompClient::connect(server.stomp).await;
    over.send_raw(&big_send(&[])[..HELD]).await;
    let error = over.expect_error().await;
    let message = error.header("message").unwrap_or_default();
    assert!(message.contains("max_buffered_bytes"), "{message}");
    assert_broker_healthy(server.mqtt).await;

    drop(holders);
    eventually("the budget given back", || budget.held() == 0).await;
    let mut later = StompClient::connect(server.stomp).await;
    let whole = big_send(&[("receipt", "done")]);
    later.send_raw(&whole[..HELD]).await;
    eventually("the later frame counted", || budget.held() == HELD).await;
    later.send_raw(&whole[HELD..]).await;
    let receipt = later.expect(Command::Receipt).await;
    assert_eq!(receipt.header("receipt-id"), Some("done"));
    assert_eq!(budget.held(), 0);
}

/// What each SEND of the transaction tests carries: two fit the budget.
const TX_BODY: usize = 45_000;

/// A STOMP SEND of `body` bytes in transaction `tx`.
fn tx_send(tx: &str, body: usize) -> Vec<u8> {
    let length = body.to_string();
    let headers = [
        ("destination", "/topic/tx"),
        ("content-length", length.as_str()),
        ("transaction", tx),
    ];
    let mut out = bytes::BytesMut::new();
    let f = frame(Command::Send, &headers, &vec![b'x'; body]);
    tern_stomp::encode(&f, tern_stomp::Version::V1_2, &mut out);
    out.to_vec()
}

fn begin(tx: &str) -> tern_stomp::Frame {
    frame(Command::Begin, &[("transaction", tx)], b"")
}

#[tokio::test]
async fn uncommitted_stomp_transactions_count_against_the_buffer_budget() {
    let server = start_server_with(|s| s.limits.max_buffered_bytes = BUDGET).await;
    let budget = budget_of(&server);
    // One connection holds most of the budget in an open transaction.
    let mut holder = StompClient::connect(server.stomp).await;
    holder.send_frame(&begin("t1")).await;
    holder.send_raw(&tx_send("t1", TX_BODY)).await;
    holder.send_raw(&tx_send("t1", TX_BODY)).await;
    eventually("the transaction counted", || budget.held() >= 2 * TX_BODY).await;

    // Another's transaction of small frames (no unfinished frame is counted:
    // each fits a quiet read) goes over what is left; alone it would fit.
    let mut over = StompClient::connect(server.stomp).await;
    over.send_frame(&begin("t2")).await;
    let small: Vec<u8> = (0..100).flat_map(|_| tx_send("t2", 100)).collect();
    over.send_raw(&small).await;
    let error = over.expect_error().await;
    let message = error.header("message").unwrap_or_default();
    assert!(message.contains("max_buffered_bytes"), "{message}");
    assert_broker_healthy(server.mqtt).await;

    // ABORT gives the transaction's bytes back; a new one of the same size commits.
    holder
        .end_transaction(frame(Command::Abort, &[("transaction", "t1")], b""))
        .await;
    assert_eq!(budget.held(), 0);
    let mut later = StompClient::connect(server.stomp).await;
    later.subscribe("s", "/topic/tx", "auto").await;
    later.send_frame(&begin("t3")).await;
    later.send_raw(&tx_send("t3", TX_BODY)).await;
    later.send_raw(&tx_send("t3", TX_BODY)).await;
    later
        .end_transaction(frame(Command::Commit, &[("transaction", "t3")], b""))
        .await;
    assert_eq!(later.message().await.body.len(), TX_BODY);
    assert_eq!(later.message().await.body.len(), TX_BODY);
    assert_eq!(budget.held(), 0);

    // A connection that ends with its transaction open gives it back too.
    holder.send_frame(&begin("t4")).await;
    holder.send_raw(&tx_send("t4", TX_BODY)).await;
    eventually("the open transaction counted", || budget.held() >= TX_BODY).await;
    drop(holder);
    eventually("given back at the close", || budget.held() == 0).await;
}

#[tokio::test]
async fn an_unfinished_mqtt_packet_closes_the_connection_after_the_frame_timeout() {
    let server = start_server_with(|s| s.limits.frame_timeout_secs = 1).await;
    // Keep-alive 0: no keep-alive would ever end this connection.
    let connect = connect_packet("MQTT", 5, 0x02, 0, Some(&[0]), &mqtt_str("slow"));
    let (mut slow, _) = raw_client(server.mqtt, &connect).await;
    send(&mut slow, &big_publish(5)[..100]).await;
    let before_close = expect_closed(&mut slow).await;
    assert_eq!(disconnect_reason(&before_close), 0x83);
    assert_eq!(budget_of(&server).held(), 0);
    assert_broker_healthy(server.mqtt).await;
}

#[tokio::test]
async fn an_unfinished_stomp_frame_closes_the_connection_after_the_frame_timeout() {
    let server = start_server_with(|s| s.limits.frame_timeout_secs = 1).await;
    let (mut slow, first) = StompClient::open(
        server.stomp,
        &[("accept-version", "1.2"), ("heart-beat", "0,0")],
    )
    .await;
    assert!(
        matches!(first, common::stomp::Received::Frame(ref f) if f.command == Command::Connected),
        "{first:?}"
    );
    slow.send_raw(b"SEND\ndestination:/topic/slow\n").await;
    let error = slow.expect_error().await;
    let message = error.header("message").unwrap_or_default();
    assert!(message.contains("frame_timeout_secs"), "{message}");
}

/// Two MQTT connections holding HELD bytes each of an unfinished PUBLISH.
async fn two_holders(server: &TestServer) -> Vec<tokio::net::TcpStream> {
    let budget = budget_of(server);
    let mut holders = Vec::new();
    for i in 0..2 {
        let (mut holder, _) = raw_client(server.mqtt, &connect_v5(&format!("holder-{i}"))).await;
        send(&mut holder, &big_publish(5)[..HELD]).await;
        holders.push(holder);
    }
    eventually("both unfinished packets counted", || {
        budget.held() == 2 * HELD
    })
    .await;
    holders
}

#[tokio::test]
async fn an_unfinished_mqtt_connect_counts_against_the_buffer_budget() {
    let server = start_server_with(|s| s.limits.max_buffered_bytes = BUDGET).await;
    let _holders = two_holders(&server).await;
    // A 5.0 CONNECT announcing BODY bytes, of which HELD arrive.
    let mut connect = vec![0x10];
    connect.extend_from_slice(&varint(BODY));
    connect.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60]);
    connect.resize(HELD, 0);
    let mut client = raw_connect(server.mqtt).await;
    send(&mut client, &connect).await;
    let connack = read_packet(&mut client).await.expect("CONNACK");
    assert_eq!(connack[0], 0x20, "{connack:02x?}");
    assert_eq!(connack[3], 0x97, "quota exceeded: {connack:02x?}");
    expect_closed(&mut client).await;
    assert_eq!(budget_of(&server).held(), 2 * HELD);
}

#[tokio::test]
async fn an_unfinished_stomp_connect_counts_against_the_buffer_budget() {
    let server = start_server_with(|s| s.limits.max_buffered_bytes = BUDGET).await;
    let _holders = two_holders(&server).await;
    let mut connect =
        format!("CONNECT\naccept-version:1.2\ncontent-length:{BODY}\n\n").into_bytes();
    connect.resize(HELD, b'x');
    let mut client = raw_connect(server.stomp).await;
    send(&mut client, &connect).await;
    let (answer, closed) = read_until_close(&mut client).await;
    assert!(closed, "still open");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("ERROR\n") && answer.contains("max_buffered_bytes"),
        "{answer}"
    );
}
