//! The clients and the bookkeeping of the crash tests (`durability_crash.rs`
//! on one node, `durability_cluster_crash.rs` on three): numbered QoS 1 / 2
//! publishers that record what the broker acknowledged, persistent
//! subscribers that record what they received, and the tally of the two.
//!
//! The clients are a deliberately small MQTT 3.1.1 client on the project's
//! codec (`process::Conn`): the tests need to see exactly which packet was
//! acknowledged when. Interoperability is proven elsewhere.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tern_mqtt::{Ack, Packet, Properties, Publish, QoS};

use super::process::{subscribe_packet, Conn};

/// Topic prefix of every message the crash tests publish (`crash/<publisher>`).
pub const FILTER: &str = "crash/#";

pub fn ack(packet_id: u16) -> Ack {
    Ack {
        packet_id,
        reason: 0,
        properties: Properties::default(),
    }
}

/// Sequence numbers the broker acknowledged, per publisher.
pub type Acked = Arc<Mutex<HashMap<String, Vec<u64>>>>;

/// Publishes numbered messages on `crash/<name>` until `stop`; a message
/// counts as acknowledged on PUBACK (QoS 1) or PUBREC (QoS 2). After a lost
/// connection it connects again, to the next address of `addrs` that answers
/// (one address: the same broker after its restart).
pub async fn publisher(
    addrs: Vec<SocketAddr>,
    name: String,
    qos: QoS,
    acked: Acked,
    stop: Arc<AtomicBool>,
) {
    let mut seq: u64 = 0;
    let topic = format!("crash/{name}");
    let mut at = 0;
    while !stop.load(Ordering::Relaxed) {
        let addr = addrs[at % addrs.len()];
        let Some((mut conn, _)) = Conn::open(addr, &name, true).await else {
            at += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let mut packet_id: u16 = 0;
        while !stop.load(Ordering::Relaxed) {
            seq += 1;
            packet_id = packet_id % 60000 + 1;
            let publish = Packet::Publish(Publish {
                dup: false,
                qos,
                retain: false,
                topic: topic.clone(),
                packet_id: Some(packet_id),
                properties: Properties::default(),
                payload: Bytes::from(format!("{name}:{seq}")),
            });
            if conn.send(&publish).await.is_none() {
                break;
            }
            let acknowledged = match conn.recv(Duration::from_secs(5)).await {
                Some(Packet::PubAck(a)) if qos == QoS::AtLeastOnce && a.packet_id == packet_id => {
                    true
                }
                Some(Packet::PubRec(a)) if qos == QoS::ExactlyOnce && a.packet_id == packet_id => {
                    // The broker owns the message from PUBREC on.
                    record(&acked, &name, seq, addr.port());
                    if conn.send(&Packet::PubRel(ack(packet_id))).await.is_none() {
                        break;
                    }
                    if !matches!(
                        conn.recv(Duration::from_secs(5)).await,
                        Some(Packet::PubComp(_))
                    ) {
                        break;
                    }
                    continue;
                }
                _ => false,
            };
            if !acknowledged {
                break;
            }
            record(&acked, &name, seq, addr.port());
        }
        // Lost the connection: the next connection goes to the next address.
        at += 1;
    }
}

/// (publisher, seq) → ([`now_ms`] when acknowledged, the port of the node that did).
type AckTimes = Mutex<HashMap<(String, u64), (u64, u16)>>;

/// When, and by which node (port), each acknowledged message was acknowledged.
fn ack_times() -> &'static AckTimes {
    static TIMES: std::sync::OnceLock<AckTimes> = std::sync::OnceLock::new();
    TIMES.get_or_init(Mutex::default)
}

/// Up to `max` runs of acknowledged messages `received` lacks, one line each:
/// publisher, first and last seq, when and where the first was acknowledged.
pub fn missing_examples(
    received: &Received,
    acked: &HashMap<String, Vec<u64>>,
    max: usize,
) -> Vec<String> {
    let got: HashSet<(&str, u64)> = received
        .messages
        .iter()
        .map(|(p, s)| (p.as_str(), *s))
        .collect();
    let times = ack_times().lock().unwrap();
    let mut runs: Vec<(u64, String)> = Vec::new();
    for (publisher, seqs) in acked {
        let mut run: Option<(u64, u64, usize)> = None;
        for seq in seqs.iter().chain([&u64::MAX]) {
            let missing = *seq != u64::MAX && !got.contains(&(publisher.as_str(), *seq));
            match (&mut run, missing) {
                (Some((_, last, n)), true) => {
                    *last = *seq;
                    *n += 1;
                }
                (None, true) => run = Some((*seq, *seq, 1)),
                (Some((from, to, n)), false) => {
                    let (at, port) = times
                        .get(&(publisher.clone(), *from))
                        .copied()
                        .unwrap_or_default();
                    let (last_at, last_port) = times
                        .get(&(publisher.clone(), *to))
                        .copied()
                        .unwrap_or_default();
                    let near = |seq: u64| {
                        let i = received
                            .messages
                            .iter()
                            .position(|(p, s)| p == publisher && *s == seq)?;
                        Some(received.arrivals[i])
                    };
                    let held: Vec<String> = received
                        .held_ids
                        .iter()
                        .filter(|((p, s), _)| p == publisher && (*from..=*to).contains(s))
                        .map(|((_, s), a)| format!("{s} {a:?}"))
                        .collect();
                    runs.push((
                        at,
                        format!(
                            "missing {publisher}:{from}..={to} ({n}), acked at {at} ms by :{port} .. {last_at} ms by :{last_port}; \
                             before it {:?}, after it {:?}; came under an id awaiting PUBREL: {held:?}",
                            near(from.saturating_sub(1)),
                            near(*to + 1)
                        ),
                    ));
                    run = None;
                }
                (None, false) => {}
            }
        }
    }
    runs.sort();
    runs.into_iter().take(max).map(|(_, line)| line).collect()
}

fn record(acked: &Acked, name: &str, seq: u64, port: u16) {
    ack_times()
        .lock()
        .unwrap()
        .insert((name.to_string(), seq), (now_ms(), port));
    acked
        .lock()
        .unwrap()
        .entry(name.to_string())
        .or_default()
        .push(seq);
}

/// Milliseconds since the first call (the crash tests' clock for their diagnostics).
pub fn now_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis() as u64
}

/// Where and when one message was received (diagnostics of the tally).
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    /// The subscriber's connection it came on (1, 2, …).
    pub connection: u32,
    /// The port of the node it came from.
    pub port: u16,
    /// Sent with DUP (a redelivery).
    pub dup: bool,
    /// [`now_ms`] when it came.
    pub at_ms: u64,
}

/// What one persistent subscriber received: (publisher, seq) in arrival order.
#[derive(Default)]
pub struct Received {
    pub messages: Vec<(String, u64)>,
    /// One per entry of `messages`.
    pub arrivals: Vec<Arrival>,
    /// Connections made so far.
    connections: u32,
    /// Each connection: the node's port, [`now_ms`] when connected and when it ended.
    pub timeline: Vec<(u16, u64, u64)>,
    /// QoS 2 ids received and not yet released: a resend with one of these is a duplicate.
    awaiting_pubrel: HashSet<u16>,
    /// Messages that came under a QoS 2 id still awaiting its PUBREL, so
    /// were taken for a resend and not counted: (publisher, seq) and when.
    pub held_ids: Vec<((String, u64), Arrival)>,
}

impl Received {
    fn push(&mut self, message: Option<(String, u64)>, arrival: Arrival) {
        if let Some(message) = message {
            self.messages.push(message);
            self.arrivals.push(arrival);
        }
    }

    /// Up to `max` examples of each kind of fault, one line each: order
    /// violations (with the later message received before) and repeats of
    /// QoS 2 messages, where and when each came.
    pub fn examples(&self, max: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut first: HashMap<(&str, u64), usize> = HashMap::new();
        let mut last: HashMap<&str, usize> = HashMap::new();
        let (mut order, mut repeats) = (0, 0);
        for (i, (publisher, seq)) in self.messages.iter().enumerate() {
            let arrival = self.arrivals[i];
            if let Some(earlier) = first.get(&(publisher.as_str(), *seq)) {
                if publisher.starts_with("q2") && repeats < max {
                    repeats += 1;
                    let e = self.arrivals[*earlier];
                    out.push(format!(
                        "QoS 2 repeat {publisher}:{seq}: {arrival:?}, first {e:?}"
                    ));
                }
                continue;
            }
            first.insert((publisher.as_str(), *seq), i);
            match last.get(publisher.as_str()) {
                Some(&l) if self.messages[l].1 > *seq => {
                    if order < max {
                        order += 1;
                        let e = self.arrivals[l];
                        out.push(format!(
                            "order {publisher}:{seq} after {}: {arrival:?}, that one {e:?}",
                            self.messages[l].1
                        ));
                    }
                }
                _ => {
                    last.insert(publisher.as_str(), i);
                }
            }
        }
        out
    }
}

fn parse_payload(payload: &[u8]) -> Option<(String, u64)> {
    let text = std::str::from_utf8(payload).ok()?;
    let (name, seq) = text.split_once(':')?;
    Some((name.to_string(), seq.parse().ok()?))
}

/// Connects `client_id` (persistent session) to `addr`, subscribes to
/// [`FILTER`] at `qos` when `first`, and consumes until the connection drops
/// or nothing came for `idle_exit`. Returns false if it could not connect.
pub async fn consume(
    addr: SocketAddr,
    client_id: &str,
    qos: QoS,
    received: &Mutex<Received>,
    first: bool,
    idle_exit: Option<Duration>,
) -> bool {
    let Some((mut conn, _present)) = Conn::open(addr, client_id, false).await else {
        return false;
    };
    let connection = {
        let mut r = received.lock().unwrap();
        r.connections += 1;
        r.timeline.push((addr.port(), now_ms(), 0));
        r.connections
    };
    // Notes when this connection ended, however it ends.
    struct Ended<'a>(&'a Mutex<Received>, usize);
    impl Drop for Ended<'_> {
        fn drop(&mut self) {
            if let Ok(mut r) = self.0.lock() {
                if let Some(entry) = r.timeline.get_mut(self.1) {
                    entry.2 = now_ms();
                }
            }
        }
    }
    let _ended = Ended(received, connection as usize - 1);
    if first {
        let sub = subscribe_packet(FILTER, qos);
        if conn.send(&sub).await.is_none() {
            return false;
        }
    }
    let wait = idle_exit.unwrap_or(Duration::from_secs(3600));
    while let Some(packet) = conn.recv(wait).await {
        let answer = match packet {
            Packet::Publish(p) => {
                let id = p.packet_id.unwrap_or(0);
                let mut r = received.lock().unwrap();
                let arrival = Arrival {
                    connection,
                    port: addr.port(),
                    dup: p.dup,
                    at_ms: now_ms(),
                };
                match p.qos {
                    QoS::AtMostOnce => None,
                    QoS::AtLeastOnce => {
                        r.push(parse_payload(&p.payload), arrival);
                        Some(Packet::PubAck(ack(id)))
                    }
                    QoS::ExactlyOnce => {
                        if r.awaiting_pubrel.insert(id) {
                            r.push(parse_payload(&p.payload), arrival);
                        } else if let Some(message) = parse_payload(&p.payload) {
                            r.held_ids.push((message, arrival));
                        }
                        Some(Packet::PubRec(ack(id)))
                    }
                }
            }
            Packet::PubRel(a) => {
                received
                    .lock()
                    .unwrap()
                    .awaiting_pubrel
                    .remove(&a.packet_id);
                Some(Packet::PubComp(ack(a.packet_id)))
            }
            _ => None,
        };
        if let Some(answer) = answer {
            if conn.send(&answer).await.is_none() {
                return true;
            }
        }
    }
    true
}

/// One subscriber's received messages held against what was acknowledged.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Messages the broker acknowledged (all publishers).
    pub acknowledged: usize,
    /// Messages received (repeats included).
    pub received: usize,
    /// Acknowledged and never received.
    pub missing: usize,
    /// Messages of a QoS 2 publisher (`q2…`) received more than once.
    pub qos2_duplicates: usize,
    /// Acknowledged messages received for the first time after a later one
    /// of their publisher.
    pub order_violations: usize,
}

impl Tally {
    pub fn of(received: &Received, acked: &HashMap<String, Vec<u64>>) -> Tally {
        let mut tally = Tally {
            received: received.messages.len(),
            ..Tally::default()
        };
        let mut counts: HashMap<(&str, u64), usize> = HashMap::new();
        let mut last_first_seen: HashMap<&str, u64> = HashMap::new();
        // A message its publisher saw no ack for is no reorder when it comes
        // late (the publisher went on with the next number on a new clean
        // connection: another session, whose messages MQTT does not order
        // against the old one's).
        let acknowledged: HashSet<(&str, u64)> = acked
            .iter()
            .flat_map(|(p, seqs)| seqs.iter().map(move |s| (p.as_str(), *s)))
            .collect();
        for (publisher, seq) in &received.messages {
            let n = counts.entry((publisher.as_str(), *seq)).or_default();
            *n += 1;
            if *n == 1 {
                let last = last_first_seen.entry(publisher.as_str()).or_default();
                if *seq >= *last {
                    *last = *seq;
                } else if acknowledged.contains(&(publisher.as_str(), *seq)) {
                    tally.order_violations += 1;
                }
            }
        }
        for (publisher, seqs) in acked {
            for seq in seqs {
                tally.acknowledged += 1;
                match counts
                    .get(&(publisher.as_str(), *seq))
                    .copied()
                    .unwrap_or(0)
                {
                    0 => tally.missing += 1,
                    1 => {}
                    _ if publisher.starts_with("q2") => tally.qos2_duplicates += 1,
                    _ => {}
                }
            }
        }
        tally
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} acknowledged, {} received, {} missing, {} QoS 2 duplicates, {} order violations",
            self.acknowledged,
            self.received,
            self.missing,
            self.qos2_duplicates,
            self.order_violations
        )
    }
}

/// A random number (std's per-process hash keys), for kill timings.
pub fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    h.finish()
}
