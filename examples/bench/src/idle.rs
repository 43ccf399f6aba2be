//! The idle scenario: open many connections (CONNECT + SUBSCRIBE each), then measure
//! how fast that went and, given the broker's pid, its resident memory per connection.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::client::{self, Login};
use crate::report::{Errors, Report};
use crate::sys::{proc_rss_bytes, CpuMark};
use crate::{Args, Endpoint, Protocol, Transport};

/// An open connection, over TCP or WebSocket.
trait Held: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Held for T {}

/// Opens one connection over `transport` and subscribes it to `topic`.
async fn open(
    transport: Transport,
    endpoint: &Endpoint,
    login: &Login,
    local: Option<IpAddr>,
    topic: &str,
) -> anyhow::Result<Box<dyn Held>> {
    Ok(match transport {
        Transport::Tcp => Box::new(
            client::open(endpoint, login, local, Some(topic), None)
                .await?
                .stream,
        ),
        Transport::Ws => Box::new(crate::ws::open(endpoint, login, local, Some(topic)).await?),
    })
}

/// Time given to the broker to settle before its RSS is read.
const SETTLE: Duration = Duration::from_secs(1);

pub async fn run(args: &Args, addr: SocketAddr) -> anyhow::Result<Report> {
    let endpoint = match args.protocol {
        Protocol::Mqtt => Endpoint::Mqtt {
            addr,
            v5: args.mqtt_v5,
            qos: 0,
        },
        Protocol::Stomp => Endpoint::Stomp { addr },
    };
    let n = args.connections;
    // The ephemeral port range holds ~28k ports per source address.
    let per_source = args.per_source.clamp(1, 28_000);
    let spread = n > per_source && addr.ip().is_loopback() && addr.is_ipv4();
    let sources = if spread { n.div_ceil(per_source) } else { 1 };
    if sources > 254 {
        anyhow::bail!("at most {} connections from loopback", 254 * per_source);
    }
    let duration = Duration::from_secs_f64(args.duration);
    let prefix = crate::client_prefix(args);

    let rss_before = args.broker_pid.first().copied().and_then(proc_rss_bytes);
    let cpu0 = CpuMark::now(&args.broker_pid);
    let start = Instant::now();
    let deadline = tokio::time::Instant::from_std(start + duration);
    let limit = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let mut set = JoinSet::new();
    for i in 0..n {
        let local =
            spread.then(|| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i / per_source) as u8)));
        let login = Login {
            client_id: format!("{prefix}-idle{i}"),
            username: args.username.clone(),
            password: args.password.clone(),
            host: args.host.clone(),
            persistent: false,
            topic_alias_maximum: 0,
        };
        let topic = match args.protocol {
            Protocol::Mqtt => format!("bench/idle/{i}"),
            Protocol::Stomp => format!("/topic/bench/idle/{i}"),
        };
        let endpoint = endpoint.clone();
        let limit = Arc::clone(&limit);
        let transport = args.transport;
        set.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let opened = tokio::time::timeout_at(
                deadline,
                open(transport, &endpoint, &login, local, &topic),
            )
            .await;
            match opened {
                Ok(Ok(stream)) => Ok(stream),
                Ok(Err(e)) => Err(format!("{e:#}")),
                Err(_) => Err("not connected within --duration".to_string()),
            }
        });
    }

    let bar = crate::progress(args);
    bar.set_length(n as u64);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{spinner} [{bar:40}] {pos}/{len} connections")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    let mut streams = Vec::with_capacity(n);
    let mut errors = Errors::default();
    let mut failed = 0;
    let mut last_done = start;
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(stream)) => {
                streams.push(stream);
                last_done = Instant::now();
            }
            Ok(Err(e)) => {
                failed += 1;
                errors.add(e);
            }
            Err(e) => {
                failed += 1;
                errors.add(format!("task: {e}"));
            }
        }
        bar.set_position((streams.len() + failed) as u64);
    }
    bar.finish_and_clear();
    let connect_s = last_done.duration_since(start).as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    let rss_after = args.broker_pid.first().copied().and_then(proc_rss_bytes);
    let cpu1 = CpuMark::now(&args.broker_pid);
    let measured = start.elapsed().as_secs_f64();
    let connected = streams.len();
    close_all(streams, args).await;

    let (gen_cpu, broker_cpu) = cpu0.until(&cpu1);
    let rss_per_connection = match (rss_before, rss_after) {
        (Some(b), Some(a)) if connected > 0 => Some((a as f64 - b as f64) / connected as f64),
        _ => None,
    };
    let mut report = Report {
        duration_s: measured,
        connections: Some(n),
        connected: Some(connected),
        failed: Some(failed),
        connect_s: Some(connect_s),
        connects_per_s: Some(if connect_s > 0.0 {
            connected as f64 / connect_s
        } else {
            0.0
        }),
        source_addrs: Some(sources),
        broker_rss_before: rss_before,
        broker_rss_after: rss_after,
        rss_per_connection,
        gen_cpu_s: gen_cpu,
        broker_pid: args.broker_pid.clone(),
        broker_cpu_s: broker_cpu,
        errors: errors.into_vec(),
        ..Report::default()
    };
    report.derive();
    Ok(report)
}

/// Says goodbye on every connection and waits (briefly) for the broker to close
/// first, so TIME_WAIT lands on the broker's side and back-to-back runs do not run
/// out of local ports.
async fn close_all(streams: Vec<Box<dyn Held>>, args: &Args) {
    let mut goodbye = bytes::BytesMut::new();
    match args.protocol {
        Protocol::Mqtt => {
            let d = tern_mqtt::Packet::Disconnect(tern_mqtt::Disconnect {
                reason: 0,
                properties: tern_mqtt::Properties::default(),
            });
            let _ = tern_mqtt::encode(&d, client::mqtt_version(args.mqtt_v5), &mut goodbye);
        }
        Protocol::Stomp => tern_stomp::encode(
            &tern_stomp::Frame::new(tern_stomp::Command::Disconnect).with_header("receipt", "bye"),
            tern_stomp::Version::V1_2,
            &mut goodbye,
        ),
    }
    let goodbye = goodbye.freeze();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut set = JoinSet::new();
    for mut stream in streams {
        let goodbye = goodbye.clone();
        set.spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = tokio::time::timeout_at(deadline, async {
                stream.write_all(&goodbye).await?;
                stream.flush().await?;
                let mut sink = [0u8; 256];
                // MQTT brokers close after DISCONNECT; a STOMP broker answers the receipt.
                loop {
                    let n = stream.read(&mut sink).await?;
                    if n == 0 || is_stomp_receipt(&sink[..n]) {
                        break;
                    }
                }
                // A WebSocket's closing handshake (over TCP: the FIN, after
                // the broker's for MQTT).
                stream.shutdown().await
            })
            .await;
        });
    }
    while set.join_next().await.is_some() {}
}

/// A RECEIPT frame ends a STOMP goodbye.
fn is_stomp_receipt(bytes: &[u8]) -> bool {
    bytes.starts_with(b"RECEIPT")
}
