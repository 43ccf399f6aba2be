//! Flow control between nodes. Core NATS has none: a node that reads more
//! slowly than the others send loses what overflows its subscription buffers
//! (the client library drops it) or its connection (the server cuts a slow
//! consumer). So a node keeps at most `cluster.window` messages sent that
//! every other node alive has not yet confirmed routing, and waits at that
//! limit; its queue to NATS then fills and its publishers are read more
//! slowly (`NatsFabric::wait_room`): back-pressure, not loss.
//!
//! - Acks: a QoS ≥ 1 message a client published here is acknowledged once
//!   its number is confirmed (`Fabric::confirmed`, fed by [`Window`]): every
//!   node alive stored it, so a crash of this node right after the ack loses
//!   it for no session elsewhere.
//! - Sync: every quarter window, before waiting, and at the end of a batch
//!   holding a QoS ≥ 1 message (its ack waits) the sender publishes on
//!   `tern.sync.<node>` the sequence number of the last message it sent
//!   (`[epoch: u64 BE][seq: u64 BE]`), with a reply subject.
//! - Confirm: every node subscribes `tern.sync.*` on the connection its
//!   messages arrive on, so a sync comes after what was sent before it; the
//!   inbound task orders it with them and answers once it has routed every
//!   earlier message of that origin and the store writes that routing made
//!   are committed (`[seq: u64 BE][first: u64 BE][node name]`, `first` the
//!   first sync of this sender that node saw: the confirm counts for the
//!   sync it answers and those after `first` only, so a node restarted under
//!   its name does not confirm the earlier syncs, sent while it was down;
//!   the first sync it sees is taken on trust, or a node's start would fail
//!   the acks of the messages that sync covered). A node confirms no sync
//!   before its start restored its sessions and subscribed their interest
//!   (`ConnectionState::is_restored`). When a node's confirms name a new
//!   `first` (it restarted), they count only for syncs whose messages were
//!   all sent after that confirm came ([`Trust`]): what went out while it
//!   was down or starting is not vouched for by its new run. Nor for syncs
//!   whose messages went before a new run's first heartbeat came (a node
//!   beats once restored; a run is told by the heartbeat's payload), which
//!   covers a run restarted before the sender saw the previous one confirm.
//! - A sync counts as confirmed when every node alive at the time (status
//!   heartbeats) or unsettled (dead, its sessions not yet taken over by
//!   every survivor: `peers.rs`) answered, or after [`CONFIRM_TIMEOUT`] (a
//!   node that died does not stop the others; counted in
//!   `confirm_timeouts`). An unsettled node never answers: its syncs time
//!   out until the survivors hold its sessions. With
//!   `cluster.strict_acks` the messages a timed-out sync covered are noted
//!   ([`TimedOut`]): the node that did not answer may be dead and not yet
//!   noticed, its sessions without them, so their publishers are not
//!   acknowledged (their connections close; they send them again) instead
//!   of acknowledged for the nodes that answered.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::Subscriber;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{FutureExt, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::confirmed::ConfirmedTx;
use super::fabric::FabricStats;
use super::status::ClusterStatus;
use super::Cluster;

/// Subjects of syncs: `tern.sync.<node>`.
pub const SYNC_PREFIX: &str = "tern.sync.";
/// Subjects of confirms: `tern.confirm.<node>.<epoch>`.
const CONFIRM_PREFIX: &str = "tern.confirm.";
/// A sync not confirmed by every node by then counts as confirmed, its
/// messages as timed out.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(3);
/// Ranges of timed-out messages kept: an ack asks right after its number is
/// confirmed, so only the last few matter.
const TIMED_OUT_KEPT: usize = 1_024;

/// Message numbers taken as confirmed because a sync timed out, as ranges
/// `(after, upto]`, the newest last (at most [`TIMED_OUT_KEPT`]).
#[derive(Debug, Default)]
pub(super) struct TimedOut(parking_lot::Mutex<VecDeque<(u64, u64)>>);

impl TimedOut {
    fn add(&self, after: u64, upto: u64) {
        let mut ranges = self.0.lock();
        if ranges.len() == TIMED_OUT_KEPT {
            ranges.pop_front();
        }
        ranges.push_back((after, upto));
    }

    /// Whether message `seq` was in a sync that timed out.
    pub(super) fn contains(&self, seq: u64) -> bool {
        self.0
            .lock()
            .iter()
            .rev()
            .any(|&(after, upto)| after < seq && seq <= upto)
    }
}

pub(super) fn encode_sync(epoch: u64, seq: u64) -> Bytes {
    let mut out = BytesMut::with_capacity(16);
    out.put_u64(epoch);
    out.put_u64(seq);
    out.freeze()
}

/// `(epoch, seq)` of a sync payload.
pub(super) fn decode_sync(payload: &[u8]) -> Option<(u64, u64)> {
    let epoch = u64::from_be_bytes(payload.get(..8)?.try_into().ok()?);
    let seq = u64::from_be_bytes(payload.get(8..16)?.try_into().ok()?);
    (payload.len() == 16).then_some((epoch, seq))
}

pub(super) fn encode_confirm(seq: u64, first: u64, node: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(16 + node.len());
    out.put_u64(seq);
    out.put_u64(first);
    out.put_slice(node.as_bytes());
    out.freeze()
}

/// `(seq, first, node)` of a confirm payload.
fn decode_confirm(payload: &[u8]) -> Option<(u64, u64, &str)> {
    let seq = u64::from_be_bytes(payload.get(..8)?.try_into().ok()?);
    let first = u64::from_be_bytes(payload.get(8..16)?.try_into().ok()?);
    let node = std::str::from_utf8(payload.get(16..)?).ok()?;
    Some((seq, first, node))
}

/// Since when each node's confirms count: per node, the `first` of its
/// confirms (its run) and the last message sent before a new run showed.
#[derive(Debug, Default)]
struct Trust(std::collections::HashMap<String, (u64, u64)>);

impl Trust {
    /// A confirm of `node` naming `first`, `last_sent` the last message sent
    /// so far: its confirms count for syncs whose messages all came after
    /// the returned number. A node's first run seen is trusted (0: it
    /// joined); a new `first` later is a restart.
    fn counts_after(&mut self, node: &str, first: u64, last_sent: u64) -> u64 {
        match self.0.get_mut(node) {
            None => {
                self.0.insert(node.to_string(), (first, 0));
                0
            }
            Some((known, after)) => {
                if *known != first {
                    *known = first;
                    *after = last_sent;
                }
                *after
            }
        }
    }
}

/// A sync sent and the nodes that have not confirmed it yet.
struct Outstanding {
    seq: u64,
    /// The last message of the sync before it: it covers those after.
    after: u64,
    /// When the sync before it went (or the window opened): its messages
    /// went after that.
    after_sent: Instant,
    waiting: HashSet<String>,
    sent: Instant,
}

/// The sender's side: what is confirmed, what is out.
pub(super) struct Window {
    cluster: Cluster,
    status: Arc<ClusterStatus>,
    stats: Arc<FabricStats>,
    epoch: u64,
    limit: u64,
    sync_every: u64,
    sync_subject: async_nats::Subject,
    confirm_subject: async_nats::Subject,
    confirms: Subscriber,
    outstanding: VecDeque<Outstanding>,
    /// Every node alive confirmed the messages up to this one.
    confirmed: u64,
    /// `confirmed`, for the acks waiting on it (`NatsFabric::wait_confirmed`).
    confirmed_tx: ConfirmedTx,
    /// What was confirmed by a timeout (the acks waiting on it fail).
    timed_out: Arc<TimedOut>,
    /// The last message a sync covered.
    last_sync: u64,
    /// The last message sent.
    last_sent: u64,
    /// When the last sync went (or the window opened).
    last_sync_sent: Instant,
    /// Since when each node's confirms count (a restarted node's).
    trust: Trust,
}

impl Window {
    /// Subscribes this run's confirm subject; if NATS refuses it, gives
    /// `confirmed_tx` back (the node then sends without flow control, as
    /// before it, and acks wait for no confirm).
    pub(super) async fn open(
        cluster: &Cluster,
        status: Arc<ClusterStatus>,
        stats: Arc<FabricStats>,
        epoch: u64,
        confirmed_tx: ConfirmedTx,
        timed_out: Arc<TimedOut>,
    ) -> Result<Window, ConfirmedTx> {
        let confirm_subject =
            async_nats::Subject::from(format!("{CONFIRM_PREFIX}{}.{epoch}", cluster.node()));
        let confirms = match cluster.client().subscribe(confirm_subject.clone()).await {
            Ok(confirms) => confirms,
            Err(e) => {
                tracing::warn!(error = %e,
                    "cluster: cannot subscribe for confirmations; messages to other nodes go without flow control");
                return Err(confirmed_tx);
            }
        };
        let limit = cluster.window().max(1) as u64;
        Ok(Window {
            cluster: cluster.clone(),
            status,
            stats,
            epoch,
            limit,
            sync_every: (limit / 4).max(1),
            sync_subject: format!("{SYNC_PREFIX}{}", cluster.node()).into(),
            confirm_subject,
            confirms,
            outstanding: VecDeque::new(),
            confirmed: 0,
            confirmed_tx,
            timed_out,
            last_sync: 0,
            last_sent: 0,
            last_sync_sent: Instant::now(),
            trust: Trust::default(),
        })
    }

    /// Whether message `seq` may be sent now (confirmations that came are
    /// taken into account): when not, [`Window::admit`] would wait.
    pub(super) fn has_room(&mut self, seq: u64) -> bool {
        self.take_ready_confirms();
        seq <= self.confirmed.saturating_add(self.limit)
    }

    /// Waits until message `seq` may be sent: until at most the window is
    /// unconfirmed with it. False when `shutdown` came first.
    pub(super) async fn admit(&mut self, seq: u64, shutdown: &CancellationToken) -> bool {
        self.take_ready_confirms();
        if seq <= self.confirmed.saturating_add(self.limit) {
            return true;
        }
        self.stats.window_waits.fetch_add(1, Ordering::Relaxed);
        // What is out must be covered by a sync, or nothing would confirm it.
        if self.last_sync + 1 < seq {
            self.sync(seq - 1).await;
        }
        while seq > self.confirmed.saturating_add(self.limit) {
            let Some(oldest) = self.outstanding.front() else {
                // Nothing to wait for (no node alive to confirm).
                break;
            };
            let deadline = oldest.sent + CONFIRM_TIMEOUT;
            tokio::select! {
                () = shutdown.cancelled() => return false,
                confirm = self.confirms.next() => {
                    let Some(confirm) = confirm else { return true };
                    self.apply(&confirm.payload);
                }
                () = tokio::time::sleep_until(deadline) => self.expire_oldest(),
            }
        }
        true
    }

    /// Notes that message `seq` was sent: a sync goes out every quarter window.
    pub(super) async fn sent(&mut self, seq: u64) {
        self.last_sent = self.last_sent.max(seq);
        if seq >= self.last_sync + self.sync_every {
            self.sync(seq).await;
        }
    }

    /// Sends a sync for what went out up to `seq` unless one covers it:
    /// acks wait for its confirms.
    pub(super) async fn cover(&mut self, seq: u64) {
        if self.last_sync < seq {
            self.sync(seq).await;
        }
    }

    /// The last message a sync covered.
    pub(super) fn last_sync(&self) -> u64 {
        self.last_sync
    }

    /// Resolves once a confirm came or the oldest sync timed out (never
    /// while no sync is out): the outbound task waits for it while idle, so
    /// the acks waiting on confirms go out without more traffic.
    pub(super) async fn progress(&mut self) {
        let Some(oldest) = self.outstanding.front() else {
            return std::future::pending().await;
        };
        let deadline = oldest.sent + CONFIRM_TIMEOUT;
        tokio::select! {
            confirm = self.confirms.next() => match confirm {
                Some(confirm) => {
                    self.apply(&confirm.payload);
                    // Those in already too: the acks wake once for them all.
                    self.take_ready_confirms();
                }
                // The client is closed: nothing will confirm.
                None => {
                    self.outstanding.clear();
                    self.set_confirmed(u64::MAX);
                }
            },
            () = tokio::time::sleep_until(deadline) => self.expire_oldest(),
        }
    }

    fn set_confirmed(&mut self, seq: u64) {
        if seq > self.confirmed {
            self.confirmed = seq;
            self.confirmed_tx.set(seq);
        }
    }

    async fn sync(&mut self, seq: u64) {
        let (after, after_sent) = (self.last_sync, self.last_sync_sent);
        self.last_sync = seq;
        self.last_sync_sent = Instant::now();
        self.last_sent = self.last_sent.max(seq);
        let waiting: HashSet<String> = self.status.confirm_set().into_iter().collect();
        if waiting.is_empty() {
            self.set_confirmed(seq);
            return;
        }
        let sent = self
            .cluster
            .client()
            .publish_with_reply(
                self.sync_subject.clone(),
                self.confirm_subject.clone(),
                encode_sync(self.epoch, seq),
            )
            .await;
        if sent.is_err() {
            // The client is closed: nothing more goes out anyway.
            self.set_confirmed(seq);
            return;
        }
        self.outstanding.push_back(Outstanding {
            seq,
            after,
            after_sent,
            waiting,
            sent: Instant::now(),
        });
    }

    fn take_ready_confirms(&mut self) {
        while let Some(Some(confirm)) = self.confirms.next().now_or_never() {
            self.apply(&confirm.payload);
        }
    }

    /// A node confirmed every message up to `seq` since its first sync
    /// `first`: sync `seq` and every sync after `first` up to it.
    fn apply(&mut self, payload: &[u8]) {
        let Some((seq, first, node)) = decode_confirm(payload) else {
            return;
        };
        let trusted_after = self.trust.counts_after(node, first, self.last_sent);
        // A new run's first heartbeat: what went before may have missed it.
        let run_since = self.status.peer_renewed_at(node);
        tracing::trace!(
            node,
            seq,
            first,
            trusted_after,
            confirmed = self.confirmed,
            "cluster: confirm"
        );
        for outstanding in self.outstanding.iter_mut() {
            if outstanding.seq > seq {
                break;
            }
            if outstanding.after < trusted_after
                || run_since.is_some_and(|since| outstanding.after_sent.into_std() < since)
            {
                continue;
            }
            if outstanding.seq == seq || outstanding.seq > first {
                outstanding.waiting.remove(node);
            }
        }
        while self
            .outstanding
            .front()
            .is_some_and(|o| o.waiting.is_empty())
        {
            if let Some(done) = self.outstanding.pop_front() {
                self.set_confirmed(done.seq);
            }
        }
    }

    fn expire_oldest(&mut self) {
        let Some(expired) = self.outstanding.pop_front() else {
            return;
        };
        // Noted before the acks waiting on it are woken. Not while this
        // node is cut off from NATS itself: local traffic goes on then, and
        // what is queued for the other nodes goes once it is back.
        let noted = self.cluster.strict_acks() && self.cluster.state().is_connected();
        if noted {
            self.timed_out.add(self.confirmed, expired.seq);
        }
        tracing::debug!(after = self.confirmed, upto = expired.seq, noted, waiting = ?expired.waiting,
            "cluster: a sync timed out");
        self.set_confirmed(expired.seq);
        let total = self.stats.confirm_timeouts.fetch_add(1, Ordering::Relaxed) + 1;
        if total == 1 || total.is_multiple_of(100) {
            let mut silent: Vec<String> = expired.waiting.into_iter().collect();
            silent.sort();
            tracing::warn!(total, nodes = ?silent,
                "cluster: nodes did not confirm messages in time; sending on without them");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_and_confirm_payloads_round_trip() {
        assert_eq!(decode_sync(&encode_sync(7, 42)), Some((7, 42)));
        assert_eq!(decode_sync(b"short"), None);
        assert_eq!(
            decode_confirm(&encode_confirm(42, 7, "tern-2")),
            Some((42, 7, "tern-2"))
        );
        assert_eq!(decode_confirm(b"1234"), None);
    }

    #[test]
    fn a_restarted_node_vouches_only_for_what_was_sent_after_its_new_run_showed() {
        let mut trust = Trust::default();
        assert_eq!(trust.counts_after("b", 10, 500), 0, "a node seen joining");
        assert_eq!(trust.counts_after("b", 10, 900), 0, "same run");
        assert_eq!(trust.counts_after("b", 40, 1_000), 1_000, "restarted");
        assert_eq!(trust.counts_after("b", 40, 1_200), 1_000, "same new run");
        assert_eq!(trust.counts_after("c", 7, 1_200), 0, "per node");
    }

    #[test]
    fn timed_out_ranges_hold_the_numbers_their_syncs_covered() {
        let timed_out = TimedOut::default();
        timed_out.add(10, 20);
        assert!(!timed_out.contains(10));
        assert!(timed_out.contains(11) && timed_out.contains(20));
        assert!(!timed_out.contains(21));
        for i in 0..TIMED_OUT_KEPT as u64 {
            timed_out.add(100 + i, 101 + i);
        }
        assert!(!timed_out.contains(15), "the oldest range made room");
        assert!(timed_out.contains(101));
    }
}
