//! Crash safety for real: publishers at QoS 1 and 2 against persistent
//! subscribers (one connected, one offline), the broker process killed with
//! SIGKILL at random moments, restarted on the same store, and at the end every
//! message the broker acknowledged must have been delivered — QoS 1 at least
//! once, QoS 2 exactly once — in order per publisher.
//!
//! The clients and their bookkeeping are in `common/crash.rs` (shared with
//! the clustered crash test, `durability_cluster_crash.rs`).
//!
//! Run twice: on the redb store, and on the NATS store (a real `nats-server
//! -js` that outlives every kill of tern).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::crash::{consume, publisher, rand_u64, Acked, Received, Tally};
use common::nats::{store_stream, NatsServer};
use common::process::{data_dir, free_port, Broker};
use tern_mqtt::QoS;
use tokio::time::{timeout, Instant};

const KILLS: usize = 10;

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
    let mut stream = store_stream(vec![nats.url.clone()]).await;
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
            vec![addr],
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
            if Tally::of(&received.lock().unwrap(), &acked).missing == 0 {
                break;
            }
        }
    }
    for (id, received) in [("sub-online", &online), ("sub-offline", &offline)] {
        let tally = Tally::of(&received.lock().unwrap(), &acked);
        eprintln!("{id}: {tally}");
        assert!(tally.acknowledged > 0, "no message was acknowledged at all");
        assert_eq!(
            (tally.missing, tally.qos2_duplicates, tally.order_violations),
            (0, 0, 0),
            "{id}: acknowledged messages never delivered, QoS 2 duplicates, order violations"
        );
    }
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}
