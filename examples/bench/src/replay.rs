//! The stream-replay scenario: one MQTT subscriber reads a durable stream
//! from its first message (`$stream/<name>/@first/#`, the MQTT 3.1.1 form)
//! and counts `--messages` deliveries; QoS 1 acknowledges each;
//! `--replay-rate` makes it a slow reader; `--broker-pid` adds the
//! broker's CPU seconds per message read. Fill the
//! stream first (e.g. the fan-in or qos1 scenario against a broker with a
//! `[[stream]]` on `bench/#`).

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::BytesMut;
use tern_mqtt::Packet;
use tokio::io::AsyncWriteExt;

use crate::client::{self, Login};
use crate::report::Report;
use crate::sys::CpuMark;
use crate::Args;

pub async fn run(args: &Args, addr: std::net::SocketAddr) -> anyhow::Result<Report> {
    let version = client::mqtt_version(args.mqtt_v5);
    let login = Login {
        client_id: format!("{}-replay", crate::client_prefix(args)),
        username: args.username.clone(),
        password: args.password.clone(),
        host: args.host.clone(),
        persistent: false,
        topic_alias_maximum: 0,
    };
    let mut stream = client::tcp(addr, None).await?;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    client::mqtt_connect(&mut stream, &mut buf, version, &login).await?;
    let filter = format!("$stream/{}/@first/#", args.stream);
    client::mqtt_subscribe(
        &mut stream,
        &mut buf,
        version,
        &filter,
        args.replay_qos,
        None,
    )
    .await?;
    let started = Instant::now();
    let cpu0 = CpuMark::now(&args.broker_pid);
    let limit = Duration::from_secs_f64(args.duration);
    let mut received = 0u64;
    let mut bytes = 0u64;
    let mut acks = BytesMut::new();
    let mut last = started;
    while received < args.messages {
        let left = limit.saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        let packet =
            match tokio::time::timeout(left, client::mqtt_read(&mut stream, &mut buf, version))
                .await
            {
                Ok(packet) => packet.context("reading the replay")?,
                Err(_) => break,
            };
        match packet {
            Packet::Publish(p) => {
                received += 1;
                // A slow reader: at most --replay-rate a second, checked every 64.
                if args.replay_rate > 0 && received.is_multiple_of(64) {
                    let due = Duration::from_secs_f64(received as f64 / args.replay_rate as f64);
                    if let Some(wait) = due.checked_sub(started.elapsed()) {
                        tokio::time::sleep(wait).await;
                    }
                }
                bytes += p.payload.len() as u64;
                last = Instant::now();
                if let Some(id) = p.packet_id {
                    client::encode_ack(&mut acks, version, 4, id);
                }
                // Acks go out when nothing more is buffered, a batch at a time.
                if !acks.is_empty() && buf.is_empty() {
                    stream.write_all(&acks).await?;
                    acks.clear();
                }
            }
            other => bail!("expected PUBLISH, got {}", other.name()),
        }
    }
    let took = last.duration_since(started).as_secs_f64().max(1e-9);
    let (gen_cpu_s, broker_cpu_s) = cpu0.until(&CpuMark::now(&args.broker_pid));
    let mut report = Report {
        duration_s: took,
        qos: Some(args.replay_qos),
        subscribers: Some(1),
        publishers: Some(0),
        payload: (received > 0).then(|| (bytes / received) as usize),
        received: Some(received),
        sent: Some(0),
        msgs_per_s: Some(received as f64 / took),
        gen_cpu_s,
        broker_pid: args.broker_pid.clone(),
        broker_cpu_s,
        ..Report::default()
    };
    report.derive();
    Ok(report)
}
