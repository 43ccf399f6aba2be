//! Per-(subscriber, publisher) sequence tracking: lost, duplicated and reordered messages.

use std::collections::BTreeSet;

/// Gaps larger than this are counted as lost without remembering each number.
const MAX_TRACKED_GAP: u64 = 100_000;

/// Follows one publisher's sequence numbers as seen by one subscriber.
#[derive(Debug, Default, Clone)]
pub struct SeqTracker {
    /// Next sequence number expected (everything below was seen or is missing).
    pub expected: u64,
    /// Skipped numbers not (yet) seen.
    missing: BTreeSet<u64>,
    /// Skipped numbers in gaps too large to track one by one.
    untracked: u64,
    pub duplicates: u64,
    /// Arrived after a later number (filled a gap).
    pub reordered: u64,
}

impl SeqTracker {
    pub fn record(&mut self, seq: u64) {
        if seq == self.expected {
            self.expected += 1;
        } else if seq > self.expected {
            let gap = seq - self.expected;
            if gap <= MAX_TRACKED_GAP && self.missing.len() < 1_000_000 {
                self.missing.extend(self.expected..seq);
            } else {
                self.untracked += gap;
            }
            self.expected = seq + 1;
        } else if self.missing.remove(&seq) {
            self.reordered += 1;
        } else {
            self.duplicates += 1;
        }
    }

    /// Messages skipped: a later one arrived, these never did (dropped by the broker).
    pub fn lost(&self) -> u64 {
        self.missing.len() as u64 + self.untracked
    }

    /// Messages after the last one received: still queued somewhere when the run
    /// ended, or dropped at the tail.
    pub fn unreceived(&self, sent: u64) -> u64 {
        sent.saturating_sub(self.expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_is_clean() {
        let mut t = SeqTracker::default();
        for s in 0..10 {
            t.record(s);
        }
        assert_eq!((t.lost(), t.duplicates, t.reordered), (0, 0, 0));
        assert_eq!(t.unreceived(12), 2);
    }

    #[test]
    fn gaps_duplicates_and_reordering() {
        let mut t = SeqTracker::default();
        for s in [0, 1, 3, 4, 2, 4, 7] {
            t.record(s);
        }
        assert_eq!(t.reordered, 1);
        assert_eq!(t.duplicates, 1);
        assert_eq!(t.lost(), 2); // 5 and 6
        assert_eq!(t.unreceived(10), 2); // 8 and 9
    }
}
