//! `tern-bench`: a load generator for MQTT and STOMP brokers.
//!
//! Works against any broker (Tern, Mosquitto, ...): raw TCP streams, the project's
//! codecs (`tern-mqtt`, `tern-stomp`), batched writes, 64 KiB reads. Publishers stop
//! sending when too many of their messages are still unreceived (the window), so the
//! rates reported are sustainable rather than "sent into a queue that drops".
//!
//! # Layout
//!
//! - `main.rs`: command line, scenario plans, runtime, output.
//! - `client.rs`: connecting, MQTT/STOMP handshakes and subscriptions, payload stamping.
//! - `flow.rs`: the publish/subscribe scenarios (publishers, subscribers, flow control).
//! - `idle.rs`: the idle-connections scenario.
//! - `replay.rs`: the stream-replay scenario (a durable stream read from its first message).
//! - `sse.rs`: the sse scenario (HTTP server-sent event readers, MQTT publishers).
//! - `ws.rs`: MQTT and STOMP over WebSocket (idle scenario, `--transport ws`).
//! - `track.rs`: sequence tracking (lost, duplicated, reordered) per publisher.
//! - `sys.rs`: own CPU time (getrusage), broker CPU and RSS from /proc.
//! - `report.rs`: the result record (one JSON line) and the human summary.

mod client;
mod flow;
mod idle;
mod replay;
mod report;
mod sse;
mod stomp_stream;
mod sys;
mod track;
mod ws;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Load generator for MQTT (3.1.1/5.0) and STOMP (1.2) brokers.
///
/// Each run prints a human summary and, with --json, one JSON line of results on
/// stdout (the summary then goes to stderr). Publishers pause while more than
/// --window of their messages are unreceived (QoS 1/2 also keep at most --inflight
/// unacknowledged), so the rates are sustainable and losses are the broker's.
#[derive(Parser, Debug, Clone)]
#[command(name = "tern-bench", version)]
pub struct Args {
    /// Broker host.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker port (MQTT or STOMP, per --protocol; MQTT for `cross`).
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    /// STOMP port for the `cross` scenario (MQTT publishers -> STOMP subscribers).
    #[arg(long)]
    pub stomp_port: Option<u16>,
    /// Subscribers connect here instead of --host/--port: another node of a
    /// cluster (publishers on one node, subscribers on another). MQTT scenarios.
    #[arg(long)]
    pub sub_host: Option<String>,
    /// MQTT port of the subscribers' node (with or without --sub-host).
    #[arg(long)]
    pub sub_port: Option<u16>,
    /// Milliseconds to wait after the subscribers' SUBACKs before publishing: a
    /// subscription made on one node reaches the others a moment later
    /// [default: 500 with --sub-port, else 0].
    #[arg(long)]
    pub settle_ms: Option<u64>,
    /// Protocol for fan-in / fan-out / latency / idle (stomp-* scenarios imply stomp).
    #[arg(long, value_enum, default_value_t = Protocol::Mqtt)]
    pub protocol: Protocol,
    #[arg(long, value_enum, default_value_t = Scenario::FanIn)]
    pub scenario: Scenario,
    /// Measured seconds (the run also spends a little time connecting and draining).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Payload bytes per message (at least 20: publisher id, sequence, timestamp).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Publishers [default: 8 for fan-in/qos1/qos2/cross, 1 for fan-out/latency].
    #[arg(long)]
    pub publishers: Option<usize>,
    /// Subscribers [default: 100 for fan-out, 1 otherwise].
    #[arg(long)]
    pub subscribers: Option<usize>,
    /// Unacknowledged QoS 1/2 messages per publisher.
    #[arg(long, default_value_t = 64)]
    pub inflight: usize,
    /// Unreceived messages per publisher before it pauses (end to end, every QoS).
    /// Keep publishers x window below the broker's per-client queue limit.
    #[arg(long, default_value_t = 10_000)]
    pub window: u64,
    /// Messages/s in total for the latency scenario (spread over the publishers).
    #[arg(long, default_value_t = 5000.0)]
    pub rate: f64,
    /// Connections for the idle scenario.
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Idle scenario: plain TCP, or WebSocket (--port is then the broker's
    /// WebSocket port: ws://host:port/mqtt with subprotocol `mqtt`, or /stomp
    /// with `v12.stomp`).
    #[arg(long, value_enum, default_value_t = Transport::Tcp)]
    pub transport: Transport,
    /// Idle connections per loopback source address (127.0.0.1, .2, ...) once
    /// --connections exceeds it.
    #[arg(long, default_value_t = 20_000)]
    pub per_source: usize,
    /// Connection handshakes in progress at once (idle scenario).
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Broker process id: its CPU seconds during the run and, for idle, RSS per
    /// connection. Several (comma-separated, e.g. the nodes of a cluster and
    /// their NATS server): their CPU seconds together (RSS: the first's).
    #[arg(long, value_delimiter = ',')]
    pub broker_pid: Vec<u32>,
    /// Runtime worker threads [default: available cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Subscribers use persistent sessions (measures a broker's durable path).
    #[arg(long)]
    pub persistent: bool,
    /// Speak MQTT 5.0 instead of 3.1.1.
    #[arg(long)]
    pub mqtt_v5: bool,
    /// Topic Alias Maximum the MQTT 5 subscribers send in CONNECT, so the broker may
    /// replace repeated topics by aliases (needs --mqtt-v5; 0: no aliases).
    #[arg(long, default_value_t = 0)]
    pub topic_alias_maximum: u16,
    /// MQTT topic of the fan-out and latency scenarios [default: bench/fanout,
    /// bench/latency]; e.g. a long one to measure topic aliases.
    #[arg(long)]
    pub topic: Option<String>,
    /// Client id prefix [default: tb<pid>]; ids are <prefix>-pub0, -sub0, -idle0, ...
    #[arg(long)]
    pub client_prefix: Option<String>,
    /// MQTT username / STOMP login.
    #[arg(long)]
    pub username: Option<String>,
    /// MQTT password / STOMP passcode.
    #[arg(long)]
    pub password: Option<String>,
    /// STOMP destination the subscribers use [default: /topic/bench/# for cross,
    /// else the publishers' destination].
    #[arg(long)]
    pub stomp_destination: Option<String>,
    /// Extra header (`name:value`, repeatable) on the SENDs and the SUBSCRIBE
    /// of the stomp-stream-* scenarios, e.g. `x-queue-type:stream` for RabbitMQ.
    #[arg(long)]
    pub stomp_header: Vec<String>,
    /// MQTT filter the subscribers use [default: the scenario's: `bench/#` for
    /// fan-in/qos1/qos2, else the publishers' topic]. E.g. `bench/#` in fan-out
    /// to measure wildcard subscriptions (and ACL deny rules that overlap them).
    #[arg(long)]
    pub filter: Option<String>,
    /// Messages encoded into one write (throughput scenarios).
    #[arg(long, default_value_t = 512)]
    pub batch: usize,
    /// Print one JSON line of results on stdout (human summary on stderr).
    #[arg(long)]
    pub json: bool,
    /// stream-replay: the stream read from its first message.
    #[arg(long, default_value = "bench")]
    pub stream: String,
    /// stream-replay: messages to read (the stream must hold at least this many).
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: u64,
    /// stream-replay: QoS of the subscription (1: each message acknowledged).
    #[arg(long, default_value_t = 0)]
    pub replay_qos: u8,
    /// stream-replay: read at most this many messages a second (a slow reader;
    /// 0: as fast as the broker sends).
    #[arg(long, default_value_t = 0)]
    pub replay_rate: u64,
    /// sse: the broker's web port (`GET /v1/events`); --port is then the MQTT
    /// port of the publishers.
    #[arg(long)]
    pub http_port: Option<u16>,
    /// Subscribers subscribe with this JMS selector (MQTT 5 subscription user
    /// property `selector`, needs --mqtt-v5; STOMP `selector` header). With
    /// --selector-buckets, one that matches exactly one bucket (e.g.
    /// `bucket = 3`) keeps the loss accounting exact. `{sub}` stands for the
    /// subscriber's index modulo --selector-buckets (`bucket = {sub}`: one
    /// distinct selector per bucket).
    #[arg(long)]
    pub selector: Option<String>,
    /// Publishers tag message n with the user property / header `bucket` =
    /// n mod N (0: no tag). Use the same N with and without --selector to
    /// compare like with like.
    #[arg(long, default_value_t = 0)]
    pub selector_buckets: u64,
    /// Free-form label copied into the JSON (e.g. the broker's name).
    #[arg(long)]
    pub label: Option<String>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Ws,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Mqtt,
    Stomp,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// N publishers -> 1 subscriber of `bench/#`, QoS 0.
    FanIn,
    /// N publishers x --inflight -> 1 QoS 1 subscriber.
    Qos1,
    /// N publishers x --inflight -> 1 QoS 2 subscriber.
    Qos2,
    /// 1 publisher -> N subscribers of one topic, QoS 0.
    FanOut,
    /// Paced at --rate msg/s, QoS 0: latency p50/p99/p999.
    Latency,
    /// --connections connections, each CONNECT + SUBSCRIBE, then idle.
    Idle,
    /// STOMP publishers -> 1 STOMP subscriber.
    StompFanIn,
    /// 1 STOMP publisher -> N STOMP subscribers.
    StompFanOut,
    /// MQTT publishers (--port) -> STOMP subscriber (--stomp-port).
    Cross,
    /// 1 MQTT subscriber reads --messages of stream --stream from its first
    /// (`$stream/<name>/@first/#`) at --replay-qos.
    StreamReplay,
    /// STOMP publishers SEND with receipts to --stomp-destination (a stream's topic
    /// or a RabbitMQ stream queue), --inflight unanswered each.
    StompStreamAppend,
    /// 1 STOMP subscriber reads --messages from --stomp-destination with
    /// `x-stream-offset: first` (`ack: client`, prefetch 1000).
    StompStreamReplay,
    /// --publishers MQTT QoS 0 publishers (--port) -> --subscribers HTTP
    /// server-sent event readers (--http-port) of one topic [default: 1 -> 100].
    Sse,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::FanIn => "fan-in",
            Scenario::Qos1 => "qos1",
            Scenario::Qos2 => "qos2",
            Scenario::FanOut => "fan-out",
            Scenario::Latency => "latency",
            Scenario::Idle => "idle",
            Scenario::StompFanIn => "stomp-fan-in",
            Scenario::StompFanOut => "stomp-fan-out",
            Scenario::Cross => "cross",
            Scenario::StreamReplay => "stream-replay",
            Scenario::StompStreamAppend => "stomp-stream-append",
            Scenario::StompStreamReplay => "stomp-stream-replay",
            Scenario::Sse => "sse",
        }
    }
}

/// How one side of a flow talks to the broker.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Mqtt { addr: SocketAddr, v5: bool, qos: u8 },
    Stomp { addr: SocketAddr },
}

/// A publish/subscribe scenario resolved from the arguments.
#[derive(Debug, Clone)]
pub struct Plan {
    pub publishers: usize,
    pub subscribers: usize,
    pub publish: Endpoint,
    pub subscribe: Endpoint,
    /// Topic (MQTT) or destination (STOMP) per publisher.
    pub pub_topics: Vec<String>,
    /// What every subscriber subscribes to.
    pub sub_topic: String,
    /// Total messages/s when paced (latency), else as fast as the windows allow.
    pub rate: Option<f64>,
    pub payload: usize,
    pub window: u64,
    pub inflight: usize,
    pub batch: usize,
    pub username: Option<String>,
    pub password: Option<String>,
    pub host: String,
    pub client_prefix: String,
    pub persistent: bool,
    /// Topic Alias Maximum in the subscribers' CONNECT (MQTT 5; 0: none).
    pub topic_alias_maximum: u16,
    /// Pause between the subscriptions and the first publish (`--settle-ms`).
    pub settle: Duration,
    /// The subscribers' selector (`--selector`).
    pub selector: Option<String>,
    /// Messages tagged `bucket` = seq mod this (`--selector-buckets`; 0: none).
    pub buckets: u64,
}

/// The client id prefix: --client-prefix, or one unique to this process.
pub fn client_prefix(args: &Args) -> String {
    args.client_prefix
        .clone()
        .unwrap_or_else(|| format!("tb{}", std::process::id()))
}

fn resolve(args: &Args) -> anyhow::Result<SocketAddr> {
    use std::net::ToSocketAddrs;
    (args.host.as_str(), args.port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {}", args.host))?
        .next()
        .with_context(|| format!("no address for {}", args.host))
}

/// The scenario that actually runs: `--protocol stomp` turns fan-in/fan-out into their STOMP forms.
fn effective_scenario(args: &Args) -> anyhow::Result<Scenario> {
    Ok(match (args.protocol, args.scenario) {
        (Protocol::Stomp, Scenario::FanIn) => Scenario::StompFanIn,
        (Protocol::Stomp, Scenario::FanOut) => Scenario::StompFanOut,
        (Protocol::Stomp, Scenario::Qos1 | Scenario::Qos2) => {
            bail!("qos1/qos2 are MQTT scenarios; use --protocol mqtt")
        }
        (_, s) => s,
    })
}

fn plan(args: &Args, scenario: Scenario) -> anyhow::Result<Plan> {
    let addr = resolve(args)?;
    let v5 = args.mqtt_v5;
    if args.topic_alias_maximum > 0 && !v5 {
        bail!("--topic-alias-maximum needs --mqtt-v5");
    }
    let stomp_only = args.protocol == Protocol::Stomp
        || matches!(scenario, Scenario::StompFanIn | Scenario::StompFanOut);
    if (args.selector.is_some() || args.selector_buckets > 0) && !v5 && !stomp_only {
        bail!("--selector and --selector-buckets need --mqtt-v5 (or STOMP)");
    }
    let stomp_proto = args.protocol == Protocol::Stomp
        || matches!(scenario, Scenario::StompFanIn | Scenario::StompFanOut);
    let mqtt = |qos| Endpoint::Mqtt { addr, v5, qos };
    let sub_addr = match (&args.sub_host, args.sub_port) {
        (None, None) => addr,
        (host, port) => {
            use std::net::ToSocketAddrs;
            let host = host.as_deref().unwrap_or(args.host.as_str());
            (host, port.unwrap_or(args.port))
                .to_socket_addrs()
                .with_context(|| format!("cannot resolve {host}"))?
                .next()
                .with_context(|| format!("no address for {host}"))?
        }
    };
    let mqtt_sub = |qos| Endpoint::Mqtt {
        addr: sub_addr,
        v5,
        qos,
    };
    let (default_pubs, default_subs) = match scenario {
        Scenario::FanOut | Scenario::StompFanOut => (1, 100),
        Scenario::Latency => (1, 1),
        _ => (8, 1),
    };
    let publishers = args.publishers.unwrap_or(default_pubs).max(1);
    let subscribers = args.subscribers.unwrap_or(default_subs).max(1);
    let per_pub =
        |prefix: &str| -> Vec<String> { (0..publishers).map(|p| format!("{prefix}{p}")).collect() };
    let same = |topic: &str| -> Vec<String> { vec![topic.to_string(); publishers] };
    let (publish, subscribe, pub_topics, sub_topic) = match scenario {
        Scenario::FanIn => (
            mqtt(0),
            mqtt_sub(0),
            per_pub("bench/"),
            "bench/#".to_string(),
        ),
        Scenario::Qos1 => (
            mqtt(1),
            mqtt_sub(1),
            per_pub("bench/"),
            "bench/#".to_string(),
        ),
        Scenario::Qos2 => (
            mqtt(2),
            mqtt_sub(2),
            per_pub("bench/"),
            "bench/#".to_string(),
        ),
        Scenario::FanOut => {
            let topic = args.topic.as_deref().unwrap_or("bench/fanout");
            (mqtt(0), mqtt_sub(0), same(topic), topic.to_string())
        }
        Scenario::Latency if stomp_proto => (
            Endpoint::Stomp { addr },
            Endpoint::Stomp { addr },
            same("/topic/bench/latency"),
            "/topic/bench/latency".to_string(),
        ),
        Scenario::Latency => {
            let topic = args.topic.as_deref().unwrap_or("bench/latency");
            (mqtt(0), mqtt_sub(0), same(topic), topic.to_string())
        }
        Scenario::StompFanIn => (
            Endpoint::Stomp { addr },
            Endpoint::Stomp { addr },
            same("/topic/bench/stomp"),
            "/topic/bench/stomp".to_string(),
        ),
        Scenario::StompFanOut => (
            Endpoint::Stomp { addr },
            Endpoint::Stomp { addr },
            same("/topic/bench/fanout"),
            "/topic/bench/fanout".to_string(),
        ),
        Scenario::Cross => {
            let Some(stomp_port) = args.stomp_port else {
                bail!("the cross scenario needs --stomp-port");
            };
            let stomp_addr = SocketAddr::new(addr.ip(), stomp_port);
            (
                mqtt(0),
                Endpoint::Stomp { addr: stomp_addr },
                per_pub("bench/"),
                "/topic/bench/#".to_string(),
            )
        }
        Scenario::Idle
        | Scenario::StreamReplay
        | Scenario::StompStreamAppend
        | Scenario::StompStreamReplay
        | Scenario::Sse => unreachable!("no publish/subscribe plan"),
    };
    let sub_topic = match (&subscribe, &args.stomp_destination, &args.filter) {
        (Endpoint::Stomp { .. }, Some(d), _) => d.clone(),
        (Endpoint::Mqtt { .. }, _, Some(filter)) => filter.clone(),
        _ => sub_topic,
    };
    Ok(Plan {
        publishers,
        subscribers,
        publish,
        subscribe,
        pub_topics,
        sub_topic,
        rate: (scenario == Scenario::Latency).then_some(args.rate),
        payload: args.payload.max(client::STAMP_LEN),
        window: args.window.max(1),
        inflight: args.inflight.clamp(1, 65_000),
        batch: args.batch.max(1),
        username: args.username.clone(),
        password: args.password.clone(),
        host: args.host.clone(),
        client_prefix: client_prefix(args),
        persistent: args.persistent,
        topic_alias_maximum: args.topic_alias_maximum,
        settle: Duration::from_millis(args.settle_ms.unwrap_or(
            if args.sub_port.is_some() || args.sub_host.is_some() {
                500
            } else {
                0
            },
        )),
        selector: args.selector.clone(),
        buckets: args.selector_buckets,
    })
}

/// Progress bar over the measured duration; hidden for --json, non-TTY or short runs.
pub fn progress(args: &Args) -> ProgressBar {
    let ms = (args.duration * 1000.0) as u64;
    let bar = ProgressBar::with_draw_target(Some(ms.max(1)), ProgressDrawTarget::stderr());
    if args.json || !std::io::stderr().is_terminal() || args.duration <= 3.0 {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    let template = format!(
        "{{spinner}} [{{bar:40}}] {{elapsed}} of {:.0}s {{msg}}",
        args.duration
    );
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tern-bench: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> anyhow::Result<std::process::ExitCode> {
    if !args.duration.is_finite() || args.duration <= 0.0 {
        bail!("--duration must be positive");
    }
    let sockets = if effective_scenario(&args)? == Scenario::Idle {
        args.connections
    } else {
        args.publishers.unwrap_or(8) + args.subscribers.unwrap_or(100)
    };
    sys::raise_nofile_limit(sockets as u64 + 1024);
    let threads = args
        .threads
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
        .max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let scenario = effective_scenario(&args)?;
    let mut report = if scenario == Scenario::Idle {
        let addr = resolve(&args)?;
        runtime.block_on(idle::run(&args, addr))?
    } else if scenario == Scenario::StreamReplay {
        let addr = resolve(&args)?;
        runtime.block_on(replay::run(&args, addr))?
    } else if scenario == Scenario::StompStreamAppend {
        let addr = resolve(&args)?;
        runtime.block_on(stomp_stream::append(&args, addr))?
    } else if scenario == Scenario::StompStreamReplay {
        let addr = resolve(&args)?;
        runtime.block_on(stomp_stream::replay(&args, addr))?
    } else if scenario == Scenario::Sse {
        let addr = resolve(&args)?;
        runtime.block_on(sse::run(&args, addr))?
    } else {
        let plan = plan(&args, scenario)?;
        runtime.block_on(flow::run(&args, &plan))?
    };
    report.scenario = scenario.name().to_string();
    report.protocol = match scenario {
        Scenario::StompFanIn
        | Scenario::StompFanOut
        | Scenario::StompStreamAppend
        | Scenario::StompStreamReplay => "stomp",
        Scenario::Cross => "mqtt->stomp",
        Scenario::Sse => "mqtt->http",
        _ => match args.protocol {
            Protocol::Mqtt => "mqtt",
            Protocol::Stomp => "stomp",
        },
    }
    .to_string();
    report.host = args.host.clone();
    report.port = args.port;
    report.threads = threads;
    report.label = args.label.clone();
    // Let connection tasks wind down without waiting for them.
    runtime.shutdown_timeout(Duration::from_millis(200));
    let summary = report.summary();
    if args.json {
        eprintln!("{summary}");
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{summary}");
    }
    Ok(if report.errors.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    })
}
