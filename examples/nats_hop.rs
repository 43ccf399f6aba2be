//! The latency of one core-NATS hop on this machine: a publisher and a
//! subscriber (two connections of this process, `async-nats` as Tern's nodes
//! use it) on one nats-server, messages paced at RATE a second, each carrying
//! its send time; p50 / p99 of publish → receipt. A message between two Tern
//! nodes crosses exactly this hop, between the publishing node's read of the
//! client's PUBLISH and the receiving node's write to its subscriber (#18).
//!
//! ```text
//! nats-server -p 24222 &
//! cargo run --release --example nats_hop -- nats://127.0.0.1:24222 [RATE=5000] [SECONDS=5]
//! ```

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let rate: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5000);
    let seconds: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5);
    let publisher = async_nats::connect(&url).await?;
    let subscriber = async_nats::connect(&url).await?;
    let mut messages = subscriber.subscribe("hop.latency").await?;
    subscriber.flush().await?;
    let start = Instant::now();
    let total = rate * seconds;
    let receiving = tokio::spawn(async move {
        let mut latencies: Vec<u64> = Vec::with_capacity(total as usize);
        while let Some(message) = messages.next().await {
            let sent = message
                .payload
                .get(..8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_le_bytes);
            if let Some(sent) = sent {
                let now = start.elapsed().as_nanos() as u64;
                latencies.push(now.saturating_sub(sent) / 1000);
            }
            if latencies.len() as u64 == total {
                break;
            }
        }
        latencies
    });
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    for _ in 0..total {
        tick.tick().await;
        let mut payload = (start.elapsed().as_nanos() as u64).to_le_bytes().to_vec();
        payload.resize(64, 0);
        publisher
            .publish("hop.latency", Bytes::from(payload))
            .await?;
    }
    let mut latencies = tokio::time::timeout(Duration::from_secs(10), receiving).await??;
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "core NATS hop, {rate} msg/s, {} received of {total}: p50 {} us, p99 {} us",
        latencies.len(),
        at(0.5),
        at(0.99)
    );
    Ok(())
}
