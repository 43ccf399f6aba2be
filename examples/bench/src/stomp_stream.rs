//! Streams over STOMP, for comparing brokers that keep streams (Tern,
//! RabbitMQ stream queues through its STOMP plugin):
//!
//! - `stomp-stream-append`: --publishers connections SEND --payload-byte
//!   messages to --stomp-destination, each with a receipt, at most --inflight
//!   unanswered per publisher; counts RECEIPTs (the broker has kept the
//!   message: Tern after its group commit, RabbitMQ after its publisher confirm).
//! - `stomp-stream-replay`: one subscriber reads --messages from
//!   --stomp-destination with `x-stream-offset: first`, `ack: client` and a
//!   prefetch of 1000, acknowledging cumulatively every 250 messages.
//!
//! `--stomp-header name:value` adds headers to the SENDs and the SUBSCRIBE
//! (e.g. `x-queue-type:stream` so RabbitMQ declares a stream queue).

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::BytesMut;
use tern_stomp::{Command, Frame};
use tokio::io::AsyncWriteExt;

use crate::client::{self, Login};
use crate::report::Report;
use crate::sys::CpuMark;
use crate::Args;

const PREFETCH: usize = 1000;
const ACK_EVERY: u64 = 250;

fn login(args: &Args, n: usize) -> Login {
    Login {
        client_id: format!("{}-s{n}", crate::client_prefix(args)),
        username: args.username.clone(),
        password: args.password.clone(),
        host: args.host.clone(),
        persistent: false,
        topic_alias_maximum: 0,
    }
}

fn destination(args: &Args) -> anyhow::Result<&str> {
    args.stomp_destination
        .as_deref()
        .context("--stomp-destination is required (e.g. /topic/bench/s or /queue/bench)")
}

fn with_extra_headers(mut frame: Frame, args: &Args) -> anyhow::Result<Frame> {
    for header in &args.stomp_header {
        let Some((name, value)) = header.split_once(':') else {
            bail!("--stomp-header {header:?}: expected name:value");
        };
        frame = frame.with_header(name, value);
    }
    Ok(frame)
}

fn frame_error(frame: &Frame) -> anyhow::Error {
    anyhow::anyhow!(
        "broker sent ERROR: {} {}",
        frame.header("message").unwrap_or(""),
        String::from_utf8_lossy(&frame.body).trim()
    )
}

pub async fn append(args: &Args, addr: std::net::SocketAddr) -> anyhow::Result<Report> {
    let publishers = args.publishers.unwrap_or(8).max(1);
    let limit = Duration::from_secs_f64(args.duration);
    let mut tasks = Vec::new();
    for n in 0..publishers {
        let args = args.clone();
        tasks.push(tokio::spawn(
            async move { publish(&args, addr, n, limit).await },
        ));
    }
    let started = Instant::now();
    let cpu0 = CpuMark::now(&args.broker_pid);
    let mut confirmed = 0u64;
    for task in tasks {
        confirmed += task.await.context("publisher task")??;
    }
    let took = started.elapsed().as_secs_f64().max(1e-9);
    let (gen_cpu_s, broker_cpu_s) = cpu0.until(&CpuMark::now(&args.broker_pid));
    let mut report = Report {
        duration_s: took,
        publishers: Some(publishers),
        subscribers: Some(0),
        payload: Some(args.payload),
        sent: Some(confirmed),
        received: Some(0),
        msgs_per_s: Some(confirmed as f64 / took),
        gen_cpu_s,
        broker_pid: args.broker_pid.clone(),
        broker_cpu_s,
        ..Report::default()
    };
    report.derive();
    Ok(report)
}

/// One publisher: SENDs with receipts until `limit`; the receipts it got.
async fn publish(
    args: &Args,
    addr: std::net::SocketAddr,
    n: usize,
    limit: Duration,
) -> anyhow::Result<u64> {
    let mut stream = client::tcp(addr, None).await?;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut decoder = client::stomp_decoder();
    client::stomp_connect(&mut stream, &mut buf, &mut decoder, &login(args, n)).await?;
    let dest = destination(args)?;
    let template = with_extra_headers(
        Frame::new(Command::Send)
            .with_header("destination", dest)
            .with_header("content-type", "application/octet-stream"),
        args,
    )?;
    let payload = vec![b'x'; args.payload];
    let started = Instant::now();
    let (mut sent, mut confirmed) = (0u64, 0u64);
    let mut out = BytesMut::new();
    let inflight = args.inflight.max(1) as u64;
    loop {
        let sending = started.elapsed() < limit;
        if sending {
            while sent - confirmed < inflight {
                let mut frame = template.clone().with_header("receipt", sent.to_string());
                frame.body = payload.clone().into();
                tern_stomp::encode(&frame, tern_stomp::Version::V1_2, &mut out);
                sent += 1;
            }
            stream.write_all(&out).await?;
            out.clear();
        } else if confirmed == sent {
            return Ok(confirmed);
        }
        // One frame read (waiting), then every frame already buffered, so the
        // window is refilled with one write per read, not one per RECEIPT.
        let mut next = Some(client::stomp_read(&mut stream, &mut buf, &mut decoder).await?);
        while let Some(frame) = next {
            match frame.command {
                Command::Receipt => confirmed += 1,
                Command::Error => return Err(frame_error(&frame)),
                other => bail!("expected RECEIPT, got {other}"),
            }
            next = client::stomp_buffered(&mut buf, &mut decoder)?;
        }
    }
}

pub async fn replay(args: &Args, addr: std::net::SocketAddr) -> anyhow::Result<Report> {
    let mut stream = client::tcp(addr, None).await?;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut decoder = client::stomp_decoder();
    client::stomp_connect(&mut stream, &mut buf, &mut decoder, &login(args, 0)).await?;
    let subscribe = with_extra_headers(
        Frame::new(Command::Subscribe)
            .with_header("id", "0")
            .with_header("destination", destination(args)?)
            .with_header("ack", "client")
            .with_header("prefetch-count", PREFETCH.to_string())
            .with_header("x-stream-offset", "first"),
        args,
    )?;
    let mut out = BytesMut::new();
    tern_stomp::encode(&subscribe, tern_stomp::Version::V1_2, &mut out);
    stream.write_all(&out).await?;
    out.clear();
    let started = Instant::now();
    let limit = Duration::from_secs_f64(args.duration);
    let (mut received, mut bytes) = (0u64, 0u64);
    let mut last = started;
    while received < args.messages {
        let left = limit.saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        let read = client::stomp_read(&mut stream, &mut buf, &mut decoder);
        let frame = match tokio::time::timeout(left, read).await {
            Ok(frame) => frame.context("reading the replay")?,
            Err(_) => break,
        };
        match frame.command {
            Command::Message => {
                received += 1;
                bytes += frame.body.len() as u64;
                last = Instant::now();
                if received % ACK_EVERY == 0 || received == args.messages {
                    let id = frame.header("ack").unwrap_or_default().to_string();
                    let ack = Frame::new(Command::Ack).with_header("id", id);
                    tern_stomp::encode(&ack, tern_stomp::Version::V1_2, &mut out);
                    stream.write_all(&out).await?;
                    out.clear();
                }
            }
            Command::Error => return Err(frame_error(&frame)),
            other => bail!("expected MESSAGE, got {other}"),
        }
    }
    let took = last.duration_since(started).as_secs_f64().max(1e-9);
    Ok(Report {
        duration_s: took,
        subscribers: Some(1),
        publishers: Some(0),
        payload: (received > 0).then(|| (bytes / received) as usize),
        received: Some(received),
        sent: Some(0),
        msgs_per_s: Some(received as f64 / took),
        ..Report::default()
    })
}
