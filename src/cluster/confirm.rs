//! Confirming other nodes' syncs (`window.rs`): a sync routed by the inbound
//! task (every earlier message of its origin routed here) is confirmed once
//! what that routing stored is committed.
//!
//! - At once, from the inbound task, when that is committed already (no
//!   store, or the commit came): no hand-off to another task.
//! - Else by a task of its own ([`run`]), so routing goes on while the store
//!   commits; the latest commit of those at hand covers them all.
//! - One confirm per origin of those at hand: a confirm of sync `seq` counts
//!   for every earlier sync after the origin's first seen here (`first`), so
//!   the latest one says it all, except for the first sync itself, which is
//!   confirmed by name.
//! - Not while a session moving here holds captured messages of other nodes
//!   (`core/router/capture.rs`): no store has them yet. Once handed over,
//!   after the handover's commit; a capture that lost them (the attach
//!   failed) drops the confirms waiting (their senders' syncs time out, and
//!   with `cluster.strict_acks` the publishers are not acknowledged), and
//!   `origins.rs` confirms no later sync covering them. While confirms wait
//!   in the task, none goes at once: a later confirm vouches for the earlier.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::window::encode_confirm;
use super::Cluster;
use crate::core::commit::Commit;
use crate::core::router::Router;

/// Syncs routed whose confirm waits for the store (beyond, routing waits).
const CONFIRMS_QUEUE: usize = 1_024;

/// A routed sync: its reply subject, its number, the number of the first
/// sync of its origin this node saw, and the commit of everything routed
/// before it.
pub(super) type Confirm = (async_nats::Subject, u64, u64, Commit);

/// Sends the confirms of routed syncs (see the module's doc).
pub(super) struct Confirmer {
    cluster: Cluster,
    router: Arc<Router>,
    /// To the task that confirms once committed ([`run`]).
    waiting: mpsc::Sender<Confirm>,
    /// With the task: confirms not yet sent or dropped, and the captures'
    /// losses seen (`CaptureHold::failed`).
    queue: Arc<TaskQueue>,
}

#[derive(Debug, Default)]
struct TaskQueue {
    queued: AtomicUsize,
    losses_seen: AtomicU64,
}

impl Confirmer {
    /// Starts the task that confirms what waits for the store.
    pub(super) fn start(cluster: Cluster, router: Arc<Router>) -> Confirmer {
        let (waiting, receiver) = mpsc::channel(CONFIRMS_QUEUE);
        let queue = Arc::new(TaskQueue::default());
        tokio::spawn(run(
            cluster.clone(),
            Arc::clone(&router),
            receiver,
            Arc::clone(&queue),
        ));
        Confirmer {
            cluster,
            router,
            waiting,
            queue,
        }
    }

    /// Confirms the syncs of `confirms` (in routing order; left empty).
    pub(super) async fn confirm(&self, confirms: &mut Vec<Confirm>) {
        if confirms.is_empty() {
            return;
        }
        latest_per_origin(confirms);
        let hold = self.router.capture_hold();
        let mut commit = hold.handover;
        for (_, _, _, stored) in confirms.iter() {
            commit.include(*stored);
        }
        let at_once = self.queue.queued.load(Ordering::Acquire) == 0
            && !hold.holding
            && hold.failed == self.queue.losses_seen.load(Ordering::Acquire);
        // A store error is the task's to report: it waits on the same commit.
        if at_once && matches!(self.router.is_committed(commit), Ok(true)) {
            publish(&self.cluster, confirms).await;
            return;
        }
        for confirm in confirms.drain(..) {
            self.queue.queued.fetch_add(1, Ordering::AcqRel);
            // Fails only once that task ended (the node is stopping).
            let _ = self.waiting.send(confirm).await;
        }
    }
}

/// Keeps, of `confirms` (in routing order), the last of each origin (and
/// the origin's first sync, which a later confirm does not count for).
fn latest_per_origin(confirms: &mut Vec<Confirm>) {
    if confirms.len() < 2 {
        return;
    }
    // Few origins at a time: a list, searched from the end.
    let mut later: Vec<async_nats::Subject> = Vec::new();
    let mut keep = vec![false; confirms.len()];
    for (index, (reply, seq, first, _)) in confirms.iter().enumerate().rev() {
        let seen = later.contains(reply);
        keep[index] = !seen || seq == first;
        if !seen {
            later.push(reply.clone());
        }
    }
    let mut keep = keep.into_iter();
    confirms.retain(|_| keep.next().unwrap_or(true));
}

/// Publishes `confirms` (left empty).
async fn publish(cluster: &Cluster, confirms: &mut Vec<Confirm>) {
    for (reply, seq, first, stored) in confirms.drain(..) {
        tracing::trace!(%reply, seq, first, ?stored, "cluster: confirm sent");
        let payload = encode_confirm(seq, first, cluster.node());
        // Fails only once the client is closed; the sender stops waiting by itself.
        let _ = cluster.client().publish(reply, payload).await;
    }
}

/// Confirms routed syncs to their senders once the store committed what was
/// routed before them. A store that failed confirms nothing more: the
/// senders take this node for dead after `window::CONFIRM_TIMEOUT`.
async fn run(
    cluster: Cluster,
    router: Arc<Router>,
    mut receiver: mpsc::Receiver<Confirm>,
    queue: Arc<TaskQueue>,
) {
    let mut taken = Vec::with_capacity(64);
    while receiver.recv_many(&mut taken, 64).await > 0 {
        let count = taken.len();
        router.captures_released().await;
        let hold = router.capture_hold();
        if hold.failed != queue.losses_seen.swap(hold.failed, Ordering::AcqRel) {
            tracing::warn!(
                "cluster: a session moving here was not attached; messages routed for it meanwhile are confirmed to no node"
            );
            taken.clear();
        }
        let mut commit = hold.handover;
        for (_, _, _, stored) in &taken {
            commit.include(*stored);
        }
        if let Err(e) = router.wait_committed(commit).await {
            tracing::warn!(error = %e,
                "cluster: the store failed: messages from other nodes are no longer confirmed");
            return;
        }
        latest_per_origin(&mut taken);
        publish(&cluster, &mut taken).await;
        queue.queued.fetch_sub(count, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn confirm(origin: &str, seq: u64, first: u64) -> Confirm {
        (origin.to_string().into(), seq, first, Commit::NONE)
    }

    fn seqs(confirms: &[Confirm]) -> Vec<(String, u64)> {
        confirms
            .iter()
            .map(|(reply, seq, _, _)| (reply.to_string(), *seq))
            .collect()
    }

    #[test]
    fn the_latest_confirm_of_an_origin_speaks_for_its_earlier_ones() {
        let mut confirms = vec![
            confirm("a", 10, 1),
            confirm("b", 5, 1),
            confirm("a", 20, 1),
            confirm("b", 7, 1),
            confirm("a", 30, 1),
        ];
        latest_per_origin(&mut confirms);
        assert_eq!(
            seqs(&confirms),
            vec![("b".to_string(), 7), ("a".to_string(), 30)],
            "one per origin, in order"
        );
    }

    #[test]
    fn an_origins_first_sync_is_confirmed_by_name() {
        // A confirm counts for the syncs after `first` (and its own) only.
        let mut confirms = vec![confirm("a", 4, 4), confirm("a", 9, 4), confirm("a", 12, 4)];
        latest_per_origin(&mut confirms);
        assert_eq!(
            seqs(&confirms),
            vec![("a".to_string(), 4), ("a".to_string(), 12)]
        );
        let mut one = vec![confirm("a", 3, 1)];
        latest_per_origin(&mut one);
        assert_eq!(seqs(&one), vec![("a".to_string(), 3)]);
    }
}
