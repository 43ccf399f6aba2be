//! Leases: how pull consumers (HTTP) take messages from a queue.
//!
//! A pull takes up to `max` messages from the front of `ready`, each under a
//! lease with a deadline (its visibility timeout). Then, by lease id:
//! - ack: the message leaves the queue (and the store);
//! - nack: the lease ends; the message goes back to the front of `ready` at
//!   once, or after a redelivery delay (meanwhile the lease id is no longer
//!   valid, but the message still counts towards the queue's bound);
//! - extend: a new deadline, counted from now.
//!
//! A lease that reaches its deadline puts its message back at the front of
//! `ready`, in arrival order, for the next consumer of any protocol
//! ([`QueueRegistry::expire_leases`], called by a ticker). A leased message
//! stays in the store until acked, so a pull consumer that dies, or a broker
//! that restarts, loses nothing: the message comes back as ready.
//!
//! Leases count towards the queue's bound (`queue_max_messages`), so they are
//! bounded as every other message in a queue is.
//!
//! Cluster mode (`cluster.rs`): a pull leases what the cluster hands over; a
//! lease that is nacked or expires gives its message back to the cluster, not
//! to `ready`, and an acked one lets the cluster finish it.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::cluster::FROM_CLUSTER;
use super::{Entry, Queue, QueueRegistry};
use crate::core::content::MessageView;
use crate::core::message::Message;
use crate::core::selector::Selector;

/// One message handed to a pull consumer.
#[derive(Debug, Clone)]
pub struct Leased {
    /// What the consumer acks, nacks or extends.
    pub lease_id: u64,
    pub message: Arc<Message>,
    /// When the message goes back to the queue unless acked or extended.
    pub deadline: Instant,
}

/// Why a lease operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    #[error("no such lease: unknown, acked, nacked or expired")]
    Unknown,
}

#[derive(Debug)]
struct Held {
    seq: u64,
    message: Arc<Message>,
    deadline: Instant,
    /// False once nacked with a delay: the message waits for its deadline to go
    /// back, and the lease id no longer answers.
    live: bool,
}

/// The leases of one queue, by id, with their deadlines in order so expiry
/// looks only at the leases that are due (a pull or a tick costs O(log n), not
/// a walk over every lease).
#[derive(Debug, Default)]
pub(super) struct Leases {
    held: HashMap<u64, Held>,
    /// (deadline, lease id), soonest first.
    by_deadline: BTreeSet<(Instant, u64)>,
}

impl Leases {
    pub(super) fn len(&self) -> usize {
        self.held.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    fn insert(&mut self, id: u64, held: Held) {
        self.by_deadline.insert((held.deadline, id));
        self.held.insert(id, held);
    }

    fn remove(&mut self, id: u64) -> Option<Held> {
        let held = self.held.remove(&id)?;
        self.by_deadline.remove(&(held.deadline, id));
        Some(held)
    }

    /// A live lease's entry; None for an unknown id or a nack waiting for its delay.
    fn live(&self, id: u64) -> Option<&Held> {
        self.held.get(&id).filter(|held| held.live)
    }

    /// Moves the deadline of lease `id` (which must exist).
    fn reschedule(&mut self, id: u64, deadline: Instant, live: bool) {
        if let Some(held) = self.held.get_mut(&id) {
            self.by_deadline.remove(&(held.deadline, id));
            held.deadline = deadline;
            held.live = live;
            self.by_deadline.insert((deadline, id));
        }
    }

    /// Takes out every lease whose deadline is at or before `now`.
    fn take_due(&mut self, now: Instant) -> Vec<Held> {
        let mut due = Vec::new();
        while let Some(&(deadline, id)) = self.by_deadline.first() {
            if deadline > now {
                break;
            }
            self.by_deadline.pop_first();
            if let Some(held) = self.held.remove(&id) {
                due.push(held);
            }
        }
        due
    }
}

/// Registry-wide state of pulls: who waits for a message, lease ids, and how
/// many leases exist (so the ticker takes no lock when there are none).
#[derive(Debug)]
pub(super) struct PullState {
    arrivals: Notify,
    waiting: AtomicUsize,
    next_id: AtomicU64,
    leases: AtomicUsize,
}

impl Default for PullState {
    fn default() -> Self {
        PullState {
            arrivals: Notify::new(),
            waiting: AtomicUsize::new(0),
            // A random start: an id from before a restart names no new lease.
            next_id: AtomicU64::new(u64::from(rand::random::<u32>()) << 24),
            leases: AtomicUsize::new(0),
        }
    }
}

impl PullState {
    /// `count` more leases exist.
    pub(super) fn leased(&self, count: usize) {
        self.leases.fetch_add(count, Ordering::Relaxed);
    }

    /// A message became ready somewhere: wake the waiting pulls (none: no cost).
    pub(super) fn arrived(&self) {
        if self.waiting.load(Ordering::Acquire) > 0 {
            self.arrivals.notify_waiters();
        }
    }
}

/// A pull waiting for messages; wakes on every arrival while it lives.
#[derive(Debug)]
pub struct ArrivalWatch<'a> {
    pulls: &'a PullState,
}

impl ArrivalWatch<'_> {
    /// Resolves after a message became ready in some queue (then pull again).
    /// Create the future before pulling, so an arrival in between is not missed.
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.pulls.arrivals.notified()
    }
}

impl Drop for ArrivalWatch<'_> {
    fn drop(&mut self) {
        self.pulls.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Queue {
    /// Puts the messages of leases past their deadline back at the front of
    /// `ready`, oldest first; returns how many, and those the cluster handed
    /// over (cluster mode), which go back to the cluster instead.
    fn expire(&mut self, now: Instant) -> (usize, Vec<Arc<Message>>) {
        let due = self.leases.take_due(now);
        let count = due.len();
        let (from_cluster, mut back): (Vec<Held>, Vec<Held>) =
            due.into_iter().partition(|held| held.seq == FROM_CLUSTER);
        back.sort_by_key(|held| std::cmp::Reverse(held.seq));
        for held in back {
            self.ready.push_front(Entry {
                seq: held.seq,
                message: held.message,
            });
        }
        (count, from_cluster.into_iter().map(|h| h.message).collect())
    }

    /// Puts `message` (stored as `seq`) under a new lease until `deadline`.
    pub(super) fn lease(
        &mut self,
        pulls: &PullState,
        seq: u64,
        message: Arc<Message>,
        deadline: Instant,
    ) -> Leased {
        let lease_id = pulls.next_id.fetch_add(1, Ordering::Relaxed);
        self.leases.insert(
            lease_id,
            Held {
                seq,
                message: Arc::clone(&message),
                deadline,
                live: true,
            },
        );
        Leased {
            lease_id,
            message,
            deadline,
        }
    }
}

impl QueueRegistry {
    /// Marks a pull as waiting for messages until the watch is dropped.
    pub fn watch_arrivals(&self) -> ArrivalWatch<'_> {
        self.pulls.waiting.fetch_add(1, Ordering::AcqRel);
        ArrivalWatch { pulls: &self.pulls }
    }

    /// Takes up to `max` ready messages of queue `name`, each under a lease of
    /// `visibility`. Empty when none is ready (expired messages are discarded).
    pub fn pull(&self, name: &str, max: usize, visibility: Duration) -> Vec<Leased> {
        self.pull_matching(name, max, visibility, None)
    }

    /// [`QueueRegistry::pull`] of the messages `selector` matches (all when
    /// None), oldest first; the others stay ready, in their place.
    pub fn pull_matching(
        &self,
        name: &str,
        max: usize,
        visibility: Duration,
        selector: Option<&Selector>,
    ) -> Vec<Leased> {
        let now = Instant::now();
        let mut queues = self.queues.lock();
        let Some(queue) = queues.get_mut(name) else {
            return Vec::new();
        };
        let (expired, to_cluster) = queue.expire(now);
        self.give_back_to_cluster(name, to_cluster);
        let deadline = now + visibility;
        let mut out = Vec::new();
        let mut at = 0;
        while out.len() < max && at < queue.ready.len() {
            let wanted = queue.ready.get(at).is_some_and(|entry| {
                entry.message.is_expired(now)
                    || selector.is_none_or(|s| s.matches(&MessageView::new(&entry.message)))
            });
            if !wanted {
                at += 1;
                continue;
            }
            let Some(Entry { seq, message }) = queue.ready.remove(at) else {
                break;
            };
            if message.is_expired(now) {
                queue.forget(seq);
                continue;
            }
            out.push(queue.lease(&self.pulls, seq, message, deadline));
        }
        if expired > 0 {
            queue.dispatch();
        }
        if queue.is_idle() {
            queues.remove(name);
        }
        self.pulls.leases.fetch_add(out.len(), Ordering::Relaxed);
        self.pulls.leases.fetch_sub(expired, Ordering::Relaxed);
        out
    }

    /// The consumer is done with the leased message: it leaves the queue.
    pub fn ack_lease(&self, name: &str, lease_id: u64) -> Result<(), LeaseError> {
        let mut queues = self.queues.lock();
        let queue = queues.get_mut(name).ok_or(LeaseError::Unknown)?;
        if queue.leases.live(lease_id).is_none() {
            return Err(LeaseError::Unknown);
        }
        if let Some(held) = queue.leases.remove(lease_id) {
            queue.forget(held.seq);
        }
        if queue.is_idle() {
            queues.remove(name);
        }
        self.pulls.leases.fetch_sub(1, Ordering::Relaxed);
        Ok(())
    }

    /// The consumer gives the message back: to the front of the queue now
    /// (`delay` zero) or once `delay` has passed.
    pub fn nack_lease(&self, name: &str, lease_id: u64, delay: Duration) -> Result<(), LeaseError> {
        let mut queues = self.queues.lock();
        let queue = queues.get_mut(name).ok_or(LeaseError::Unknown)?;
        if queue.leases.live(lease_id).is_none() {
            return Err(LeaseError::Unknown);
        }
        if !delay.is_zero() {
            queue
                .leases
                .reschedule(lease_id, Instant::now() + delay, false);
            return Ok(());
        }
        if let Some(held) = queue.leases.remove(lease_id) {
            if held.seq == FROM_CLUSTER {
                // Back to the cluster: the next consumer may be on another node.
                self.give_back_to_cluster(name, vec![held.message]);
            } else {
                queue.ready.push_front(Entry {
                    seq: held.seq,
                    message: held.message,
                });
            }
        }
        queue.dispatch();
        let waiting = !queue.ready.is_empty();
        drop(queues);
        self.pulls.leases.fetch_sub(1, Ordering::Relaxed);
        if waiting {
            self.pulls.arrived();
        }
        Ok(())
    }

    /// A new deadline for the lease, `visibility` from now; returns it.
    pub fn extend_lease(
        &self,
        name: &str,
        lease_id: u64,
        visibility: Duration,
    ) -> Result<Instant, LeaseError> {
        let mut queues = self.queues.lock();
        let queue = queues.get_mut(name).ok_or(LeaseError::Unknown)?;
        let now = Instant::now();
        match queue.leases.live(lease_id) {
            Some(held) if held.deadline > now => {
                let deadline = now + visibility;
                queue.leases.reschedule(lease_id, deadline, true);
                Ok(deadline)
            }
            _ => Err(LeaseError::Unknown),
        }
    }

    /// Puts back the messages of every lease past its deadline (and of delayed
    /// nacks whose delay is over), then hands them out; returns how many.
    /// Takes no lock when no lease exists.
    pub fn expire_leases(&self, now: Instant) -> usize {
        if self.pulls.leases.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        let mut total = 0;
        let mut queues = self.queues.lock();
        for (name, queue) in queues.iter_mut() {
            let (expired, to_cluster) = queue.expire(now);
            self.give_back_to_cluster(name, to_cluster);
            if expired > 0 {
                queue.dispatch();
                total += expired;
            }
        }
        drop(queues);
        if total > 0 {
            self.pulls.leases.fetch_sub(total, Ordering::Relaxed);
            self.pulls.arrived();
        }
        total
    }

    /// Leases held over all queues (nacked ones waiting for their delay included).
    pub fn lease_count(&self) -> usize {
        self.pulls.leases.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::core::message::QoS;

    fn message(body: &'static str) -> Arc<Message> {
        Arc::new(Message::new(
            "$queue/jobs",
            Bytes::from_static(body.as_bytes()),
            QoS::AtLeastOnce,
            false,
        ))
    }

    fn bodies(leased: &[Leased]) -> Vec<String> {
        leased
            .iter()
            .map(|l| String::from_utf8_lossy(&l.message.payload).into_owned())
            .collect()
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn a_pull_leases_up_to_max_and_an_ack_removes_the_message() {
        let queues = QueueRegistry::new(10);
        for body in ["1", "2", "3"] {
            queues.enqueue("jobs", message(body)).unwrap();
        }
        let first = queues.pull("jobs", 2, MINUTE);
        assert_eq!(bodies(&first), ["1", "2"]);
        assert_ne!(first[0].lease_id, first[1].lease_id);
        assert_eq!(bodies(&queues.pull("jobs", 10, MINUTE)), ["3"]);
        assert!(queues.pull("jobs", 10, MINUTE).is_empty());
        queues.ack_lease("jobs", first[0].lease_id).unwrap();
        assert_eq!(
            queues.ack_lease("jobs", first[0].lease_id),
            Err(LeaseError::Unknown),
            "a second ack names no lease"
        );
        assert_eq!(queues.lease_count(), 2);
    }

    #[test]
    fn leases_count_towards_the_queue_bound() {
        let queues = QueueRegistry::new(2);
        queues.enqueue("jobs", message("1")).unwrap();
        queues.enqueue("jobs", message("2")).unwrap();
        let leased = queues.pull("jobs", 2, MINUTE);
        assert!(queues.enqueue("jobs", message("3")).is_err());
        queues.ack_lease("jobs", leased[0].lease_id).unwrap();
        queues.enqueue("jobs", message("3")).unwrap();
    }

    #[test]
    fn an_expired_lease_puts_the_message_back_in_order() {
        let queues = QueueRegistry::new(10);
        for body in ["1", "2", "3"] {
            queues.enqueue("jobs", message(body)).unwrap();
        }
        let leased = queues.pull("jobs", 2, Duration::from_millis(10));
        assert_eq!(bodies(&leased), ["1", "2"]);
        assert_eq!(queues.expire_leases(Instant::now()), 0, "not yet");
        let later = Instant::now() + Duration::from_secs(1);
        assert_eq!(queues.expire_leases(later), 2);
        assert_eq!(
            queues.ack_lease("jobs", leased[0].lease_id),
            Err(LeaseError::Unknown)
        );
        assert_eq!(bodies(&queues.pull("jobs", 10, MINUTE)), ["1", "2", "3"]);
    }

    #[test]
    fn nack_gives_back_now_or_after_the_delay() {
        let queues = QueueRegistry::new(10);
        queues.enqueue("jobs", message("1")).unwrap();
        queues.enqueue("jobs", message("2")).unwrap();
        let leased = queues.pull("jobs", 2, MINUTE);
        queues
            .nack_lease("jobs", leased[1].lease_id, Duration::ZERO)
            .unwrap();
        queues
            .nack_lease("jobs", leased[0].lease_id, Duration::from_secs(5))
            .unwrap();
        assert_eq!(
            queues.extend_lease("jobs", leased[0].lease_id, MINUTE),
            Err(LeaseError::Unknown),
            "a nacked lease is gone"
        );
        assert_eq!(bodies(&queues.pull("jobs", 10, MINUTE)), ["2"]);
        assert_eq!(queues.expire_leases(Instant::now()), 0);
        assert_eq!(
            queues.expire_leases(Instant::now() + Duration::from_secs(6)),
            1
        );
        assert_eq!(bodies(&queues.pull("jobs", 10, MINUTE)), ["1"]);
    }

    #[test]
    fn extend_moves_the_deadline() {
        let queues = QueueRegistry::new(10);
        queues.enqueue("jobs", message("1")).unwrap();
        let leased = queues.pull("jobs", 1, Duration::from_secs(1));
        let deadline = queues
            .extend_lease("jobs", leased[0].lease_id, MINUTE)
            .unwrap();
        assert!(deadline > leased[0].deadline);
        assert_eq!(
            queues.expire_leases(Instant::now() + Duration::from_secs(2)),
            0
        );
        assert_eq!(
            queues.extend_lease("jobs", 12345, MINUTE),
            Err(LeaseError::Unknown)
        );
    }
}
