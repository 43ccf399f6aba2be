//! STOMP CONNECT / CONNECTED, version and heart-beat negotiation, DISCONNECT,
//! and the listener itself, over real sockets.

mod common;

use std::time::Duration;

use common::stomp::{frame, Received, StompClient};
use common::*;
use tern_stomp::Command;

#[tokio::test]
async fn connected_carries_version_session_server_and_heart_beat() {
    let server = start_server().await;
    let c = StompClient::connect(server.stomp).await;
    let f = &c.connected;
    assert_eq!(f.header("version"), Some("1.2"));
    assert!(
        f.header("session").is_some_and(|s| s.starts_with("stomp-")),
        "{f:?}"
    );
    assert!(
        f.header("server").is_some_and(|s| s.starts_with("tern/")),
        "{f:?}"
    );
    assert_eq!(f.header("heart-beat"), Some("10000,10000"));
    c.disconnect().await;
}

#[tokio::test]
async fn version_negotiation_picks_the_highest_common_version() {
    let server = start_server().await;
    for (accept, expected) in [
        ("1.0,1.1,1.2", "1.2"),
        ("1.1", "1.1"),
        ("1.0,1.1", "1.1"),
        ("1.2,9.9", "1.2"),
    ] {
        let c = StompClient::connect_version(server.stomp, accept).await;
        assert_eq!(c.connected.header("version"), Some(expected), "{accept}");
        c.disconnect().await;
    }
}

#[tokio::test]
async fn no_accept_version_means_stomp_1_0() {
    let server = start_server().await;
    let (mut c, first) = StompClient::open(server.stomp, &[]).await;
    let Received::Frame(f) = first else {
        panic!("{first:?}")
    };
    assert_eq!(f.command, Command::Connected);
    // 1.0 has neither a version nor a heart-beat header in CONNECTED.
    assert_eq!(f.header("version"), None);
    assert_eq!(f.header("heart-beat"), None);
    assert!(f.header("session").is_some());
    // A 1.0 SUBSCRIBE may omit the id; the destination names the subscription.
    c.send_with_receipt(frame(
        Command::Subscribe,
        &[("destination", "/topic/v10")],
        b"",
    ))
    .await;
    c.send("/topic/v10", b"old", &[]).await;
    let m = c.message().await;
    assert_eq!(m.header("subscription"), Some("/topic/v10"));
    assert_eq!(&m.body[..], b"old");
}

#[tokio::test]
async fn stomp_command_is_accepted_like_connect() {
    let server = start_server().await;
    let mut s = raw_connect(server.stomp).await;
    send(&mut s, b"STOMP\naccept-version:1.2\nhost:localhost\n\n\0").await;
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut s, &mut buf))
        .await
        .expect("CONNECTED in time")
        .expect("read");
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("CONNECTED\nversion:1.2\n"), "{text}");
}

#[tokio::test]
async fn no_common_version_is_an_error_listing_the_supported_ones() {
    let server = start_server().await;
    let (mut c, first) = StompClient::open(server.stomp, &[("accept-version", "2.0,3.1")]).await;
    let Received::Frame(f) = first else {
        panic!("{first:?}")
    };
    assert_eq!(f.command, Command::Error);
    assert_eq!(f.header("version"), Some("1.0,1.1,1.2"));
    assert!(f.header("message").unwrap().contains("version"), "{f:?}");
    // RabbitMQ's body, word for word: clients display it.
    assert_eq!(&f.body[..], b"Supported versions are 1.0,1.1,1.2\n");
    c.expect_closed().await;
}

#[tokio::test]
async fn first_frame_must_be_connect() {
    let server = start_server().await;
    let mut s = raw_connect(server.stomp).await;
    let (bytes, closed) = send_raw_until_close(&mut s, b"SEND\ndestination:/topic/a\n\nhi\0").await;
    assert!(closed);
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.starts_with("ERROR\n"), "{text}");
    assert!(
        text.contains("message:the first frame must be CONNECT or STOMP, not SEND"),
        "{text}"
    );
}

#[tokio::test]
async fn anonymous_clients_are_refused_where_the_listener_forbids_them() {
    let server = start_server_with(|s| s.stomp.allow_anonymous = Some(false)).await;
    let (mut c, first) = StompClient::open(server.stomp, &[("accept-version", "1.2")]).await;
    let Received::Frame(f) = first else {
        panic!("{first:?}")
    };
    assert_eq!(f.command, Command::Error);
    assert!(f.header("message").unwrap().contains("anonymous"), "{f:?}");
    c.expect_closed().await;
    // A login nothing can verify (no password file) does not make the client known.
    let (mut c, first) = StompClient::open(
        server.stomp,
        &[
            ("accept-version", "1.2"),
            ("login", "alice"),
            ("passcode", "secret"),
        ],
    )
    .await;
    assert!(
        matches!(first, Received::Frame(ref f) if f.command == Command::Error),
        "{first:?}"
    );
    c.expect_closed().await;
}

#[tokio::test]
async fn disconnect_with_receipt_gets_the_receipt_then_the_close() {
    let server = start_server().await;
    let c = StompClient::connect(server.stomp).await;
    c.disconnect().await;
}

#[tokio::test]
async fn server_sends_heart_beats_at_the_negotiated_rate() {
    let server = start_server_with(|s| {
        s.limits.stomp_heartbeat_ms = 100;
        s.limits.stomp_min_heartbeat_ms = 100;
    })
    .await;
    let (mut c, first) = StompClient::open(
        server.stomp,
        &[("accept-version", "1.2"), ("heart-beat", "0,100")],
    )
    .await;
    let Received::Frame(f) = first else {
        panic!("{first:?}")
    };
    assert_eq!(f.header("heart-beat"), Some("100,100"));
    assert!(matches!(
        c.read(Duration::from_millis(1000)).await,
        Received::Timeout
    ));
    // About 10 in one second; allow for a slow machine.
    assert!(c.heart_beats >= 3, "only {} heart-beats", c.heart_beats);
}

#[tokio::test]
async fn a_client_that_misses_its_heart_beats_is_disconnected() {
    let server = start_server_with(|s| s.limits.stomp_heartbeat_ms = 100).await;
    let (mut c, _) = StompClient::open(
        server.stomp,
        &[("accept-version", "1.2"), ("heart-beat", "100,0")],
    )
    .await;
    // Keep the connection alive with heart-beats for a while…
    for _ in 0..6 {
        c.send_raw(b"\n").await;
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    c.send_with_receipt(frame(
        Command::Subscribe,
        &[("id", "0"), ("destination", "/topic/x")],
        b"",
    ))
    .await;
    // …then go silent: closed after twice the interval, with an ERROR saying why.
    let started = tokio::time::Instant::now();
    let f = c.expect_error().await;
    assert!(f.header("message").unwrap().contains("heart-beat"), "{f:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn malformed_heart_beat_header_is_an_error() {
    let server = start_server().await;
    let (mut c, first) = StompClient::open(
        server.stomp,
        &[("accept-version", "1.2"), ("heart-beat", "soon")],
    )
    .await;
    let Received::Frame(f) = first else {
        panic!("{first:?}")
    };
    assert_eq!(f.command, Command::Error);
    assert!(f.header("message").unwrap().contains("heart-beat"), "{f:?}");
    c.expect_closed().await;
}

#[tokio::test]
async fn shutdown_says_goodbye_with_an_error_frame() {
    let mut server = start_server().await;
    let mut c = StompClient::connect(server.stomp).await;
    let handle = server.server.take().unwrap();
    let shutdown = tokio::spawn(handle.shutdown(Duration::from_secs(5)));
    let f = c.expect_error().await;
    assert_eq!(f.header("message"), Some("server shutting down"));
    shutdown.await.unwrap();
}

#[tokio::test]
async fn over_the_connection_limit_the_client_gets_an_error() {
    let server = start_server_with(|s| s.limits.max_connections = 1).await;
    let first = StompClient::connect(server.stomp).await;
    let (mut second, answer) = StompClient::open(server.stomp, &[("accept-version", "1.2")]).await;
    let Received::Frame(f) = answer else {
        panic!("{answer:?}")
    };
    assert_eq!(f.command, Command::Error);
    assert!(
        f.header("message").unwrap().contains("connection limit"),
        "{f:?}"
    );
    second.expect_closed().await;
    first.disconnect().await;
}

#[tokio::test]
async fn the_server_beats_as_often_as_the_client_asks_down_to_the_floor() {
    let server = start_server().await;
    for (wish, offered) in [
        ("0,500", "500,10000"),
        ("0,100", "500,10000"),
        ("0,0", "10000,10000"),
    ] {
        let (c, first) = StompClient::open(
            server.stomp,
            &[("accept-version", "1.2"), ("heart-beat", wish)],
        )
        .await;
        let Received::Frame(f) = first else {
            panic!("{first:?}")
        };
        assert_eq!(f.header("heart-beat"), Some(offered), "client {wish}");
        c.disconnect().await;
    }
}
