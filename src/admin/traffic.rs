//! Per-protocol traffic counters, updated for every message by whichever thread
//! handles it. One shared atomic per counter would bounce its cache line between
//! the runtime's worker threads on every message (measured: the costliest lines
//! of the publish path with two workers), so each thread adds to its own stripe
//! and a reader sums the stripes.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crossbeam_utils::CachePadded;

use crate::core::message::QoS;

/// Stripes per counter set; threads beyond this share stripes (still correct).
const STRIPES: usize = 16;

/// Index of a direction in a [`Stripe`].
const RECEIVED: usize = 0;
const SENT: usize = 1;

/// One thread's share: 8 counters, one cache line. By direction, then QoS.
#[derive(Debug, Default)]
struct Stripe {
    messages: [[AtomicU64; 3]; 2],
    bytes: [AtomicU64; 2],
}

/// Messages and payload bytes one protocol moved, by QoS (index 0, 1, 2).
#[derive(Debug)]
pub struct Traffic {
    stripes: Box<[CachePadded<Stripe>]>,
}

impl Default for Traffic {
    fn default() -> Self {
        Traffic {
            stripes: (0..STRIPES).map(|_| CachePadded::default()).collect(),
        }
    }
}

/// This thread's stripe index, chosen round-robin at its first count.
fn stripe_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    INDEX.with(|i| *i)
}

impl Traffic {
    fn mine(&self) -> &Stripe {
        &self.stripes[stripe_index() % self.stripes.len()]
    }

    /// A message a client published (payload bytes).
    pub fn received(&self, qos: QoS, payload_bytes: usize) {
        self.count(RECEIVED, qos, payload_bytes);
    }

    /// A message written to a client.
    pub fn sent(&self, qos: QoS, payload_bytes: usize) {
        self.count(SENT, qos, payload_bytes);
    }

    fn count(&self, direction: usize, qos: QoS, payload_bytes: usize) {
        let stripe = self.mine();
        stripe.messages[direction][qos as usize].fetch_add(1, Ordering::Relaxed);
        stripe.bytes[direction].fetch_add(payload_bytes as u64, Ordering::Relaxed);
    }

    fn sum(&self, counter: impl Fn(&Stripe) -> &AtomicU64) -> u64 {
        self.stripes
            .iter()
            .map(|s| counter(s).load(Ordering::Relaxed))
            .sum()
    }

    /// Messages received at `qos` (0, 1 or 2).
    pub fn received_at(&self, qos: usize) -> u64 {
        self.sum(|s| &s.messages[RECEIVED][qos])
    }

    /// Messages sent at `qos` (0, 1 or 2).
    pub fn sent_at(&self, qos: usize) -> u64 {
        self.sum(|s| &s.messages[SENT][qos])
    }

    pub fn bytes_received(&self) -> u64 {
        self.sum(|s| &s.bytes[RECEIVED])
    }

    pub fn bytes_sent(&self) -> u64 {
        self.sum(|s| &s.bytes[SENT])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn counts_from_many_threads_add_up() {
        let traffic = Arc::new(Traffic::default());
        let threads: Vec<_> = (0..STRIPES + 4)
            .map(|_| {
                let traffic = Arc::clone(&traffic);
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        traffic.received(QoS::AtLeastOnce, 10);
                        traffic.sent(QoS::AtMostOnce, 3);
                    }
                })
            })
            .collect();
        for thread in threads {
            assert!(thread.join().is_ok());
        }
        let n = (STRIPES as u64 + 4) * 1000;
        assert_eq!(traffic.received_at(1), n);
        assert_eq!(traffic.received_at(0), 0);
        assert_eq!(traffic.sent_at(0), n);
        assert_eq!(traffic.bytes_received(), n * 10);
        assert_eq!(traffic.bytes_sent(), n * 3);
    }
}
