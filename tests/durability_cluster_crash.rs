//! The crash test of `durability_crash.rs`, clustered (issue #19): three tern
//! nodes with the store in JetStream (`[storage] backend = "nats"`,
//! `[cluster] replicas = 3`) on a three-server NATS cluster on loopback.
//! QoS 1 and QoS 2 publishers and persistent subscribers (connected ones and
//! offline ones) are spread over the nodes; a random node is killed with
//! SIGKILL ten times under load and restarted (its clients reconnect to a
//! surviving node, where their sessions resume), and one NATS server is
//! killed once. At the end every subscriber drains its session and the test
//! counts, per subscriber: acknowledged messages never delivered, QoS 2
//! duplicates and per-publisher order violations — all must be 0.
//!
//! What counts (`common::crash::Tally`): a publisher sends one message at a
//! time and, after a lost connection, goes on with the next number on a new
//! clean connection: it never resends, so a message it saw no ack for is
//! neither required nor a reorder when it comes late, and no repeat comes
//! from a publisher. An order violation is an acknowledged message received
//! for the first time after a later one of its publisher; QoS 1 repeats (DUP) are allowed
//! and not counted; a QoS 2 repeat is one with a new packet id (the
//! subscriber forgets an id at PUBREL, as MQTT says).
//!
//! Diagnostics printed per subscriber with a fault: runs of missing messages
//! (when and by which node the first was acknowledged), the first order
//! violations and QoS 2 repeats (which connection, node and time each came
//! on), and the subscriber's connections (node port, from..to ms), to read
//! against the kill times printed on the same clock.
//!
//! `CLUSTER_CRASH_LOGS=<dir>` writes every run's whole log there
//! (`tern-1-run2.log`, …); `CLUSTER_CRASH_LOG_LEVEL` sets the nodes' log level
//! (say `info,tern::store::nats=trace,tern::core::router=debug`).
//!
//! `CLUSTER_CRASH_LOSSY=1` runs the same with `[storage] durability = "none"`
//! and replicas 1, and kills the NATS server that holds the store: it must
//! report losses (the test fails), which shows that it can see them. (Not
//! `TERN_…`: the nodes would read that as a setting.)

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::crash::{
    consume, missing_examples, now_ms, publisher, rand_u64, Acked, Received, Tally,
};
use common::nats::{store_stream, NatsCluster};
use common::process::{data_dir, free_port, Broker, Conn};
use tern_mqtt::{Packet, Properties, Publish, QoS};
use tokio::time::{timeout, Instant};

const NODES: usize = 3;
const KILLS: usize = 10;
/// A NATS server is killed (and started again) after this node kill.
const NATS_KILL: usize = 3;

struct Node {
    name: String,
    mqtt: SocketAddr,
    stomp_port: u16,
    dir: PathBuf,
    env: Vec<(String, String)>,
    broker: Option<Broker>,
    /// Runs started so far (the current one's number).
    runs: usize,
    /// The WARN/ERROR lines of its earlier runs, and the INFO lines of where
    /// subscribers' sessions went (a killed run's log is kept here, so
    /// losses around its restarts can be traced).
    warnings: Vec<String>,
}

impl Node {
    async fn start(&mut self, nats: &NatsCluster) {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        match Broker::start_with(self.mqtt.port(), self.stomp_port, &self.dir, &env).await {
            Ok(broker) => {
                self.runs += 1;
                self.broker = Some(broker);
            }
            Err(log) => {
                let logs: Vec<String> = (0..nats.servers.len())
                    .map(|i| {
                        let log: Vec<String> = nats
                            .log(i)
                            .lines()
                            .filter(|l| !l.contains("Error trying to connect to route"))
                            .map(str::to_string)
                            .collect();
                        let tail = log.len().saturating_sub(25);
                        format!("--- {}:\n{}", nats.servers[i].name, log[tail..].join("\n"))
                    })
                    .collect();
                panic!("{} did not start:\n{log}\n{}", self.name, logs.join("\n"))
            }
        }
    }

    fn kill9(&mut self) {
        if let Some(mut broker) = self.broker.take() {
            broker.kill9();
            self.keep_warnings(&broker);
        }
    }

    fn keep_warnings(&mut self, broker: &Broker) {
        let run = self.runs;
        let log = broker.log.lock();
        if let Some(dir) = std::env::var_os("CLUSTER_CRASH_LOGS") {
            let file = PathBuf::from(dir).join(format!("{}-run{run}.log", self.name));
            if let Err(e) = std::fs::write(&file, log.join("\n")) {
                eprintln!("cannot write {}: {e}", file.display());
            }
        }
        self.warnings.extend(
            log.iter()
                .filter(|l| {
                    l.contains(" WARN ")
                        || l.contains(" ERROR ")
                        || l.contains("client_id=sub-")
                        || l.contains("taken over")
                        || l.contains("restored")
                })
                .map(|l| format!("run {run}: {l}")),
        );
    }

    /// Every run's kept lines: how many, how many were stored deliveries
    /// whose message was not found, and the first of them.
    fn print_warnings(&mut self) {
        if let Some(broker) = self.broker.take() {
            self.keep_warnings(&broker);
            self.broker = Some(broker);
        }
        let orphans = self
            .warnings
            .iter()
            .filter(|l| l.contains("without its message"))
            .count();
        eprintln!(
            "{} ({} runs): {} lines kept (WARN/ERROR, sessions moved), {orphans} stored deliveries without their message",
            self.name,
            self.runs,
            self.warnings.len()
        );
        for line in self.warnings.iter().take(80) {
            eprintln!("  {line}");
        }
    }
}

/// `addrs` turned so that it starts at `first`.
fn from(addrs: &[SocketAddr], first: usize) -> Vec<SocketAddr> {
    (0..addrs.len())
        .map(|i| addrs[(first + i) % addrs.len()])
        .collect()
}

/// Keeps `client_id` connected, to the next node that answers after each loss.
async fn stay_online(
    addrs: Vec<SocketAddr>,
    client_id: String,
    received: Arc<Mutex<Received>>,
    stop: Arc<AtomicBool>,
) {
    let mut at = 0;
    while !stop.load(Ordering::Relaxed) {
        let addr = addrs[at % addrs.len()];
        if !consume(addr, &client_id, QoS::ExactlyOnce, &received, false, None).await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        at += 1;
    }
}

/// Publishes QoS 1 probes from every node until every connected subscriber
/// got one from each: then every node routes `crash/#` to every other.
async fn await_routes(addrs: &[SocketAddr], online: &[Arc<Mutex<Received>>]) {
    let mut conns = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let (conn, _) = Conn::open(*addr, &format!("probe-{i}"), true)
            .await
            .expect("probe connects");
        conns.push(conn);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for round in 1u64.. {
        for (i, conn) in conns.iter_mut().enumerate() {
            let probe = Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: "crash/probe".into(),
                packet_id: Some(1),
                properties: Properties::default(),
                payload: format!("probe-{i}:{round}").into(),
            });
            conn.send(&probe).await.expect("probe sent");
            assert!(
                matches!(
                    conn.recv(Duration::from_secs(10)).await,
                    Some(Packet::PubAck(_))
                ),
                "probe acknowledged"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let all = online.iter().all(|received| {
            let r = received.lock().unwrap();
            (0..addrs.len()).all(|i| {
                let name = format!("probe-{i}");
                r.messages.iter().any(|(p, _)| *p == name)
            })
        });
        if all {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the nodes do not route crash/# to each other"
        );
    }
}

/// 1 to 2 minutes: `cargo test --test durability_cluster_crash -- --nocapture`;
/// `CLUSTER_CRASH_LOGS=<dir>` keeps the nodes' logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_messages_survive_killed_nodes_and_a_killed_nats_server() {
    let lossy = std::env::var_os("CLUSTER_CRASH_LOSSY").is_some_and(|v| v != "0");
    now_ms(); // The diagnostics' clock starts here.
    let mut nats = NatsCluster::start(3).await;
    let urls = nats.urls();
    let (replicas, durability) = if lossy {
        ("1", "none")
    } else {
        ("3", "batched")
    };
    let log_level = std::env::var("CLUSTER_CRASH_LOG_LEVEL").unwrap_or_else(|_| "info".into());
    let mut nodes: Vec<Node> = (0..NODES)
        .map(|i| {
            let name = format!("tern-{}", i + 1);
            let env = [
                ("TERN_CLUSTER__ENABLED", "true"),
                ("TERN_CLUSTER__NODE", name.as_str()),
                ("TERN_CLUSTER__NATS_URLS", urls.as_str()),
                ("TERN_CLUSTER__REPLICAS", replicas),
                ("TERN_CLUSTER__STRICT_ACKS", "true"),
                ("TERN_STORAGE__BACKEND", "nats"),
                ("TERN_STORAGE__DURABILITY", durability),
                ("TERN_LOG__LEVEL", log_level.as_str()),
            ];
            let env = env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Node {
                dir: data_dir(&format!("cluster-crash-{}", i + 1)),
                name,
                env,
                mqtt: SocketAddr::from(([127, 0, 0, 1], free_port())),
                stomp_port: free_port(),
                broker: None,
                runs: 0,
                warnings: Vec::new(),
            }
        })
        .collect();
    for node in &mut nodes {
        node.start(&nats).await;
    }
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.mqtt).collect();

    // One offline and one connected persistent subscriber per node, subscribed
    // before anything is published.
    let offline: Vec<Arc<Mutex<Received>>> = (0..NODES).map(|_| Arc::default()).collect();
    let online: Vec<Arc<Mutex<Received>>> = (0..NODES).map(|_| Arc::default()).collect();
    for i in 0..NODES {
        for (id, received) in [
            (format!("sub-offline-{i}"), &offline[i]),
            (format!("sub-online-{i}"), &online[i]),
        ] {
            let idle = Some(Duration::from_millis(300));
            assert!(consume(addrs[i], &id, QoS::ExactlyOnce, received, true, idle).await);
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut online_tasks = Vec::new();
    for (i, received) in online.iter().enumerate() {
        online_tasks.push(tokio::spawn(stay_online(
            from(&addrs, i),
            format!("sub-online-{i}"),
            Arc::clone(received),
            Arc::clone(&stop),
        )));
    }
    await_routes(&addrs, &online).await;

    let acked: Acked = Arc::default();
    let mut publishers = Vec::new();
    for i in 0..NODES {
        for (prefix, qos) in [("q1", QoS::AtLeastOnce), ("q2", QoS::ExactlyOnce)] {
            publishers.push(tokio::spawn(publisher(
                from(&addrs, i),
                format!("{prefix}-{i}"),
                qos,
                Arc::clone(&acked),
                Arc::clone(&stop),
            )));
        }
    }

    let started = Instant::now();
    for kill in 0..KILLS {
        let pause = 300 + rand_u64() % 900;
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let victim = (rand_u64() % NODES as u64) as usize;
        nodes[victim].kill9();
        eprintln!(
            "kill {}/{KILLS}: {} (:{}) after {pause} ms, at {} ms",
            kill + 1,
            nodes[victim].name,
            nodes[victim].mqtt.port(),
            now_ms()
        );
        nodes[victim].start(&nats).await;
        eprintln!("{} back at {} ms", nodes[victim].name, now_ms());
        if kill == NATS_KILL {
            let server = if lossy {
                store_leader(&nats).await
            } else {
                (rand_u64() % 3) as usize
            };
            nats.kill9(server);
            let killed = Instant::now();
            let name = nats.servers[server].name.clone();
            eprintln!("killed NATS server {name} at {} ms", now_ms());
            // The nodes go on under load on the other two; every stream has a
            // leader again after an election (measured, not required).
            let alive: Vec<String> = (0..nats.servers.len())
                .filter(|i| *i != server)
                .map(|i| nats.servers[i].url())
                .collect();
            if !lossy {
                streams_led(alive).await;
                eprintln!(
                    "every stream has a leader again after {:.1} s",
                    killed.elapsed().as_secs_f64()
                );
            }
            // Back before the next node restarts: nats-server 2.9 may place a
            // new ephemeral consumer (a node's read of a bucket at start or
            // takeover) on a server that is down, and the request times out
            // (fixed in later releases: nats-io/nats-server#7165).
            nats.restart(server).await;
            streams_led(nats.servers.iter().map(|s| s.url()).collect()).await;
            eprintln!("NATS server {name} back");
        }
    }
    stop.store(true, Ordering::Relaxed);
    for p in publishers {
        let _ = timeout(Duration::from_secs(10), p).await;
    }
    for task in online_tasks {
        task.abort();
    }
    eprintln!("load with kills: {:.1} s", started.elapsed().as_secs_f64());

    // Drain every subscriber (on a node other than its own) until every
    // acknowledged message is in, or a pass brings nothing new (30 s at most each).
    let acked = acked.lock().unwrap().clone();
    let mut subscribers = Vec::new();
    for i in 0..NODES {
        subscribers.push((format!("sub-online-{i}"), i, &online[i]));
        subscribers.push((format!("sub-offline-{i}"), i, &offline[i]));
    }
    for (id, i, received) in &subscribers {
        let addr = addrs[(i + 1) % NODES];
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut refused = 0;
        while Instant::now() < deadline {
            let before = received.lock().unwrap().messages.len();
            // A takeover reads the session from JetStream first: time for it.
            let idle = Some(Duration::from_secs(5));
            if !consume(addr, id, QoS::ExactlyOnce, received, false, idle).await {
                refused += 1;
                if refused == 1 {
                    eprintln!("{id}: no CONNACK from {addr}; trying again for up to 30 s");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            let r = received.lock().unwrap();
            if Tally::of(&r, &acked).missing == 0 || r.messages.len() == before {
                break;
            }
        }
    }
    let mut total = Tally::default();
    for (id, _, received) in &subscribers {
        let received = received.lock().unwrap();
        let tally = Tally::of(&received, &acked);
        eprintln!("{id}: {tally}");
        for line in missing_examples(&received, &acked, 8)
            .into_iter()
            .chain(received.examples(8))
        {
            eprintln!("  {line}");
        }
        if tally.missing + tally.qos2_duplicates + tally.order_violations > 0 {
            let timeline: Vec<String> = received
                .timeline
                .iter()
                .map(|(port, from, to)| format!(":{port} {from}..{to}"))
                .collect();
            eprintln!("  connections (port, ms): {}", timeline.join(", "));
        }
        total.acknowledged = tally.acknowledged;
        total.received += tally.received;
        total.missing += tally.missing;
        total.qos2_duplicates += tally.qos2_duplicates;
        total.order_violations += tally.order_violations;
    }
    eprintln!("all subscribers: {total}");
    for node in &mut nodes {
        node.print_warnings();
    }
    assert!(total.acknowledged > 0, "no message was acknowledged at all");
    assert_eq!(
        (total.missing, total.qos2_duplicates, total.order_violations),
        (0, 0, 0),
        "acknowledged messages never delivered, QoS 2 duplicates, order violations"
    );
    for node in &mut nodes {
        node.kill9();
        let _ = std::fs::remove_dir_all(&node.dir);
    }
}

/// The index of the NATS server that leads the store's stream (with replicas 1, holds it).
async fn store_leader(nats: &NatsCluster) -> usize {
    let mut stream = store_stream(nats.servers.iter().map(|s| s.url()).collect()).await;
    let info = stream.info().await.expect("stream info");
    let leader = info
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .expect("the stream has a leader");
    nats.servers
        .iter()
        .position(|s| s.name == leader)
        .expect("the leader is one of ours")
}

/// Waits (up to 60 s) until every JetStream stream answers its info request
/// with a leader (after a NATS server died, the others elect new ones).
async fn streams_led(urls: Vec<String>) {
    use futures_util::StreamExt;
    let client = async_nats::connect(urls).await.expect("connect to NATS");
    let jetstream = async_nats::jetstream::new(client);
    let deadline = Instant::now() + Duration::from_secs(60);
    'again: while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Ok(names) = jetstream
            .stream_names()
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<Vec<String>, _>>()
        else {
            continue;
        };
        for name in names {
            let led = match jetstream.get_stream(&name).await {
                Ok(mut stream) => stream
                    .info()
                    .await
                    .is_ok_and(|info| info.cluster.as_ref().is_some_and(|c| c.leader.is_some())),
                Err(_) => false,
            };
            if !led {
                continue 'again;
            }
        }
        return;
    }
    panic!("JetStream streams without a leader for 60 s");
}
