//! Publish/subscribe scenarios: publishers and subscribers on raw TCP streams, with
//! end-to-end flow control so the broker is never asked to queue without bound.
//!
//! Flow control: subscriber `s` publishes, per publisher `p`, how far it has got in
//! `p`'s sequence (`progress[s][p]`). Publisher `p` keeps `sent[p] - min_s progress[s][p]`
//! at most `window`; QoS 1/2 publishers also keep at most `inflight` unacknowledged
//! (a semaphore released by PUBACK / PUBCOMP). Subscribers wake waiting publishers
//! after every read. A window that stays full for [`STALL`] with no delivery at all is
//! reported as a stall and then forgiven (counted as lost), so a run always ends.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use tern_mqtt::{Packet, ProtocolVersion};
use tern_stomp::{Command, Decoder, Frame, Item};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::client::{self, Login, Ready, READ_CHUNK};
use crate::report::{Errors, Latency, Report};
use crate::sys::CpuMark;
use crate::track::SeqTracker;
use crate::{Args, Endpoint, Plan};

/// A full window with no delivery for this long is a stall.
const STALL: Duration = Duration::from_secs(2);
/// After the measured period, wait at most this long plus the duration for the
/// messages still queued...
const DRAIN_MAX: Duration = Duration::from_secs(10);
/// ...and give up earlier when nothing arrives for this long.
const DRAIN_IDLE: Duration = Duration::from_secs(1);

/// State shared by every task of a run.
struct Shared {
    /// Time origin of the send stamps.
    epoch: Instant,
    publishers: usize,
    subscribers: usize,
    /// Publishers stop sending.
    stop: AtomicBool,
    /// Subscribers (and publisher readers) exit.
    done: CancellationToken,
    /// Woken by subscribers after every read.
    wake: Notify,
    sent: Vec<AtomicU64>,
    /// `[s * publishers + p]`: next sequence number subscriber `s` expects from `p`.
    progress: Vec<AtomicU64>,
    /// A subscriber gets one message in `stride` (a selector matching one of
    /// `--selector-buckets`); its tracker follows `seq / stride`.
    stride: u64,
    delivered: AtomicU64,
    /// Bytes of the packets/frames the subscribers decoded after subscribing (the
    /// deliveries' wire size, plus any QoS 1/2 PUBRELs).
    sub_wire_bytes: AtomicU64,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn min_progress(&self, p: usize) -> u64 {
        (0..self.subscribers)
            .filter_map(|s| self.progress.get(s * self.publishers + p))
            .map(|a| a.load(Ordering::Acquire))
            .min()
            .unwrap_or(0)
    }

    fn all_received(&self) -> bool {
        (0..self.publishers).all(|p| {
            let sent = self.sent.get(p).map_or(0, |a| a.load(Ordering::Acquire));
            self.min_progress(p) >= sent
        })
    }
}

struct SubResult {
    trackers: Vec<SeqTracker>,
    histogram: Histogram<u64>,
    foreign: u64,
    error: Option<String>,
}

struct PubResult {
    sent: u64,
    stalls: u64,
    errors: Vec<String>,
}

fn histogram() -> Histogram<u64> {
    // 1 ns .. 100 s, 3 significant digits; the bounds are valid so this cannot fail.
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

fn login(plan: &Plan, role: &str, i: usize) -> Login {
    Login {
        client_id: format!("{}-{role}{i}", plan.client_prefix),
        username: plan.username.clone(),
        password: plan.password.clone(),
        host: plan.host.clone(),
        persistent: plan.persistent && role == "sub",
        topic_alias_maximum: if role == "sub" {
            plan.topic_alias_maximum
        } else {
            0
        },
    }
}

/// Opens `count` clients concurrently (at most 64 handshakes at once).
async fn open_all(
    plan: &Plan,
    endpoint: &Endpoint,
    role: &'static str,
    count: usize,
    subscribe: Option<&str>,
) -> anyhow::Result<Vec<Ready>> {
    let limit = Arc::new(Semaphore::new(64));
    let mut set = JoinSet::new();
    for i in 0..count {
        let endpoint = endpoint.clone();
        let login = login(plan, role, i);
        let subscribe = subscribe.map(str::to_string);
        // Only subscribers carry the selector; `{sub}` in it is the
        // subscriber's index modulo --selector-buckets (distinct selectors).
        let selector = subscribe.as_ref().and(plan.selector.as_ref()).map(|text| {
            let bucket = i as u64 % plan.buckets.max(1);
            text.replace("{sub}", &bucket.to_string())
        });
        let limit = Arc::clone(&limit);
        set.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let r = client::open(
                &endpoint,
                &login,
                None,
                subscribe.as_deref(),
                selector.as_deref(),
            )
            .await;
            (i, r)
        });
    }
    let mut out: Vec<Option<Ready>> = (0..count).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        let (i, r) = joined.context("connection task failed")?;
        let ready = r.with_context(|| format!("{role} {i}"))?;
        if let Some(slot) = out.get_mut(i) {
            *slot = Some(ready);
        }
    }
    Ok(out.into_iter().flatten().collect())
}

pub async fn run(args: &Args, plan: &Plan) -> anyhow::Result<Report> {
    let publishers = plan.publishers;
    let subscribers = plan.subscribers;
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        publishers,
        subscribers,
        stop: AtomicBool::new(false),
        done: CancellationToken::new(),
        wake: Notify::new(),
        sent: (0..publishers).map(|_| AtomicU64::new(0)).collect(),
        progress: (0..publishers * subscribers)
            .map(|_| AtomicU64::new(0))
            .collect(),
        delivered: AtomicU64::new(0),
        sub_wire_bytes: AtomicU64::new(0),
        stride: match (&plan.selector, plan.buckets) {
            (Some(_), buckets) if buckets > 0 => buckets,
            _ => 1,
        },
    });

    let subs = open_all(
        plan,
        &plan.subscribe,
        "sub",
        subscribers,
        Some(&plan.sub_topic),
    )
    .await?;
    let pubs = open_all(plan, &plan.publish, "pub", publishers, None).await?;
    // A cluster: the subscriptions reach the publishers' node a moment later.
    if !plan.settle.is_zero() {
        tokio::time::sleep(plan.settle).await;
    }

    let bar = crate::progress(args);
    let duration = Duration::from_secs_f64(args.duration);
    let cpu0 = CpuMark::now(&args.broker_pid);
    let go = Instant::now();

    let mut sub_tasks = Vec::new();
    for (s, ready) in subs.into_iter().enumerate() {
        let shared = Arc::clone(&shared);
        let endpoint = plan.subscribe.clone();
        sub_tasks.push(tokio::spawn(subscriber(shared, s, ready, endpoint)));
    }
    let mut pub_tasks = Vec::new();
    for (p, ready) in pubs.into_iter().enumerate() {
        let shared = Arc::clone(&shared);
        let plan = plan.clone();
        pub_tasks.push(tokio::spawn(publisher(shared, p, ready, plan, go)));
    }

    // The measured period.
    let mut last = (Instant::now(), 0u64);
    loop {
        let elapsed = go.elapsed();
        if elapsed >= duration {
            break;
        }
        tokio::time::sleep((duration - elapsed).min(Duration::from_millis(200))).await;
        let now = Instant::now();
        let delivered = shared.delivered.load(Ordering::Relaxed);
        let dt = now.duration_since(last.0).as_secs_f64();
        if dt > 0.0 {
            let rate = (delivered - last.1) as f64 / dt;
            bar.set_message(format!("{rate:.0} deliveries/s"));
        }
        last = (now, delivered);
        bar.set_position(go.elapsed().as_millis() as u64);
    }
    let delivered_in_period = shared.delivered.load(Ordering::Acquire);
    let cpu1 = CpuMark::now(&args.broker_pid);
    let measured = go.elapsed().as_secs_f64();
    bar.finish_and_clear();

    // Stop publishing, then drain.
    shared.stop.store(true, Ordering::Release);
    shared.wake.notify_waiters();
    let mut errors = Errors::default();
    let mut sent = vec![0u64; publishers];
    let mut stalls = 0;
    for (p, task) in pub_tasks.into_iter().enumerate() {
        match task.await {
            Ok(r) => {
                if let Some(slot) = sent.get_mut(p) {
                    *slot = r.sent;
                }
                stalls += r.stalls;
                for e in r.errors {
                    errors.add(e);
                }
            }
            Err(e) => errors.add(format!("publisher {p} task: {e}")),
        }
    }
    let drain_start = Instant::now();
    let mut last_change = (Instant::now(), shared.delivered.load(Ordering::Acquire));
    let drain_max = DRAIN_MAX + duration;
    while !shared.all_received() && drain_start.elapsed() < drain_max {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let d = shared.delivered.load(Ordering::Acquire);
        if d != last_change.1 {
            last_change = (Instant::now(), d);
        } else if last_change.0.elapsed() >= DRAIN_IDLE {
            break;
        }
    }
    shared.done.cancel();

    let mut histogram = histogram();
    let (mut lost, mut unreceived, mut duplicates, mut reordered, mut foreign) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    for (s, task) in sub_tasks.into_iter().enumerate() {
        match task.await {
            Ok(r) => {
                for (p, t) in r.trackers.iter().enumerate() {
                    lost += t.lost();
                    let sent = sent.get(p).copied().unwrap_or(0);
                    unreceived += t.unreceived(sent / shared.stride);
                    duplicates += t.duplicates;
                    reordered += t.reordered;
                }
                foreign += r.foreign;
                let _ = histogram.add(&r.histogram);
                if let Some(e) = r.error {
                    errors.add(format!("subscriber {s}: {e}"));
                }
            }
            Err(e) => errors.add(format!("subscriber {s} task: {e}")),
        }
    }
    if foreign > 0 {
        errors.add(format!(
            "{foreign} messages without a valid stamp from this run (another client publishing on the bench topics?)"
        ));
    }

    let (gen_cpu, broker_cpu) = cpu0.until(&cpu1);
    let qos = match plan.publish {
        Endpoint::Mqtt { qos, .. } => qos,
        Endpoint::Stomp { .. } => 0,
    };
    let deliveries_per_s = delivered_in_period as f64 / measured;
    let received = shared.delivered.load(Ordering::Acquire);
    let sub_wire_bytes = shared.sub_wire_bytes.load(Ordering::Acquire);
    let mut report = Report {
        duration_s: measured,
        payload: Some(plan.payload),
        qos: Some(qos),
        publishers: Some(publishers),
        subscribers: Some(subscribers),
        target_rate: plan.rate,
        sent: Some(sent.iter().sum()),
        received: Some(received),
        sub_wire_bytes: Some(sub_wire_bytes),
        wire_bytes_per_delivery: (received > 0).then(|| sub_wire_bytes as f64 / received as f64),
        // Messages published through the broker: with a selector each
        // subscriber gets one in `stride`.
        msgs_per_s: Some(deliveries_per_s * shared.stride as f64 / subscribers as f64),
        deliveries_per_s: Some(deliveries_per_s),
        lost: Some(lost),
        unreceived: Some(unreceived),
        drain_s: Some(drain_start.elapsed().as_secs_f64()),
        duplicates: Some(duplicates),
        reordered: Some(reordered),
        stalls: Some(stalls),
        latency: (!histogram.is_empty()).then(|| Latency::from_histogram(&histogram)),
        gen_cpu_s: gen_cpu,
        broker_pid: args.broker_pid.clone(),
        broker_cpu_s: broker_cpu,
        errors: errors.into_vec(),
        ..Report::default()
    };
    report.derive();
    Ok(report)
}

/// Reads deliveries until the run is done; acknowledges QoS 1/2 as they come.
async fn subscriber(shared: Arc<Shared>, s: usize, ready: Ready, endpoint: Endpoint) -> SubResult {
    let mut result = SubResult {
        trackers: vec![SeqTracker::default(); shared.publishers],
        histogram: histogram(),
        foreign: 0,
        error: None,
    };
    let Ready {
        stream,
        mut buf,
        decoder,
    } = ready;
    let (mut rd, mut wr) = stream.into_split();
    let mut proto = match (&endpoint, decoder) {
        (Endpoint::Stomp { .. }, Some(d)) => SubProto::Stomp(Box::new(d)),
        (Endpoint::Mqtt { v5, .. }, _) => SubProto::Mqtt(client::mqtt_version(*v5)),
        (Endpoint::Stomp { .. }, None) => SubProto::Stomp(Box::new(client::stomp_decoder())),
    };
    let mut acks = BytesMut::new();
    let base = s * shared.publishers;
    loop {
        let now = shared.now_ns();
        let mut count = 0u64;
        let before = buf.len();
        let outcome = proto.decode_all(&mut buf, &mut acks, |body| {
            count += 1;
            match client::unstamp(body) {
                Some((p, seq, sent_ns)) if (p as usize) < shared.publishers => {
                    if let Some(t) = result.trackers.get_mut(p as usize) {
                        t.record(seq / shared.stride);
                    }
                    result
                        .histogram
                        .saturating_record(now.saturating_sub(sent_ns).max(1));
                }
                _ => result.foreign += 1,
            }
        });
        let decoded = before - buf.len();
        if decoded > 0 {
            shared
                .sub_wire_bytes
                .fetch_add(decoded as u64, Ordering::Relaxed);
        }
        if count > 0 {
            for (p, t) in result.trackers.iter().enumerate() {
                if let Some(a) = shared.progress.get(base + p) {
                    a.store(t.expected * shared.stride, Ordering::Release);
                }
            }
            shared.delivered.fetch_add(count, Ordering::AcqRel);
            shared.wake.notify_waiters();
        }
        if let Err(e) = outcome {
            result.error = Some(e);
            break;
        }
        if !acks.is_empty() {
            if let Err(e) = wr.write_all(&acks).await {
                result.error = Some(format!("write: {e}"));
                break;
            }
            acks.clear();
        }
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        tokio::select! {
            biased;
            _ = shared.done.cancelled() => break,
            read = rd.read_buf(&mut buf) => match read {
                Ok(0) => {
                    if !shared.done.is_cancelled() {
                        result.error = Some("connection closed by the broker".into());
                    }
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    result.error = Some(format!("read: {e}"));
                    break;
                }
            }
        }
    }
    proto.goodbye(&mut wr).await;
    result
}

enum SubProto {
    Mqtt(ProtocolVersion),
    Stomp(Box<Decoder>),
}

impl SubProto {
    /// Decodes every complete packet/frame in `buf`, calling `on_message` with each
    /// payload and appending the acknowledgements to send to `acks`.
    fn decode_all(
        &mut self,
        buf: &mut BytesMut,
        acks: &mut BytesMut,
        mut on_message: impl FnMut(&[u8]),
    ) -> Result<(), String> {
        match self {
            SubProto::Mqtt(version) => loop {
                let packet = tern_mqtt::decode(buf, *version, client::MAX_PACKET)
                    .map_err(|e| format!("bad packet from broker: {e}"))?;
                match packet {
                    None => return Ok(()),
                    Some(Packet::Publish(p)) => {
                        on_message(&p.payload);
                        match (p.qos as u8, p.packet_id) {
                            (1, Some(id)) => client::encode_ack(acks, *version, 4, id),
                            (2, Some(id)) => client::encode_ack(acks, *version, 5, id),
                            _ => {}
                        }
                    }
                    Some(Packet::PubRel(a)) => client::encode_ack(acks, *version, 7, a.packet_id),
                    Some(Packet::Disconnect(d)) => {
                        return Err(format!("broker sent DISCONNECT {:#04x}", d.reason))
                    }
                    Some(_) => {}
                }
            },
            SubProto::Stomp(decoder) => loop {
                let item = decoder
                    .decode(buf)
                    .map_err(|e| format!("bad frame from broker: {e}"))?;
                match item {
                    None => return Ok(()),
                    Some(Item::Frame(f)) if f.command == Command::Message => on_message(&f.body),
                    Some(Item::Frame(f)) if f.command == Command::Error => {
                        return Err(format!(
                            "broker sent ERROR: {}",
                            f.header("message").unwrap_or("")
                        ))
                    }
                    Some(_) => {}
                }
            },
        }
    }

    async fn goodbye(&self, wr: &mut OwnedWriteHalf) {
        let mut out = BytesMut::new();
        match self {
            SubProto::Mqtt(version) => {
                let d = Packet::Disconnect(tern_mqtt::Disconnect {
                    reason: 0,
                    properties: tern_mqtt::Properties::default(),
                });
                let _ = tern_mqtt::encode(&d, *version, &mut out);
            }
            SubProto::Stomp(_) => {
                tern_stomp::encode(
                    &Frame::new(Command::Disconnect),
                    tern_stomp::Version::V1_2,
                    &mut out,
                );
            }
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), wr.write_all(&out)).await;
    }
}

/// What a publisher's reader learned.
struct AckState {
    /// Free QoS 1/2 slots (released by PUBACK / PUBCOMP).
    permits: Semaphore,
    /// PUBREC ids awaiting our PUBREL.
    pubrec: IdQueue,
    acked: AtomicU64,
    woken: Notify,
    closed: AtomicBool,
    error: std::sync::Mutex<Option<String>>,
}

/// PUBREC ids handed from a publisher's reader to its writer.
#[derive(Default)]
struct IdQueue(std::sync::Mutex<Vec<u16>>);

impl IdQueue {
    fn push(&self, id: u16) {
        if let Ok(mut q) = self.0.lock() {
            q.push(id);
        }
    }

    fn take(&self, out: &mut Vec<u16>) {
        if let Ok(mut q) = self.0.lock() {
            out.append(&mut q);
        }
    }
}

/// Reads what the broker sends a publisher: QoS acks, errors, the close.
async fn publisher_reader(
    shared: Arc<Shared>,
    state: Arc<AckState>,
    mut rd: OwnedReadHalf,
    mut buf: BytesMut,
    endpoint: Endpoint,
    mut decoder: Option<Decoder>,
) {
    let version = match &endpoint {
        Endpoint::Mqtt { v5, .. } => client::mqtt_version(*v5),
        Endpoint::Stomp { .. } => ProtocolVersion::V311,
    };
    let fail = |msg: String| {
        if let Ok(mut e) = state.error.lock() {
            e.get_or_insert(msg);
        }
    };
    loop {
        let mut woke = false;
        match &mut decoder {
            None => loop {
                match tern_mqtt::decode(&mut buf, version, client::MAX_PACKET) {
                    Ok(None) => break,
                    Ok(Some(Packet::PubAck(_) | Packet::PubComp(_))) => {
                        state.permits.add_permits(1);
                        state.acked.fetch_add(1, Ordering::AcqRel);
                        woke = true;
                    }
                    Ok(Some(Packet::PubRec(a))) => {
                        state.pubrec.push(a.packet_id);
                        state.acked.fetch_add(1, Ordering::AcqRel);
                        woke = true;
                    }
                    Ok(Some(Packet::Disconnect(d))) => {
                        fail(format!("broker sent DISCONNECT {:#04x}", d.reason));
                    }
                    Ok(Some(_)) => {}
                    Err(e) => {
                        fail(format!("bad packet from broker: {e}"));
                        state.closed.store(true, Ordering::Release);
                        state.woken.notify_one();
                        return;
                    }
                }
            },
            Some(d) => loop {
                match d.decode(&mut buf) {
                    Ok(None) => break,
                    Ok(Some(Item::Frame(f))) if f.command == Command::Error => {
                        fail(format!(
                            "broker sent ERROR: {}",
                            f.header("message").unwrap_or("")
                        ));
                    }
                    Ok(Some(_)) => {}
                    Err(e) => {
                        fail(format!("bad frame from broker: {e}"));
                        state.closed.store(true, Ordering::Release);
                        state.woken.notify_one();
                        return;
                    }
                }
            },
        }
        if woke {
            state.woken.notify_one();
        }
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        tokio::select! {
            biased;
            _ = shared.done.cancelled() => return,
            read = rd.read_buf(&mut buf) => match read {
                Ok(0) => {
                    if !shared.stop.load(Ordering::Acquire) {
                        fail("connection closed by the broker".into());
                    }
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    if !shared.stop.load(Ordering::Acquire) {
                        fail(format!("read: {e}"));
                    }
                    break;
                }
            }
        }
    }
    state.closed.store(true, Ordering::Release);
    state.woken.notify_one();
}

/// Publishes as fast as the windows (or the pacing rate) allow until told to stop.
async fn publisher(
    shared: Arc<Shared>,
    p: usize,
    ready: Ready,
    plan: Plan,
    go: Instant,
) -> PubResult {
    let mut result = PubResult {
        sent: 0,
        stalls: 0,
        errors: Vec::new(),
    };
    let Ready {
        stream,
        buf,
        decoder,
    } = ready;
    let (rd, mut wr) = stream.into_split();
    let (qos, version) = match &plan.publish {
        Endpoint::Mqtt { qos, v5, .. } => (*qos, Some(client::mqtt_version(*v5))),
        Endpoint::Stomp { .. } => (0, None),
    };
    let state = Arc::new(AckState {
        permits: Semaphore::new(if qos > 0 { plan.inflight } else { 0 }),
        pubrec: Default::default(),
        acked: AtomicU64::new(0),
        woken: Notify::new(),
        closed: AtomicBool::new(false),
        error: std::sync::Mutex::new(None),
    });
    let reader = tokio::spawn(publisher_reader(
        Arc::clone(&shared),
        Arc::clone(&state),
        rd,
        buf,
        plan.publish.clone(),
        decoder,
    ));
    let topic = plan.pub_topics.get(p).cloned().unwrap_or_default();
    let payload = Bytes::from(vec![b'x'; plan.payload]);
    let rate = plan.rate.map(|r| r / plan.publishers as f64);
    let mut wbuf = BytesMut::with_capacity(plan.batch * (plan.payload + topic.len() + 64));
    let mut releases = Vec::new();
    let mut seq = 0u64;
    let buckets = plan.buckets;
    let bucket = |seq: u64| (buckets > 0).then(|| seq % buckets);
    let mut next_id: u16 = 0;
    // Messages before this are treated as received (set after a stall).
    let mut forgiven = 0u64;
    let mut last_progress = (Instant::now(), 0u64, 0u64);
    while !shared.stop.load(Ordering::Acquire) {
        let notified = shared.wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();

        if let Some(version) = version {
            state.pubrec.take(&mut releases);
            for id in releases.drain(..) {
                client::encode_ack(&mut wbuf, version, 6, id);
            }
        }
        let mut n = plan.batch as u64;
        let mut next_due = None;
        if let Some(rate) = rate {
            let due = (go.elapsed().as_secs_f64() * rate) as u64 + 1;
            n = n.min(due.saturating_sub(seq));
            if n == 0 {
                next_due = Some(go + Duration::from_secs_f64(seq as f64 / rate));
            }
        }
        let floor = shared.min_progress(p).max(forgiven);
        let room = plan.window.saturating_sub(seq.saturating_sub(floor));
        let window_bound = room < n;
        n = n.min(room);
        let acked = state.acked.load(Ordering::Acquire);
        let mut permit_bound = false;
        if qos > 0 {
            let avail = state.permits.available_permits() as u64;
            permit_bound = avail < n;
            n = n.min(avail);
            if n > 0 {
                match state.permits.try_acquire_many(n as u32) {
                    Ok(permit) => permit.forget(),
                    Err(_) => n = 0,
                }
            }
        }
        if floor != last_progress.1 || acked != last_progress.2 || n > 0 {
            last_progress = (Instant::now(), floor, acked);
        } else if (window_bound || permit_bound) && last_progress.0.elapsed() >= STALL {
            result.stalls += 1;
            let what = if window_bound {
                format!(
                    "{} messages unreceived by some subscriber",
                    seq.saturating_sub(floor)
                )
            } else {
                format!("{} QoS {qos} messages unacknowledged", plan.inflight)
            };
            result.errors.push(format!(
                "publisher {p}: stalled at t={:.1}s: {what}, nothing delivered or acknowledged for {}s",
                go.elapsed().as_secs_f64(),
                STALL.as_secs()
            ));
            if window_bound {
                forgiven = seq;
            }
            last_progress = (Instant::now(), floor, acked);
        }
        if n > 0 {
            let now = shared.now_ns();
            for _ in 0..n {
                let encoded = match version {
                    Some(version) => {
                        let id = if qos > 0 {
                            next_id = if next_id == u16::MAX { 1 } else { next_id + 1 };
                            Some(next_id)
                        } else {
                            None
                        };
                        client::encode_mqtt_publish(
                            &mut wbuf,
                            version,
                            &topic,
                            qos,
                            id,
                            &payload,
                            p as u32,
                            seq,
                            now,
                            bucket(seq),
                        )
                    }
                    None => {
                        client::encode_stomp_send(
                            &mut wbuf,
                            &topic,
                            &payload,
                            p as u32,
                            seq,
                            now,
                            bucket(seq),
                        );
                        Ok(())
                    }
                };
                if let Err(e) = encoded {
                    result.errors.push(format!("publisher {p}: encode: {e}"));
                    shared.stop.store(true, Ordering::Release);
                    break;
                }
                seq += 1;
            }
            if let Some(a) = shared.sent.get(p) {
                a.store(seq, Ordering::Release);
            }
        }
        if !wbuf.is_empty() {
            if let Err(e) = wr.write_all(&wbuf).await {
                result.errors.push(format!("publisher {p}: write: {e}"));
                break;
            }
            wbuf.clear();
        }
        if state.closed.load(Ordering::Acquire) {
            break;
        }
        if n == 0 {
            let sleep = match next_due {
                Some(t) => tokio::time::sleep_until(t.into()),
                None => tokio::time::sleep(Duration::from_millis(50)),
            };
            tokio::select! {
                _ = &mut notified => {}
                _ = state.woken.notified() => {}
                _ = sleep => {}
            }
        }
    }
    result.sent = seq;
    // Finish the QoS 1/2 flows in progress: a broker may hold a QoS 2 message until
    // our PUBREL, so leaving now would lose it.
    if let (Some(version), true) = (version, qos > 0) {
        let deadline = Instant::now() + DRAIN_MAX;
        while state.permits.available_permits() < plan.inflight
            && !state.closed.load(Ordering::Acquire)
            && Instant::now() < deadline
        {
            state.pubrec.take(&mut releases);
            for id in releases.drain(..) {
                client::encode_ack(&mut wbuf, version, 6, id);
            }
            if !wbuf.is_empty() {
                if wr.write_all(&wbuf).await.is_err() {
                    break;
                }
                wbuf.clear();
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), state.woken.notified()).await;
        }
        let unacked = plan.inflight - state.permits.available_permits().min(plan.inflight);
        if unacked > 0 {
            result.errors.push(format!(
                "publisher {p}: {unacked} QoS {qos} messages still unacknowledged at the end"
            ));
        }
    }
    if let Ok(mut e) = state.error.lock() {
        if let Some(e) = e.take() {
            result.errors.push(format!("publisher {p}: {e}"));
        }
    }
    // Say goodbye; the reader sees the close.
    let mut out = BytesMut::new();
    match version {
        Some(version) => {
            let d = Packet::Disconnect(tern_mqtt::Disconnect {
                reason: 0,
                properties: tern_mqtt::Properties::default(),
            });
            let _ = tern_mqtt::encode(&d, version, &mut out);
        }
        None => tern_stomp::encode(
            &Frame::new(Command::Disconnect),
            tern_stomp::Version::V1_2,
            &mut out,
        ),
    }
    let _ = tokio::time::timeout(Duration::from_millis(500), wr.write_all(&out)).await;
    drop(wr);
    let _ = tokio::time::timeout(Duration::from_millis(500), reader).await;
    result
}
