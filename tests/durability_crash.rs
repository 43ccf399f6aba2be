//! Crash safety for real: publishers at QoS 1 and 2 against persistent
//! subscribers (one connected, one offline), the broker process killed with
//! SIGKILL at random moments, restarted on the same store, and at the end every
//! message the broker acknowledged must have been delivered — QoS 1 at least
//! once, QoS 2 exactly once — in order per publisher.
//!
//! The clients here are a deliberately small MQTT 3.1.1 client on the project's
//! codec: the test needs to see exactly which packet was acknowledged when.
//! Interoperability is proven elsewhere (rumqttc, paho, mosquitto clients).
//!
//! Run twice: on the redb store, and on the NATS store (a real `nats-server
//! -js` that outlives every kill of tern).

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::nats::NatsServer;
use common::process::{data_dir, free_port, Broker, Conn};
use tern_mqtt::{
    Ack, Packet, Properties, Publish, QoS, Subscribe, SubscribeFilter, SubscriptionOptions,
};
use tokio::time::{timeout, Instant};

const KILLS: usize = 10;

fn ack(packet_id: u16) -> Ack {
    Ack {
        packet_id,
        reason: 0,
        properties: Properties::default(),
    }
}

/// Sequence numbers the broker acknowledged, per publisher.
type Acked = Arc<Mutex<HashMap<String, Vec<u64>>>>;

/// Publishes numbered messages until told to stop; a message counts as
/// acknowledged on PUBACK (QoS 1) or PUBREC (QoS 2). Reconnects after crashes.
async fn publisher(
    addr: SocketAddr,
    name: String,
    qos: QoS,
    acked: Acked,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut seq: u64 = 0;
    let topic = format!("crash/{name}");
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let Some((mut conn, _)) = Conn::open(addr, &name, true).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let mut packet_id: u16 = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            seq += 1;
            packet_id = packet_id % 60000 + 1;
            let publish = Packet::Publish(Publish {
                dup: false,
                qos,
                retain: false,
                topic: topic.clone(),
                packet_id: Some(packet_id),
                properties: Properties::default(),
                payload: Bytes::from(format!("{name}:{seq}")),
            });
            if conn.send(&publish).await.is_none() {
                break;
            }
            let acknowledged = match conn.recv(Duration::from_secs(5)).await {
                Some(Packet::PubAck(a)) if qos == QoS::AtLeastOnce && a.packet_id == packet_id => {
                    true
                }
                Some(Packet::PubRec(a)) if qos == QoS::ExactlyOnce && a.packet_id == packet_id => {
                    // The broker owns the message from PUBREC on.
                    acked
                        .lock()
                        .unwrap()
                        .entry(name.clone())
                        .or_default()
                        .push(seq);
                    if conn.send(&Packet::PubRel(ack(packet_id))).await.is_none() {
                        break;
                    }
                    matches!(
                        conn.recv(Duration::from_secs(5)).await,
                        Some(Packet::PubComp(_))
                    );
                    continue;
                }
                _ => false,
            };
            if !acknowledged {
                break;
            }
            acked
                .lock()
                .unwrap()
                .entry(name.clone())
                .or_default()
                .push(seq);
        }
    }
}

/// What one persistent subscriber received: (publisher, seq) in arrival order.
#[derive(Default)]
struct Received {
    messages: Vec<(String, u64)>,
    /// QoS 2 ids received and not yet released: a resend with one of these is a duplicate.
    awaiting_pubrel: HashSet<u16>,
}

fn parse_payload(payload: &[u8]) -> Option<(String, u64)> {
    let text = std::str::from_utf8(payload).ok()?;
    let (name, seq) = text.split_once(':')?;
    Some((name.to_string(), seq.parse().ok()?))
}

/// Connects (persistent session), subscribes on first connect, and consumes
/// until `until` says stop or the connection drops. Returns false if it could not connect.
async fn consume(
    addr: SocketAddr,
    client_id: &str,
    qos: QoS,
    received: &Mutex<Received>,
    first: bool,
    idle_exit: Option<Duration>,
) -> bool {
    // Always a persistent session (clean session 0); `first` only decides whether to subscribe.
    let Some((mut conn, _present)) = Conn::open(addr, client_id, false).await else {
        return false;
    };
    if first {
        let sub = Packet::Subscribe(Subscribe {
            packet_id: 1,
            filters: vec![SubscribeFilter {
                filter: "crash/#".into(),
                options: SubscriptionOptions {
                    qos,
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: 0,
                },
            }],
            properties: Properties::default(),
        });
        if conn.send(&sub).await.is_none() {
            return false;
        }
    }
    let wait = idle_exit.unwrap_or(Duration::from_secs(3600));
    while let Some(packet) = conn.recv(wait).await {
        match packet {
            Packet::Publish(p) => {
                let id = p.packet_id.unwrap_or(0);
                match p.qos {
                    QoS::AtMostOnce => {}
                    QoS::AtLeastOnce => {
                        if let Some(m) = parse_payload(&p.payload) {
                            received.lock().unwrap().messages.push(m);
                        }
                        if conn.send(&Packet::PubAck(ack(id))).await.is_none() {
                            return true;
                        }
                    }
                    QoS::ExactlyOnce => {
                        {
                            let mut r = received.lock().unwrap();
                            if r.awaiting_pubrel.insert(id) {
                                if let Some(m) = parse_payload(&p.payload) {
                                    r.messages.push(m);
                                }
                            }
                        }
                        if conn.send(&Packet::PubRec(ack(id))).await.is_none() {
                            return true;
                        }
                    }
                }
            }
            Packet::PubRel(a) => {
                received
                    .lock()
                    .unwrap()
                    .awaiting_pubrel
                    .remove(&a.packet_id);
                if conn
                    .send(&Packet::PubComp(ack(a.packet_id)))
                    .await
                    .is_none()
                {
                    return true;
                }
            }
            _ => {}
        }
    }
    true
}

fn check(
    name: &str,
    received: &Received,
    acked: &HashMap<String, Vec<u64>>,
    exactly_once: bool,
) -> (usize, usize) {
    let mut counts: HashMap<(String, u64), usize> = HashMap::new();
    let mut last_first_seen: HashMap<String, u64> = HashMap::new();
    for (publisher, seq) in &received.messages {
        let n = counts.entry((publisher.clone(), *seq)).or_default();
        *n += 1;
        if *n == 1 {
            let last = last_first_seen.entry(publisher.clone()).or_default();
            assert!(
                *seq > *last,
                "{name}: {publisher} message {seq} arrived after {last} (out of order)"
            );
            *last = *seq;
        }
    }
    let mut missing = 0;
    let mut total = 0;
    for (publisher, seqs) in acked {
        for seq in seqs {
            total += 1;
            match counts.get(&(publisher.clone(), *seq)).copied().unwrap_or(0) {
                0 => missing += 1,
                1 => {}
                n => {
                    if exactly_once && publisher.starts_with("q2") {
                        panic!("{name}: QoS 2 message {publisher}:{seq} delivered {n} times");
                    }
                }
            }
        }
    }
    (total, missing)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_repeated_sigkill() {
    crash_repeatedly("crash", &[]).await;
}

/// The same with the store in JetStream (`storage.backend = "nats"`, one
/// node, replicas 1): the nats-server process keeps what tern acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_repeated_sigkill_with_the_nats_store() {
    let nats = NatsServer::start().await;
    let env = [
        ("TERN_CLUSTER__ENABLED", "true"),
        ("TERN_CLUSTER__NODE", "tern-crash"),
        ("TERN_CLUSTER__NATS_URLS", nats.url.as_str()),
        ("TERN_STORAGE__BACKEND", "nats"),
    ];
    crash_repeatedly("crash-nats", &env).await;
    // What was kept, was kept in JetStream.
    let client = async_nats::connect(&nats.url)
        .await
        .expect("connect to NATS");
    let mut stream = async_nats::jetstream::new(client)
        .get_stream("KV_tern_store")
        .await
        .expect("the store bucket exists");
    let state = stream.info().await.expect("stream info").state.clone();
    eprintln!(
        "KV_tern_store: {} writes, {} kept",
        state.last_sequence, state.messages
    );
    assert!(
        state.last_sequence > 0,
        "the store was written to JetStream"
    );
}

/// Starts the broker with `env` (TERN_* settings) on a store of its own.
async fn start(port: u16, stomp_port: u16, dir: &std::path::Path, env: &[(&str, &str)]) -> Broker {
    if env.is_empty() {
        return Broker::start(port, stomp_port, dir).await;
    }
    match Broker::start_with(port, stomp_port, dir, env).await {
        Ok(broker) => broker,
        Err(log) => panic!("broker did not start:\n{log}"),
    }
}

async fn crash_repeatedly(name: &str, env: &[(&str, &str)]) {
    let dir = data_dir(name);
    let (port, stomp_port) = (free_port(), free_port());
    let mut broker = start(port, stomp_port, &dir, env).await;
    let addr = broker.mqtt;

    let online = Arc::new(Mutex::new(Received::default()));
    let offline = Arc::new(Mutex::new(Received::default()));
    // Both persistent subscribers subscribe before anything is published.
    assert!(
        consume(
            addr,
            "sub-online",
            QoS::ExactlyOnce,
            &online,
            true,
            Some(Duration::from_millis(200))
        )
        .await
    );
    assert!(
        consume(
            addr,
            "sub-offline",
            QoS::ExactlyOnce,
            &offline,
            true,
            Some(Duration::from_millis(200))
        )
        .await
    );

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked: Acked = Arc::default();
    let mut publishers = Vec::new();
    for (name, qos) in [
        ("q1-a", QoS::AtLeastOnce),
        ("q1-b", QoS::AtLeastOnce),
        ("q2-a", QoS::ExactlyOnce),
        ("q2-b", QoS::ExactlyOnce),
    ] {
        publishers.push(tokio::spawn(publisher(
            addr,
            name.to_string(),
            qos,
            Arc::clone(&acked),
            Arc::clone(&stop),
        )));
    }
    let online_task = {
        let online = Arc::clone(&online);
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if !consume(addr, "sub-online", QoS::ExactlyOnce, &online, false, None).await {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        })
    };

    for kill in 0..KILLS {
        let pause = 150 + (rand_u64() % 600);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        broker.kill9();
        eprintln!("kill {}/{KILLS} after {pause} ms", kill + 1);
        broker = start(port, stomp_port, &dir, env).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for p in publishers {
        let _ = timeout(Duration::from_secs(10), p).await;
    }
    online_task.abort();

    // Drain both subscribers until every acknowledged message is in (or time runs out).
    let acked = acked.lock().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    for (id, received) in [("sub-online", &online), ("sub-offline", &offline)] {
        while Instant::now() < deadline {
            consume(
                addr,
                id,
                QoS::ExactlyOnce,
                received,
                false,
                Some(Duration::from_millis(1500)),
            )
            .await;
            let (_, missing) = check(id, &received.lock().unwrap(), &acked, true);
            if missing == 0 {
                break;
            }
        }
    }
    for (id, received) in [("sub-online", &online), ("sub-offline", &offline)] {
        let (total, missing) = check(id, &received.lock().unwrap(), &acked, true);
        eprintln!(
            "{id}: {total} acknowledged, {} received, {missing} missing",
            received.lock().unwrap().messages.len()
        );
        assert!(total > 0, "no message was acknowledged at all");
        assert_eq!(
            missing, 0,
            "{id}: {missing} acknowledged messages were never delivered"
        );
    }
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    h.finish()
}
