//! The sse scenario: --subscribers HTTP server-sent event readers
//! (`GET /v1/events?topic=<topic>&retained=false` on --http-port, raw TCP,
//! each `data:` line counted) and --publishers MQTT QoS 0 publishers on --port,
//! all on one topic; reports deliveries/s over --duration. Publishers pause
//! while the slowest reader lags more than min(--window, 512) messages behind
//! them (an event stream's queue in the broker is bounded; a lag past it would
//! be dropped, not measured).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client::{self, Login};
use crate::report::Report;
use crate::sys::CpuMark;
use crate::Args;

/// A reader's lag past which publishers wait.
const MAX_LAG: u64 = 512;
/// Publishes encoded into one write.
const BATCH: u64 = 64;
/// What starts each event's data line.
const DATA_LINE: &[u8] = b"\ndata: ";

struct Shared {
    /// Events each reader has counted.
    received: Vec<AtomicU64>,
    /// Messages published, all publishers together.
    sent: AtomicU64,
    stop: AtomicBool,
}

impl Shared {
    fn slowest(&self) -> u64 {
        self.received
            .iter()
            .map(|r| r.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
    }

    fn total(&self) -> u64 {
        self.received
            .iter()
            .map(|r| r.load(Ordering::Relaxed))
            .sum()
    }
}

pub async fn run(args: &Args, mqtt: SocketAddr) -> anyhow::Result<Report> {
    let Some(http_port) = args.http_port else {
        bail!("the sse scenario needs --http-port (the broker's web port, /v1/events)");
    };
    let http = SocketAddr::new(mqtt.ip(), http_port);
    let readers = args.subscribers.unwrap_or(100).max(1);
    let publishers = args.publishers.unwrap_or(1).max(1);
    let topic = args
        .topic
        .clone()
        .unwrap_or_else(|| "bench/sse".to_string());
    let window = args.window.clamp(1, MAX_LAG);
    let shared = Arc::new(Shared {
        received: (0..readers).map(|_| AtomicU64::new(0)).collect(),
        sent: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let mut tasks = Vec::new();
    for r in 0..readers {
        // The stream is subscribed once its response headers arrive.
        let stream = open_events(http, &args.host, &topic).await?;
        tasks.push(tokio::spawn(read_events(Arc::clone(&shared), r, stream)));
    }
    let payload = Bytes::from(vec![b'x'; args.payload.max(client::STAMP_LEN)]);
    let mut pubs = Vec::new();
    for p in 0..publishers {
        let login = Login {
            client_id: format!("{}-ssepub{p}", crate::client_prefix(args)),
            username: args.username.clone(),
            password: args.password.clone(),
            host: args.host.clone(),
            persistent: false,
            topic_alias_maximum: 0,
        };
        let shared = Arc::clone(&shared);
        let (topic, payload) = (topic.clone(), payload.clone());
        let v5 = args.mqtt_v5;
        pubs.push(tokio::spawn(async move {
            publish(shared, mqtt, login, v5, topic, payload, window).await
        }));
    }
    let cpu0 = CpuMark::now(&args.broker_pid);
    let received0 = shared.total();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    let received1 = shared.total();
    let took = started.elapsed().as_secs_f64();
    let cpu1 = CpuMark::now(&args.broker_pid);
    shared.stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for task in pubs {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(format!("publisher: {e:#}")),
            Err(e) => errors.push(format!("publisher task: {e}")),
        }
    }
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        if let Ok(Err(e)) = task.await {
            errors.push(format!("reader: {e:#}"));
        }
    }
    let deliveries = received1 - received0;
    let (gen_cpu, broker_cpu) = cpu0.until(&cpu1);
    let mut report = Report {
        duration_s: took,
        qos: Some(0),
        publishers: Some(publishers),
        subscribers: Some(readers),
        payload: Some(payload.len()),
        sent: Some(shared.sent.load(Ordering::Relaxed)),
        received: Some(shared.total()),
        msgs_per_s: Some(deliveries as f64 / took / readers as f64),
        deliveries_per_s: Some(deliveries as f64 / took),
        gen_cpu_s: gen_cpu,
        broker_pid: args.broker_pid.clone(),
        broker_cpu_s: broker_cpu,
        errors,
        ..Report::default()
    };
    report.derive();
    Ok(report)
}

/// Opens one event stream: the request, then its response headers (200 expected).
async fn open_events(addr: SocketAddr, host: &str, topic: &str) -> anyhow::Result<TcpStream> {
    let mut stream = client::tcp(addr, None).await?;
    let topic = topic.replace('#', "%23").replace('+', "%2B");
    let request = format!(
        "GET /v1/events?topic={topic}&retained=false HTTP/1.1\r\nHost: {host}\r\n\
         Accept: text/event-stream\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte up to the blank line, so no event is read into the headers.
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(client::HANDSHAKE_TIMEOUT, stream.read(&mut byte))
            .await
            .context("no response to GET /v1/events")??;
        if n == 0 || head.len() > 16 * 1024 {
            bail!("GET /v1/events: the connection ended before the response headers");
        }
        head.push(byte[0]);
    }
    let status = String::from_utf8_lossy(&head);
    let first = status.lines().next().unwrap_or_default();
    if !first.contains(" 200 ") {
        bail!("GET /v1/events answered {first:?}");
    }
    Ok(stream)
}

/// Counts the stream's events (one `data:` line each) until it ends.
async fn read_events(shared: Arc<Shared>, r: usize, mut stream: TcpStream) -> anyhow::Result<()> {
    let mut buf = BytesMut::with_capacity(client::READ_CHUNK);
    // The end of the previous read, so a line split between reads is counted once.
    let mut carry: Vec<u8> = Vec::with_capacity(DATA_LINE.len());
    loop {
        buf.clear();
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
        let mut events = 0u64;
        let joined: Vec<u8> = carry.iter().chain(buf.iter()).copied().collect();
        events += joined
            .windows(DATA_LINE.len())
            .filter(|w| *w == DATA_LINE)
            .count() as u64;
        let keep = joined.len().min(DATA_LINE.len() - 1);
        carry.clear();
        carry.extend_from_slice(&joined[joined.len() - keep..]);
        if let Some(counter) = shared.received.get(r) {
            counter.fetch_add(events, Ordering::Relaxed);
        }
    }
}

/// Publishes QoS 0 messages a batch at a time while the slowest reader keeps up.
async fn publish(
    shared: Arc<Shared>,
    addr: SocketAddr,
    login: Login,
    v5: bool,
    topic: String,
    payload: Bytes,
    window: u64,
) -> anyhow::Result<()> {
    let version = client::mqtt_version(v5);
    let mut stream = client::tcp(addr, None).await?;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    client::mqtt_connect(&mut stream, &mut buf, version, &login).await?;
    let mut out = BytesMut::with_capacity(64 * 1024);
    let mut seq = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        if shared.sent.load(Ordering::Relaxed) >= shared.slowest() + window {
            tokio::time::sleep(Duration::from_micros(200)).await;
            continue;
        }
        out.clear();
        for _ in 0..BATCH {
            client::encode_mqtt_publish(
                &mut out, version, &topic, 0, None, &payload, 0, seq, 0, None,
            )?;
            seq += 1;
        }
        stream.write_all(&out).await?;
        shared.sent.fetch_add(BATCH, Ordering::Relaxed);
    }
    Ok(())
}
