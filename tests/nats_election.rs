//! What a replicated JetStream stream holds after one of its NATS servers was
//! killed and restarted and then became the stream's leader: the journal's
//! situation in the clustered crash test (3 nats-server, replicas 3).
//!
//! nats-server before 2.9.18 (the crash test runs 2.9.10) replays a purge
//! from its raft log at restart as "everything up to the stream's last
//! sequence at the time of the purge", whatever the purge's subject filter
//! and sequence were (nats-io/nats-server#4196). The restarted server then
//! lacks every other subject's messages below that point, and once it leads
//! the stream, reads miss acknowledged messages. Message deletes are
//! replayed one by one and stay exact.

mod common;

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use common::nats::NatsCluster;
use futures_util::StreamExt;

const STREAM: &str = "ELECT";

async fn context(urls: Vec<String>) -> jetstream::Context {
    let client = async_nats::connect(urls).await.expect("connect to NATS");
    jetstream::new(client)
}

/// Publishes `n` messages on each of `a.<n>` subjects `x` and `y`, interleaved.
async fn fill(js: &jetstream::Context, n: usize) {
    for i in 0..n {
        for s in ["x", "y"] {
            js.publish(format!("a.{s}"), format!("{s}{i}").into())
                .await
                .expect("publish")
                .await
                .expect("acknowledged");
        }
    }
}

/// The leader's count of messages on `subject` (asked of the leader).
async fn count(js: &jetstream::Context, subject: &str) -> u64 {
    let mut stream = js.get_stream(STREAM).await.expect("stream");
    let mut info = stream.info_with_subjects(subject).await.expect("info");
    let mut total = 0;
    while let Some(entry) = info.next().await {
        total += entry.expect("subject count").1 as u64;
    }
    total
}

async fn leader(js: &jetstream::Context) -> Option<String> {
    let mut stream = js.get_stream(STREAM).await.ok()?;
    let info = stream.info().await.ok()?;
    info.cluster.as_ref()?.leader.clone()
}

/// Steps the stream's leader down until `name` leads it (and every replica
/// is current).
async fn lead_on(js: &jetstream::Context, name: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} never became the leader"
        );
        let mut stream = js.get_stream(STREAM).await.expect("stream");
        let Ok(info) = stream.info().await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let cluster = info.cluster.clone().unwrap_or_default();
        let current = cluster.replicas.iter().all(|r| r.current);
        match cluster.leader.as_deref() {
            Some(l) if l == name && current => return,
            Some(_) if current => {
                let subject = format!("$JS.API.STREAM.LEADER.STEPDOWN.{STREAM}");
                let _ = js.client().request(subject, "".into()).await;
                // The next leader is elected: wait for one.
                while leader(js).await.is_none() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Writes, removes `a.x`'s first 40 messages with `remove`, writes more,
/// kills and restarts a follower, makes it the leader: what `a.y` holds.
async fn after_restart<F, Fut>(remove: F) -> (u64, u64)
where
    F: FnOnce(jetstream::Context) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut nats = NatsCluster::start(3).await;
    let urls: Vec<String> = nats.servers.iter().map(|s| s.url()).collect();
    let js = context(urls.clone()).await;
    js.create_stream(stream::Config {
        name: STREAM.into(),
        subjects: vec!["a.>".into()],
        num_replicas: 3,
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .expect("stream");
    fill(&js, 50).await;
    remove(js.clone()).await;
    fill(&js, 10).await;
    let before = count(&js, "a.y").await;
    // A follower: its restart is not an election.
    let lead = leader(&js).await.expect("a leader");
    let victim = nats
        .servers
        .iter()
        .position(|s| s.name != lead)
        .expect("a follower");
    let name = nats.servers[victim].name.clone();
    nats.kill9(victim);
    nats.restart(victim).await;
    lead_on(&js, &name).await;
    (before, count(&js, "a.y").await)
}

#[tokio::test]
async fn a_filtered_purge_replayed_at_a_restart_loses_other_subjects_on_2_9() {
    let (before, after) = after_restart(|js| async move {
        let stream = js.get_stream(STREAM).await.expect("stream");
        stream
            .purge()
            .filter("a.x")
            .sequence(80)
            .await
            .expect("purge");
    })
    .await;
    assert_eq!(before, 60);
    eprintln!("a.y before {before}, on the restarted leader {after}");
}

#[tokio::test]
async fn message_deletes_replayed_at_a_restart_stay_exact() {
    let (before, after) = after_restart(|js| async move {
        let stream = js.get_stream(STREAM).await.expect("stream");
        for seq in (1..80).step_by(2) {
            stream.delete_message(seq).await.expect("delete");
        }
    })
    .await;
    assert_eq!((before, after), (60, 60));
}
