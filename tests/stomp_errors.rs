//! Bad STOMP input: every case is an ERROR frame that says what was wrong,
//! then the close; never a panic, and other clients carry on.

mod common;

use common::stomp::{body, frame, StompClient};
use common::*;
use tern_stomp::Command;

/// Connects, sends `bytes`, and returns the ERROR's message (the connection must close).
async fn error_for(server: &TestServer, bytes: &[u8]) -> String {
    let mut c = StompClient::connect(server.stomp).await;
    c.send_raw(bytes).await;
    let e = c.expect_error().await;
    e.header("message").unwrap().to_string()
}

async fn assert_error_contains(server: &TestServer, bytes: &[u8], needle: &str) {
    let message = error_for(server, bytes).await;
    assert!(message.contains(needle), "{needle:?} not in {message:?}");
}

#[tokio::test]
async fn malformed_and_unknown_frames() {
    let server = start_server().await;
    assert_error_contains(&server, b"FOO\n\n\0", "unknown command").await;
    assert_error_contains(
        &server,
        b"send\ndestination:/topic/a\n\n\0",
        "unknown command",
    )
    .await;
    assert_error_contains(&server, b"SEND\nno colon here\n\n\0", "malformed header").await;
    assert_error_contains(
        &server,
        b"SEND\ndestination:/topic/a\nx:\\t\n\n\0",
        "escape",
    )
    .await;
    assert_error_contains(
        &server,
        b"SEND\ndestination:/topic/a\ncontent-length:abc\n\n\0",
        "content-length",
    )
    .await;
    assert_error_contains(
        &server,
        b"SEND\ndestination:/topic/a\ncontent-length:1\n\nxy\0",
        "NUL",
    )
    .await;
    assert_error_contains(&server, b"SEND\ndestination:/topic/\xff\n\n\0", "UTF-8").await;
    assert_error_contains(
        &server,
        b"CONNECT\naccept-version:1.2\n\n\0",
        "unexpected CONNECT",
    )
    .await;
    assert_error_contains(
        &server,
        b"MESSAGE\ndestination:/topic/a\n\n\0",
        "unexpected MESSAGE",
    )
    .await;
    assert_healthy(&server).await;
}

#[tokio::test]
async fn missing_required_headers() {
    let server = start_server().await;
    let cases: [(&[u8], &str); 8] = [
        (
            b"SEND\n\nx\0",
            "Missing header: destination (SEND frames require it)",
        ),
        (
            b"SUBSCRIBE\nid:1\n\n\0",
            "Missing header: destination (SUBSCRIBE frames require it)",
        ),
        (
            b"SUBSCRIBE\ndestination:/topic/a\n\n\0",
            "Missing header: id (SUBSCRIBE frames require it)",
        ),
        (
            b"UNSUBSCRIBE\n\n\0",
            "Missing header: id (UNSUBSCRIBE frames require it)",
        ),
        (b"ACK\n\n\0", "Missing header: id (ACK frames require it)"),
        (
            b"BEGIN\n\n\0",
            "Missing header: transaction (BEGIN frames require it)",
        ),
        (
            b"COMMIT\n\n\0",
            "Missing header: transaction (COMMIT frames require it)",
        ),
        (
            b"ABORT\n\n\0",
            "Missing header: transaction (ABORT frames require it)",
        ),
    ];
    for (bytes, expected) in cases {
        assert_eq!(error_for(&server, bytes).await, expected);
    }
    assert_healthy(&server).await;
}

#[tokio::test]
async fn bad_destinations() {
    let server = start_server().await;
    assert_error_contains(
        &server,
        b"SEND\ndestination:/topic/a/+\n\n\0",
        "SEND to a wildcard topic",
    )
    .await;
    assert_error_contains(
        &server,
        b"SEND\ndestination:/topic/#\n\n\0",
        "SEND to a wildcard topic",
    )
    .await;
    assert_error_contains(
        &server,
        b"SEND\ndestination:/exchange/a\n\n\0",
        "unknown destination",
    )
    .await;
    assert_error_contains(
        &server,
        b"SEND\ndestination:jobs\n\n\0",
        "unknown destination",
    )
    .await;
    assert_error_contains(
        &server,
        b"SUBSCRIBE\nid:1\ndestination:/temp-queue/x\n\n\0",
        "unknown destination",
    )
    .await;
    assert_error_contains(
        &server,
        b"SUBSCRIBE\nid:1\ndestination:/topic/a/#/b\n\n\0",
        "invalid destination",
    )
    .await;
    assert_error_contains(
        &server,
        b"SUBSCRIBE\nid:1\ndestination:/queue/a/+\n\n\0",
        "invalid queue name",
    )
    .await;
    assert_error_contains(
        &server,
        b"SEND\ndestination:/queue/\n\n\0",
        "invalid queue name",
    )
    .await;
    assert_error_contains(
        &server,
        b"SEND\ndestination:/topic/$queue/x\n\n\0",
        "/queue/",
    )
    .await;
    assert_error_contains(
        &server,
        b"SEND\ndestination:/topic/a\nreply-to:/temp-queue/x\n\n\0",
        "unknown destination",
    )
    .await;
    assert_healthy(&server).await;
}

#[tokio::test]
async fn bad_header_values() {
    let server = start_server().await;
    assert_error_contains(&server, b"SEND\ndestination:/topic/a\nqos:3\n\n\0", "'qos'").await;
    assert_error_contains(
        &server,
        b"SEND\ndestination:/topic/a\nretain:yes\n\n\0",
        "'retain'",
    )
    .await;
    assert_error_contains(
        &server,
        b"SEND\ndestination:/topic/a\nexpires:tomorrow\n\n\0",
        "'expires'",
    )
    .await;
    assert_error_contains(
        &server,
        b"SUBSCRIBE\nid:1\ndestination:/topic/a\nack:sometimes\n\n\0",
        "'ack'",
    )
    .await;
}

#[tokio::test]
async fn subscription_id_errors() {
    let server = start_server().await;
    assert_error_contains(
        &server,
        b"SUBSCRIBE\nid:1\ndestination:/topic/a\n\n\0SUBSCRIBE\nid:1\ndestination:/topic/b\n\n\0",
        "already in use",
    )
    .await;
    assert_error_contains(
        &server,
        b"UNSUBSCRIBE\nid:nope\n\n\0",
        "no subscription with id \"nope\"",
    )
    .await;
}

#[tokio::test]
async fn frames_over_the_limits() {
    let server = start_server_with(|s| {
        s.limits.stomp_max_frame_size = 1024;
        s.limits.stomp_max_headers = 4;
        s.limits.stomp_max_header_len = 128;
    })
    .await;
    let big_body = [b'x'; 2000];
    let mut too_big = b"SEND\ndestination:/topic/a\n\n".to_vec();
    too_big.extend_from_slice(&big_body);
    too_big.push(0);
    assert_error_contains(&server, &too_big, "exceeds the limit of 1024 bytes").await;
    assert_error_contains(
        &server,
        b"SEND\ndestination:/topic/a\ncontent-length:5000\n\n",
        "exceeds the limit",
    )
    .await;
    assert_error_contains(
        &server,
        b"SEND\na:1\nb:2\nc:3\nd:4\ne:5\n\n\0",
        "too many headers",
    )
    .await;
    let mut long = b"SEND\nx:".to_vec();
    long.extend_from_slice(&[b'y'; 200]);
    long.extend_from_slice(b"\n\n\0");
    assert_error_contains(&server, &long, "header line too long").await;
    // A frame within the limits still works.
    let mut c = StompClient::connect(server.stomp).await;
    c.subscribe("s", "/topic/a", "auto").await;
    c.send("/topic/a", &[b'z'; 900], &[]).await;
    assert_eq!(c.message().await.body.len(), 900);
}

#[tokio::test]
async fn errors_on_one_connection_lose_nothing_for_others() {
    let server = start_server().await;
    let mut sub = StompClient::connect(server.stomp).await;
    sub.subscribe("s", "/topic/steady", "auto").await;
    let mut good = StompClient::connect(server.stomp).await;
    for bad in [
        &b"FOO\n\n\0"[..],
        b"SEND\n\n\0",
        &[0u8; 16],
        b"ACK\nid:x\n\n\0",
    ] {
        let mut c = StompClient::connect(server.stomp).await;
        c.send_raw(bad).await;
        c.expect_error().await;
        good.send("/topic/steady", b"still here", &[]).await;
        assert_eq!(body(&sub.message().await), "still here");
    }
}

#[tokio::test]
async fn garbage_instead_of_connect_is_answered_and_closed() {
    let server = start_server().await;
    let mut s = raw_connect(server.stomp).await;
    let (bytes, closed) =
        send_raw_until_close(&mut s, b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00").await;
    assert!(closed);
    assert!(
        String::from_utf8_lossy(&bytes).starts_with("ERROR\n"),
        "{bytes:?}"
    );
    assert_healthy(&server).await;
}

async fn assert_healthy(server: &TestServer) {
    let mut c = StompClient::connect(server.stomp).await;
    c.subscribe("h", "/topic/health", "auto").await;
    c.send_frame(&frame(
        Command::Send,
        &[("destination", "/topic/health")],
        b"ok",
    ))
    .await;
    assert_eq!(body(&c.message().await), "ok");
}

/// The ERROR reaches a client that sends on after the bad frame (the same
/// graceful close as MQTT's): its writes are not reset while the broker lingers
/// and the connection ends with a FIN.
#[tokio::test]
async fn error_reaches_a_client_that_keeps_sending() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = start_server().await;
    let send = b"SEND\ndestination:/topic/junk\n\n".to_vec();
    let mut junk = Vec::new();
    while junk.len() < 1 << 20 {
        junk.extend_from_slice(&send);
        junk.extend_from_slice(&[b'x'; 60_000]);
        junk.push(0);
    }
    let mut s = raw_connect(server.stomp).await;
    let mut bytes = b"CONNECT\naccept-version:1.2\nhost:x\n\n\0FOO\n\n\0".to_vec();
    bytes.extend_from_slice(&junk);
    s.write_all(&bytes).await.expect("write");
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&received).contains("ERROR\n") {
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .expect("ERROR within WAIT")
            .expect("read");
        assert!(n > 0, "closed before the ERROR: {received:?}");
        received.extend_from_slice(&buf[..n]);
    }
    let more = s.write_all(&junk).await;
    assert!(more.is_ok(), "write after the ERROR: {more:?}");
    let (_, closed) = read_until_close(&mut s).await;
    assert!(closed, "connection left open");
}
