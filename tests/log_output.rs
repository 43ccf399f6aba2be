//! What the broker writes to its log: one line where an operator needs one,
//! and never a line per item of a flood. The log is captured by a global
//! subscriber (one per test binary), and each test looks for its own lines
//! (by the client's address or id).

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::*;
use tokio_tungstenite::MaybeTlsStream;

/// Everything logged so far by this test binary.
fn captured() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || Sink(Arc::clone(&sink)))
            .init();
        log
    })
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The captured lines that contain every one of `needles`.
fn lines_with(needles: &[&str]) -> Vec<String> {
    let log = captured().lock().expect("log lock");
    String::from_utf8_lossy(&log)
        .lines()
        .filter(|line| needles.iter().all(|n| line.contains(n)))
        .map(str::to_string)
        .collect()
}

/// Waits (up to WAIT) for a line containing every one of `needles`.
async fn wait_for_line(needles: &[&str]) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(line) = lines_with(needles).into_iter().next() {
            return line;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no log line with {needles:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn local_addr(ws: &ws::Ws) -> SocketAddr {
    match ws.get_ref() {
        MaybeTlsStream::Plain(tcp) => tcp.local_addr().expect("local address"),
        _ => panic!("a plain TCP WebSocket"),
    }
}

#[tokio::test]
async fn a_stomp_websocket_client_that_vanishes_without_a_close_is_logged() {
    captured();
    let server = start_server().await;
    let mut client = ws::open(server.ws, "/stomp", &["v12.stomp"]).await;
    ws::send_text(&mut client, "CONNECT\naccept-version:1.2\nhost:/\n\n\0").await;
    match ws::next(&mut client).await {
        ws::Got::Text(frame) => assert!(frame.starts_with("CONNECTED"), "{frame}"),
        other => panic!("expected CONNECTED, got {other:?}"),
    }
    let addr = local_addr(&client).to_string();
    // Gone without a WebSocket Close: the TCP connection just ends.
    drop(client);
    let line = wait_for_line(&[&addr, "half-open"]).await;
    assert!(line.contains("ws-stomp"), "{line}");
}

#[tokio::test]
async fn shutdown_says_how_many_retained_messages_it_saves_and_how_long_it_took() {
    captured();
    let mut server = start_server().await;
    let mut publisher = v4::Client::connect(server.mqtt, "log-retainer").await;
    // An unusual count, so this test finds its own lines.
    const RETAINED: usize = 37;
    for i in 0..RETAINED {
        publisher
            .publish(&format!("log/retained/{i}"), 1, true, b"kept")
            .await;
    }
    let router = server.server.as_ref().expect("server").router();
    assert_eq!(router.retained_count(), RETAINED);
    let grace = Duration::from_secs(5);
    let shutdown = server.server.take().expect("server").shutdown(grace);
    tokio::time::timeout(WAIT, shutdown)
        .await
        .expect("shutdown in time");
    let retained = format!("retained={RETAINED}");
    wait_for_line(&[&retained, "shutting down"]).await;
    let done = wait_for_line(&[&retained, "shutdown complete"]).await;
    assert!(done.contains("elapsed_ms="), "{done}");
}

#[tokio::test]
async fn a_flood_of_refused_filters_and_denied_publishes_writes_a_few_lines() {
    use bytes::Bytes;
    use common::process::Conn;
    use tern::config::{AclAccess, AclRule};
    use tern_mqtt::{
        Packet, Properties, Publish, QoS, Subscribe, SubscribeFilter, SubscriptionOptions,
    };

    captured();
    let server = start_server_with(|s| {
        s.limits.max_subscriptions_per_client = 5;
        s.acl = vec![AclRule {
            all: true,
            allow: Some(AclAccess::Both),
            topic: "open/#".into(),
            ..AclRule::default()
        }];
    })
    .await;
    let client_id = "log-flood";
    let (mut conn, _) = Conn::open(server.mqtt, client_id, true)
        .await
        .expect("connected");
    // 3,000 refused filters in one SUBSCRIBE: invalid, denied, over the quota.
    const EACH: usize = 1000;
    let filter = |filter: String| SubscribeFilter {
        filter,
        options: SubscriptionOptions {
            qos: QoS::AtMostOnce,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
        },
    };
    let filters: Vec<SubscribeFilter> = (0..EACH)
        .map(|i| filter(format!("bad/#/{i}")))
        .chain((0..EACH).map(|i| filter(format!("closed/{i}"))))
        .chain((0..EACH + 5).map(|i| filter(format!("open/{i}"))))
        .collect();
    conn.send(&Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters,
        properties: Properties::default(),
    }))
    .await
    .expect("SUBSCRIBE sent");
    match conn.recv(WAIT).await {
        Some(Packet::SubAck(ack)) => {
            assert_eq!(ack.codes.len(), 3 * EACH + 5);
            let granted = ack.codes.iter().filter(|&&code| code == 0).count();
            assert_eq!(granted, 5);
        }
        other => panic!("expected SUBACK, got {other:?}"),
    }
    // And a flood of denied QoS 0 publishes, then one acknowledged to know all were read.
    let publish = |qos, packet_id, topic: &str| {
        Packet::Publish(Publish {
            dup: false,
            qos,
            retain: false,
            topic: topic.into(),
            packet_id,
            properties: Properties::default(),
            payload: Bytes::from_static(b"x"),
        })
    };
    for _ in 0..EACH {
        conn.send(&publish(QoS::AtMostOnce, None, "closed/t"))
            .await
            .expect("PUBLISH sent");
    }
    conn.send(&publish(QoS::AtLeastOnce, Some(2), "open/t"))
        .await
        .expect("PUBLISH sent");
    loop {
        match conn.recv(WAIT).await {
            Some(Packet::PubAck(_)) => break,
            Some(_) => {}
            None => panic!("no PUBACK"),
        }
    }

    let summary = wait_for_line(&[client_id, "subscriptions refused"]).await;
    for count in [
        "refused=3000",
        "invalid=1000",
        "denied=1000",
        "over_quota=1000",
    ] {
        assert!(summary.contains(count), "{summary}");
    }
    let lines = lines_with(&[client_id]);
    assert!(
        lines.len() <= 8,
        "{} lines for one client's flood:\n{}",
        lines.len(),
        lines.join("\n")
    );
}
