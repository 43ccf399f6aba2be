//! The submissions waiting for the next group commit, and how the writer
//! takes a batch of them.

use std::collections::VecDeque;

use super::{StoreOp, Ticket};

pub(super) struct Pending {
    /// The operations of the submissions not yet committed, in order, in
    /// one list: the writer swaps it for its own emptied one, so neither a
    /// submission nor a commit allocates or copies a list of its own.
    pub(super) ops: Vec<StoreOp>,
    /// Where each submission ends in `ops`, with its ticket.
    pub(super) ends: VecDeque<(Ticket, usize)>,
    pub(super) last_ticket: Ticket,
    pub(super) closed: bool,
    /// Operations waiting before a submission wakes the writer: 1, more while
    /// it lingers for a batch to fill (`writer.rs`).
    pub(super) want: usize,
}

impl Pending {
    /// Moves the submissions of the next transaction into `batch` (empty):
    /// all that is waiting, cut at a submission past `max` operations and
    /// after a client's release; one submission only when `one`. Returns
    /// the ticket of the last one taken.
    ///
    /// Cut after a release: the commit's marks (the writer's trailer, made
    /// from every routing submitted so far) then never cover a message
    /// routed after the session was let go, which it never had (a new
    /// holder without the release word takes those stored marks).
    pub(super) fn take_batch(&mut self, batch: &mut Vec<StoreOp>, one: bool, max: usize) -> Ticket {
        let mut taken = 0;
        for (i, (_, end)) in self.ends.iter().enumerate() {
            taken = i + 1;
            let released = matches!(
                end.checked_sub(1).and_then(|last| self.ops.get(last)),
                Some(StoreOp::ReleaseClient { .. })
            );
            if one || *end >= max || released {
                break;
            }
        }
        let Some((ticket, end)) = taken
            .checked_sub(1)
            .and_then(|last| self.ends.get(last))
            .copied()
        else {
            return 0;
        };
        if end == self.ops.len() {
            std::mem::swap(&mut self.ops, batch);
            self.ends.clear();
        } else {
            batch.extend(self.ops.drain(..end));
            self.ends.drain(..taken);
            for (_, rest) in self.ends.iter_mut() {
                *rest -= end;
            }
        }
        ticket
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(n: u64) -> StoreOp {
        StoreOp::DeleteQueued {
            queue: "q".into(),
            seq: n,
        }
    }

    fn seqs(ops: &[StoreOp]) -> Vec<u64> {
        ops.iter()
            .map(|op| match op {
                StoreOp::DeleteQueued { seq, .. } => *seq,
                _ => u64::MAX,
            })
            .collect()
    }

    fn pending(submissions: &[&[u64]]) -> Pending {
        let mut pending = Pending {
            ops: Vec::new(),
            ends: VecDeque::new(),
            last_ticket: 0,
            closed: false,
            want: 1,
        };
        for s in submissions {
            pending.ops.extend(s.iter().copied().map(op));
            pending.last_ticket += 1;
            pending
                .ends
                .push_back((pending.last_ticket, pending.ops.len()));
        }
        pending
    }

    #[test]
    fn a_batch_takes_every_waiting_submission_in_order() {
        let mut p = pending(&[&[1, 2], &[3], &[4, 5]]);
        let mut batch = Vec::new();
        assert_eq!(p.take_batch(&mut batch, false, 100), 3);
        assert_eq!(seqs(&batch), [1, 2, 3, 4, 5]);
        assert!(p.ops.is_empty() && p.ends.is_empty());
        batch.clear();
        assert_eq!(p.take_batch(&mut batch, false, 100), 0, "nothing waiting");
    }

    #[test]
    fn a_batch_is_cut_at_the_submission_past_the_bound_and_the_rest_waits() {
        let mut p = pending(&[&[1, 2], &[3, 4], &[5], &[6]]);
        let mut batch = Vec::new();
        assert_eq!(p.take_batch(&mut batch, false, 3), 2);
        assert_eq!(seqs(&batch), [1, 2, 3, 4]);
        batch.clear();
        assert_eq!(p.take_batch(&mut batch, true, 100), 3, "one submission");
        assert_eq!(seqs(&batch), [5]);
        batch.clear();
        assert_eq!(p.take_batch(&mut batch, false, 100), 4);
        assert_eq!(seqs(&batch), [6]);
        assert!(p.ops.is_empty() && p.ends.is_empty());
    }

    #[test]
    fn a_batch_ends_with_a_release_and_what_follows_waits_for_the_next() {
        let mut p = pending(&[&[1, 2]]);
        let release = StoreOp::ReleaseClient {
            client_id: "c".into(),
        };
        p.ops.push(release);
        p.last_ticket += 1;
        p.ends.push_back((p.last_ticket, p.ops.len()));
        let mut later = pending(&[&[3], &[4]]);
        for (ticket, end) in later.ends.drain(..) {
            p.ends.push_back((ticket + 2, end + 3));
        }
        p.ops.append(&mut later.ops);
        p.last_ticket = 4;
        let mut batch = Vec::new();
        assert_eq!(p.take_batch(&mut batch, false, 100), 2);
        assert_eq!(seqs(&batch), [1, 2, u64::MAX], "up to the release");
        batch.clear();
        assert_eq!(p.take_batch(&mut batch, false, 100), 4);
        assert_eq!(seqs(&batch), [3, 4]);
    }
}
