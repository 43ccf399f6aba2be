//! The result of one run: one JSON line, and a human summary.

use std::fmt::Write as _;

use serde::Serialize;

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub samples: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

impl Latency {
    pub fn from_histogram(h: &hdrhistogram::Histogram<u64>) -> Latency {
        let us = |ns: u64| ns as f64 / 1000.0;
        Latency {
            samples: h.len(),
            p50_us: us(h.value_at_quantile(0.50)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            mean_us: h.mean() / 1000.0,
        }
    }
}

/// Everything a run measured. Fields that do not apply are left out of the JSON.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub scenario: String,
    pub protocol: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub host: String,
    pub port: u16,
    pub threads: usize,
    /// Measured wall-clock seconds.
    pub duration_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qos: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publishers: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscribers: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_rate: Option<f64>,
    /// Messages published during the whole run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent: Option<u64>,
    /// Deliveries received during the whole run (after draining).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub received: Option<u64>,
    /// Bytes of the packets/frames the subscribers decoded after subscribing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_wire_bytes: Option<u64>,
    /// `sub_wire_bytes / received`: a delivery's size on the wire (QoS 0: the
    /// PUBLISH or MESSAGE alone), e.g. to measure topic aliases.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wire_bytes_per_delivery: Option<f64>,
    /// Distinct messages per second through the broker (deliveries / fan-out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub msgs_per_s: Option<f64>,
    /// Deliveries per second (= msgs_per_s × subscribers for fan-out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliveries_per_s: Option<f64>,
    /// Skipped messages: a later one from the same publisher arrived, these never did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost: Option<u64>,
    /// Messages after the last one received from their publisher when the run ended
    /// (still queued after draining, or dropped at the tail).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreceived: Option<u64>,
    /// Seconds spent after the measured period waiting for the last deliveries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicates: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reordered: Option<u64>,
    /// Times a publisher's window stayed full for 2 s without any delivery.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stalls: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
    /// The generator's CPU seconds during the measured period, and as a share of one core.
    pub gen_cpu_s: f64,
    pub gen_cpu_util: f64,
    /// The broker's processes (`--broker-pid`), whose CPU `broker_cpu_s` sums.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub broker_pid: Vec<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_cpu_s: Option<f64>,
    /// Broker CPU seconds per wall second (1.0 = one core busy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_cpu_util: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub msgs_per_broker_cpu_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliveries_per_broker_cpu_s: Option<f64>,
    // Idle scenario.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connected: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connects_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_addrs: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_rss_before: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_rss_after: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_per_connection: Option<f64>,
    /// Connection or protocol errors (first few, with counts).
    pub errors: Vec<String>,
}

fn si(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

impl Report {
    /// Fills the per-CPU-second and utilisation fields from the raw figures.
    pub fn derive(&mut self) {
        let d = self.duration_s.max(1e-9);
        self.gen_cpu_util = self.gen_cpu_s / d;
        if let Some(b) = self.broker_cpu_s {
            self.broker_cpu_util = Some(b / d);
            if b > 0.0 {
                self.msgs_per_broker_cpu_s = self.msgs_per_s.map(|m| m * d / b);
                self.deliveries_per_broker_cpu_s = self.deliveries_per_s.map(|m| m * d / b);
            }
        }
    }

    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "{} ({}) against {}:{}",
            self.scenario, self.protocol, self.host, self.port
        );
        if let Some(l) = &self.label {
            let _ = write!(s, " [{l}]");
        }
        let _ = write!(s, ", {:.1}s, {} threads", self.duration_s, self.threads);
        if let (Some(p), Some(n)) = (self.publishers, self.subscribers) {
            let _ = write!(
                s,
                "\n  {p} publisher(s) -> {n} subscriber(s), QoS {}, {} B payload",
                self.qos.unwrap_or(0),
                self.payload.unwrap_or(0)
            );
        }
        if let Some(m) = self.msgs_per_s {
            let _ = write!(s, "\n  throughput: {} msg/s", si(m));
            if let Some(d) = self.deliveries_per_s {
                if self.subscribers.unwrap_or(1) > 1 {
                    let _ = write!(s, ", {} deliveries/s", si(d));
                }
            }
            let _ = write!(
                s,
                "  (sent {}, received {})",
                self.sent.unwrap_or(0),
                self.received.unwrap_or(0)
            );
        }
        if let Some(b) = self.wire_bytes_per_delivery {
            let _ = write!(
                s,
                "\n  subscribers read {:.1} wire bytes per delivery ({} bytes)",
                b,
                self.sub_wire_bytes.unwrap_or(0)
            );
        }
        if let Some(l) = &self.latency {
            let _ = write!(
                s,
                "\n  latency: p50 {:.0} us, p99 {:.0} us, p999 {:.0} us, max {:.0} us ({} samples)",
                l.p50_us, l.p99_us, l.p999_us, l.max_us, l.samples
            );
        }
        if self.lost.is_some() {
            let _ = write!(
                s,
                "\n  lost {}, unreceived at end {} (after {:.1}s of draining), duplicated {}, reordered {}, stalls {}",
                self.lost.unwrap_or(0),
                self.unreceived.unwrap_or(0),
                self.drain_s.unwrap_or(0.0),
                self.duplicates.unwrap_or(0),
                self.reordered.unwrap_or(0),
                self.stalls.unwrap_or(0)
            );
        }
        if let Some(c) = self.connections {
            let _ = write!(
                s,
                "\n  connections: {}/{} connected+subscribed in {:.2}s ({} connects/s), {} failed, {} source address(es)",
                self.connected.unwrap_or(0),
                c,
                self.connect_s.unwrap_or(0.0),
                si(self.connects_per_s.unwrap_or(0.0)),
                self.failed.unwrap_or(0),
                self.source_addrs.unwrap_or(1)
            );
        }
        if let Some(r) = self.rss_per_connection {
            let _ = write!(
                s,
                "\n  broker RSS: {:.1} MiB -> {:.1} MiB, {:.0} bytes per connection",
                self.broker_rss_before.unwrap_or(0) as f64 / 1048576.0,
                self.broker_rss_after.unwrap_or(0) as f64 / 1048576.0,
                r
            );
        }
        let _ = write!(
            s,
            "\n  generator CPU: {:.2}s ({:.0}% of a core)",
            self.gen_cpu_s,
            self.gen_cpu_util * 100.0
        );
        if let Some(b) = self.broker_cpu_s {
            let _ = write!(
                s,
                "\n  broker CPU: {:.2}s ({:.0}% of a core)",
                b,
                self.broker_cpu_util.unwrap_or(0.0) * 100.0
            );
            if let Some(m) = self.msgs_per_broker_cpu_s {
                let _ = write!(s, ", {} msg per broker CPU-second", si(m));
            }
            if self.subscribers.unwrap_or(1) > 1 {
                if let Some(d) = self.deliveries_per_broker_cpu_s {
                    let _ = write!(s, ", {} deliveries per broker CPU-second", si(d));
                }
            }
        }
        for e in &self.errors {
            let _ = write!(s, "\n  error: {e}");
        }
        s
    }
}

/// Collects errors, keeping the first few distinct messages with a count.
#[derive(Debug, Default)]
pub struct Errors {
    entries: Vec<(String, u64)>,
}

impl Errors {
    pub fn add(&mut self, e: String) {
        if let Some(entry) = self.entries.iter_mut().find(|(m, _)| *m == e) {
            entry.1 += 1;
        } else if self.entries.len() < 8 {
            self.entries.push((e, 1));
        } else if let Some(last) = self.entries.last_mut() {
            last.1 += 1;
        }
    }

    pub fn into_vec(self) -> Vec<String> {
        self.entries
            .into_iter()
            .map(|(m, n)| if n > 1 { format!("{m} (x{n})") } else { m })
            .collect()
    }
}
