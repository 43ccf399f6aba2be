//! The writer thread of the group commit: takes what was submitted, applies
//! it in one transaction, tells the waiters. A commit can carry a trailer
//! ([`Trailer`], cluster mode: this node's marks, `core::peer_marks`) made
//! from what was submitted when it was taken: it goes into the first commit
//! that includes all of that, never into an earlier one. A trailer is made
//! and its batch taken between routings ([`Store::routing`]): the marks
//! cover every routing whose writes the batch holds (a routing's writes are
//! submitted before it is marked: one taken in between would be stored
//! with marks behind it, and a node taking its session over after a crash
//! would route the message to it again).

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Durability, Store, StoreOp, Ticket, KEEP_BATCH_CAPACITY};

/// Operations in the last commit from which the next one waits for its batch
/// to fill (`Backend::linger`): each commit costs a fixed amount (an fsync,
/// redb's commit), so while publishers keep many messages in flight, fewer
/// and larger commits cost less per message; a commit of fewer never waits.
const LINGER_FROM: usize = 64;

/// What a lingering commit waits for: about as many operations as the last
/// one carried (a sixteenth fewer: the last stragglers join the next). One
/// wake-up when it is reached, none per submission and no polling: the
/// writer often shares its core with the connections that fill the batch.
/// When fewer come, the linger's deadline ends the wait and the next
/// target is smaller, so a falling load soon stops waiting at all.
fn linger_target(last_batch: usize) -> usize {
    last_batch - last_batch / 16
}

/// Makes the trailer operation of a commit (None: no trailer this time).
/// Called on the writer thread, with submissions held off: it must be quick
/// and take no lock that a submitter holds while it submits.
pub type Trailer = Box<dyn Fn() -> Option<StoreOp> + Send + Sync>;

impl Store {
    /// Adds `trailer`'s operation to the commits from now on (the first one set stays).
    pub fn set_trailer(&self, trailer: Trailer) {
        let _ = self.trailer.set(trailer);
    }

    /// Held while a message is routed (its store operations submitted) and
    /// marked routed: no trailer is made meanwhile. Never taken again by
    /// the thread holding it (the lock is fair: a waiting writer would
    /// block the second read).
    pub fn routing(&self) -> parking_lot::RwLockReadGuard<'_, ()> {
        self.routing.read()
    }

    /// Held while no message may be routed or marked (a session let go
    /// and the marks said for it, `core::peer_marks`).
    pub fn routing_stopped(&self) -> parking_lot::RwLockWriteGuard<'_, ()> {
        self.routing.write()
    }

    pub(super) fn write_loop(&self) {
        let mut last_fsync = std::time::Instant::now();
        // The batch being committed; emptied after each commit and swapped
        // back in, so its capacity is reused.
        let mut ops = Vec::new();
        // A trailer made, with the last ticket submitted when it was.
        let mut trailer: Option<(Ticket, StoreOp)> = None;
        // Operations in the last commit (without its trailer).
        let mut last_batch = 0;
        // Not with `Sync` (one submission per transaction). With `None` no
        // ack waits for the commit, and fewer commits cost less.
        let linger = self
            .backend
            .linger()
            .filter(|_| self.durability != Durability::Sync);
        loop {
            if ops.capacity() > KEEP_BATCH_CAPACITY {
                ops = Vec::new(); // after a burst: its memory goes back
            } else {
                ops.clear();
            }
            let ticket = {
                let mut pending = self.pending.lock();
                while pending.ends.is_empty() && !pending.closed {
                    self.wake.wait_for(&mut pending, Duration::from_millis(500));
                }
                if pending.ends.is_empty() {
                    return; // closed and drained
                }
                // Busy: let the batch fill to about the last one's size, for
                // at most `linger` (see `linger_target`).
                if let Some(linger) = linger.filter(|_| last_batch >= LINGER_FROM) {
                    let deadline = std::time::Instant::now() + linger;
                    pending.want = linger_target(last_batch);
                    while !pending.closed && pending.ops.len() < pending.want {
                        if self.wake.wait_until(&mut pending, deadline).timed_out() {
                            break;
                        }
                    }
                    pending.want = 1;
                }
                // Between routings (`routing`, taken before `pending`: a
                // routing holds it while it submits).
                let (_between, mut pending) = match self.trailer.get() {
                    Some(_) => {
                        drop(pending);
                        let between = self.routing.write();
                        (Some(between), self.pending.lock())
                    }
                    None => (None, pending),
                };
                if trailer.is_none() {
                    if let Some(make) = self.trailer.get() {
                        trailer = make().map(|op| (pending.last_ticket, op));
                    }
                }
                // Sync: one submission per transaction. Otherwise: all that is waiting, bounded.
                let sync = self.durability == Durability::Sync;
                let ticket = pending.take_batch(&mut ops, sync, self.backend.max_batch());
                last_batch = ops.len();
                self.backlog.store(pending.ops.len(), Ordering::Relaxed);
                ticket
            };
            // What it was made from is all in this commit or an earlier one.
            if trailer.as_ref().is_some_and(|(upto, _)| *upto <= ticket) {
                ops.extend(trailer.take().map(|(_, op)| op));
            }
            // `None` still reaches the disk about once a second.
            let fsync = self.durability != Durability::None
                || last_fsync.elapsed() >= Duration::from_secs(1);
            if fsync {
                last_fsync = std::time::Instant::now();
            }
            let started = std::time::Instant::now();
            let applied = self.backend.apply(&ops, fsync);
            if let Some(observe) = self.commit_observer.get() {
                observe(started.elapsed());
            }
            match applied {
                Ok(held_change) => {
                    self.held.fetch_add(held_change, Ordering::Relaxed);
                    self.commits.fetch_add(1, Ordering::Relaxed);
                    self.committed.send_replace(ticket);
                    tracing::trace!(ticket, ops = ops.len(), "store commit");
                }
                Err(e) => {
                    tracing::error!(error = %e, ops = ops.len(), "store commit failed");
                    self.failed.store(true, Ordering::Release);
                    // Wake waiters so they see the failure.
                    self.committed.send_modify(|_| {});
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{linger_target, LINGER_FROM};

    #[test]
    fn a_lingering_commit_waits_for_a_little_less_than_the_last_one_carried() {
        assert_eq!(linger_target(512), 480);
        assert_eq!(linger_target(LINGER_FROM), 60);
        // Never more than the last batch: a steady load is never held to the deadline.
        for last in LINGER_FROM..5000 {
            let target = linger_target(last);
            assert!(
                target < last && target >= last - last / 16,
                "{last} -> {target}"
            );
        }
    }
}
