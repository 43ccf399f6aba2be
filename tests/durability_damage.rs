//! A store file damaged after a crash: 2,000 QoS 1 messages acknowledged to an
//! offline persistent session, kill -9, 64 bytes of the file's last page
//! flipped. If redb rolls back to an older commit, Tern must say so at ERROR,
//! keep a copy of the damaged file and set `tern_store_recovered`; damage it
//! cannot repair is refused with an error naming the file.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use common::http::{get, sample};
use common::process::{data_dir, free_port, Broker, Conn};
use tern_mqtt::{
    Packet, Properties, Publish, QoS, Subscribe, SubscribeFilter, SubscriptionOptions,
};

const WAIT: Duration = Duration::from_secs(10);
const MESSAGES: u16 = 2000;
/// Publishes sent before their PUBACKs are read.
const WINDOW: u16 = 100;

/// Any setting, so the broker's log is captured.
const ENV: [(&str, &str); 1] = [("TERN_LIMITS__MAX_QUEUED_MESSAGES", "10000000")];

async fn start(ports: (u16, u16), dir: &Path) -> Result<Broker, String> {
    Broker::start_with(ports.0, ports.1, dir, &ENV).await
}

/// An offline persistent session subscribed to `dmg/#`, then MESSAGES acknowledged
/// QoS 1 messages queued for it, then kill -9. Returns the store file.
async fn crashed_store(name: &str) -> (PathBuf, (u16, u16)) {
    let dir = data_dir(name);
    let ports = (free_port(), free_port());
    let mut broker = start(ports, &dir).await.expect("broker starts");
    let (mut sub, _) = Conn::open(broker.mqtt, "offline", false)
        .await
        .expect("connect");
    let subscribe = Packet::Subscribe(Subscribe {
        packet_id: 1,
        filters: vec![SubscribeFilter {
            filter: "dmg/#".into(),
            options: SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                no_local: false,
                retain_as_published: false,
                retain_handling: 0,
            },
        }],
        properties: Properties::default(),
    });
    sub.send(&subscribe).await.expect("SUBSCRIBE");
    assert!(matches!(sub.recv(WAIT).await, Some(Packet::SubAck(_))));
    drop(sub);
    let (mut publisher, _) = Conn::open(broker.mqtt, "publisher", true)
        .await
        .expect("connect");
    for start in (1..=MESSAGES).step_by(usize::from(WINDOW)) {
        let ids = start..(start + WINDOW).min(MESSAGES + 1);
        for id in ids.clone() {
            let publish = Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: "dmg/t".into(),
                packet_id: Some(id),
                properties: Properties::default(),
                payload: Bytes::from(format!("message {id}")),
            });
            publisher.send(&publish).await.expect("PUBLISH");
        }
        for id in ids {
            match publisher.recv(WAIT).await {
                Some(Packet::PubAck(ack)) => assert_eq!(ack.packet_id, id),
                other => panic!("expected PUBACK {id}, got {other:?}"),
            }
        }
    }
    broker.kill9();
    (dir.join("tern.redb"), ports)
}

/// XORs 64 bytes of `file` from `offset` with 0xFF.
fn flip_64_bytes(file: &Path, offset: u64) {
    let mut bytes = std::fs::read(file).expect("read store");
    let at = usize::try_from(offset).expect("offset");
    for b in &mut bytes[at..at + 64] {
        *b ^= 0xFF;
    }
    std::fs::write(file, bytes).expect("write store");
}

fn damaged_copies(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .expect("data dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().contains("tern.redb.damaged-"))
        .collect()
}

async fn scrape(broker: &Broker) -> String {
    let http = broker
        .listener("http")
        .expect("http listener in the banner");
    get(http, "/metrics").await.body
}

/// Puts the crashed store back as it was, without any copy made meanwhile.
fn restore(file: &Path, pristine: &[u8]) {
    std::fs::write(file, pristine).expect("restore the store file");
    for copy in damaged_copies(file.parent().expect("dir")) {
        std::fs::remove_file(copy).expect("remove copy");
    }
}

#[tokio::test]
async fn a_rollback_of_a_damaged_store_is_logged_counted_and_the_damaged_file_kept() {
    let (file, ports) = crashed_store("damage").await;
    let dir = file.parent().expect("dir").to_path_buf();
    let pristine = std::fs::read(&file).expect("read store");
    let len = pristine.len() as u64;

    // Damage elsewhere is refused with an error naming the file, and nothing is reset.
    for offset in [0, 64, 4096] {
        flip_64_bytes(&file, offset);
        let damaged = std::fs::read(&file).expect("read store");
        let log = match start(ports, &dir).await {
            Ok(_) => panic!("a store damaged at {offset} was opened"),
            Err(log) => log,
        };
        assert!(log.contains(&file.display().to_string()), "{offset}: {log}");
        assert!(
            log.contains("corrupt") || log.contains("cannot open store"),
            "{offset}: {log}"
        );
        assert_eq!(
            std::fs::read(&file).expect("read store"),
            damaged,
            "{offset}: file kept as it was"
        );
        restore(&file, &pristine);
    }

    // Which of the last pages holds the newest commit depends on the allocator
    // (and on the tables the store has): damage one page after another from the
    // end until redb rolls back.
    let mut rolled_back = None;
    for page in 1..=(len / 4096).min(64) {
        let offset = len - page * 4096;
        flip_64_bytes(&file, offset);
        let damaged = std::fs::read(&file).expect("read store");
        let Ok(mut broker) = start(ports, &dir).await else {
            restore(&file, &pristine);
            continue;
        };
        let metrics = scrape(&broker).await;
        if sample(&metrics, "tern_store_recovered", "") == Some(1.0) {
            rolled_back = Some((offset, broker, damaged, metrics));
            break;
        }
        assert_eq!(
            sample(&metrics, "tern_store_recovered", ""),
            Some(0.0),
            "{metrics}"
        );
        assert!(
            damaged_copies(&dir).is_empty(),
            "no copy without a rollback"
        );
        broker.kill9();
        restore(&file, &pristine);
    }
    let (offset, broker, damaged, metrics) = rolled_back.expect("a damaged last page rolls back");
    let line = broker
        .wait_for_log(&["ERROR", "rolled back", "may be missing", "damaged_copy"])
        .await;
    let copies = damaged_copies(&dir);
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert!(line.contains(&copies[0].display().to_string()), "{line}");
    assert_eq!(
        std::fs::read(&copies[0]).expect("copy"),
        damaged,
        "the copy is the damaged file as it was before redb rewrote it"
    );
    let held = sample(&metrics, "tern_store_messages", "").unwrap_or_default();
    eprintln!(
        "damage at {offset} of {len}: rolled back; {held} of {MESSAGES} acknowledged messages left"
    );
    assert!(
        held < f64::from(MESSAGES),
        "the rollback lost the newest commits: {held}"
    );
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_restart_after_a_crash_says_that_the_store_was_repaired() {
    let (file, ports) = crashed_store("unclean").await;
    let dir = file.parent().expect("dir").to_path_buf();
    let broker = start(ports, &dir).await.expect("restarts");
    broker
        .wait_for_log(&["WARN", "not shut down cleanly", "no committed data is lost"])
        .await;
    let metrics = scrape(&broker).await;
    assert_eq!(
        sample(&metrics, "tern_store_recovered", ""),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "tern_store_messages", ""),
        Some(f64::from(MESSAGES))
    );
    assert!(damaged_copies(&dir).is_empty());
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A SIGTERM closes the store file cleanly (the writer thread finishes and the
/// database is dropped before the process exits): the next start repairs nothing
/// and says nothing about it.
#[tokio::test]
async fn a_clean_shutdown_leaves_a_store_that_opens_without_repair() {
    let dir = data_dir("clean");
    let ports = (free_port(), free_port());
    let mut broker = start(ports, &dir).await.expect("broker starts");
    let (conn, _) = Conn::open(broker.mqtt, "durable", false)
        .await
        .expect("connect");
    drop(conn);
    assert_eq!(broker.terminate(), Some(0), "SIGTERM exits 0");
    // At info level the last line is "shutdown complete": once it is read, so
    // is everything the start logged (a repair is logged while the store opens).
    let info = [("TERN_LOG__LEVEL", "info")];
    let mut broker = Broker::start_with(ports.0, ports.1, &dir, &info)
        .await
        .expect("restarts");
    assert_eq!(broker.terminate(), Some(0));
    broker.wait_for_log(&["shutdown complete"]).await;
    let log = broker.log.lock().join("\n");
    assert!(
        !log.contains("not shut down cleanly") && !log.contains(" WARN "),
        "a clean shutdown left a store that needed repair:\n{log}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
