//! Per-connection limit on repeated warnings, so a client cannot turn the
//! broker's log into its amplifier (a flood of denied publishes, a packet of
//! 120,000 refused filters). A connection may log a few warnings per window;
//! the rest are counted, and the next line it may log says how many were
//! left out. Adapters also log refusals once per packet, with a count.

use std::time::{Duration, Instant};

/// Warnings one connection may log per [`WINDOW`].
const LINES_PER_WINDOW: u32 = 5;
/// The window over which [`LINES_PER_WINDOW`] applies.
const WINDOW: Duration = Duration::from_secs(60);

/// The warnings a connection logged lately. Empty (one word) until its first
/// warning, so a well-behaved idle connection carries no more than a pointer.
#[derive(Debug, Default)]
pub(crate) struct LogLimit(Option<Box<Window>>);

#[derive(Debug)]
struct Window {
    start: Instant,
    logged: u32,
    /// Warnings left out since the last one logged.
    suppressed: u64,
}

impl LogLimit {
    /// Whether to log one more warning at `now`: `Some(n)` to log it, saying
    /// that `n` warnings were left out before it; `None` to leave it out.
    pub(crate) fn admit(&mut self, now: Instant) -> Option<u64> {
        let window = self.0.get_or_insert_with(|| {
            Box::new(Window {
                start: now,
                logged: 0,
                suppressed: 0,
            })
        });
        if now.saturating_duration_since(window.start) >= WINDOW {
            window.start = now;
            window.logged = 0;
        }
        if window.logged >= LINES_PER_WINDOW {
            window.suppressed += 1;
            return None;
        }
        window.logged += 1;
        Some(std::mem::take(&mut window.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_lines_per_window_then_the_rest_are_counted_for_the_next_window() {
        let mut limit = LogLimit::default();
        let now = Instant::now();
        for _ in 0..LINES_PER_WINDOW {
            assert_eq!(limit.admit(now), Some(0));
        }
        for _ in 0..1000 {
            assert_eq!(limit.admit(now), None);
        }
        assert_eq!(
            limit.admit(now + WINDOW),
            Some(1000),
            "says how many were left out"
        );
        assert_eq!(limit.admit(now + WINDOW), Some(0));
    }

    #[test]
    fn a_quiet_connection_carries_one_word() {
        assert_eq!(
            std::mem::size_of::<LogLimit>(),
            std::mem::size_of::<usize>()
        );
    }
}
