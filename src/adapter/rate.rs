//! Per-client publish rate limit: a token bucket holding one second of the
//! configured rate. A client over its rate is either refused (MQTT 5: DISCONNECT
//! 0x96) or slowed down: the adapter stops reading from it until the debt is paid,
//! so TCP back-pressure reaches the client and nothing is dropped.

use std::time::{Duration, Instant};

#[derive(Debug)]
pub(crate) struct RateLimit {
    per_sec: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    /// A bucket for `per_sec` messages a second; None when unlimited (0).
    pub(crate) fn new(per_sec: u32) -> Option<RateLimit> {
        (per_sec > 0).then(|| RateLimit {
            per_sec: f64::from(per_sec),
            tokens: f64::from(per_sec),
            last: Instant::now(),
        })
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.per_sec);
        self.last = now;
    }

    /// Counts one message; false when it goes over the rate (the debt is kept).
    pub(crate) fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens -= 1.0;
        self.tokens >= 0.0
    }

    /// How long to stop reading so the messages already taken fit the rate.
    pub(crate) fn debt(&mut self, now: Instant) -> Option<Duration> {
        self.refill(now);
        (self.tokens < 0.0).then(|| Duration::from_secs_f64(-self.tokens / self.per_sec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_one_second_passes_and_the_next_message_is_over() {
        let mut limit = RateLimit::new(10).expect("limited");
        let now = Instant::now();
        assert!((0..10).all(|_| limit.take(now)));
        assert!(!limit.take(now), "the 11th message in the same instant");
        let debt = limit.debt(now).expect("in debt");
        assert!(
            debt > Duration::ZERO && debt <= Duration::from_millis(100),
            "{debt:?}"
        );
        // After paying the debt, the client may send again.
        assert!(limit.debt(now + debt + Duration::from_millis(1)).is_none());
    }

    #[test]
    fn zero_means_unlimited() {
        assert!(RateLimit::new(0).is_none());
    }
}
