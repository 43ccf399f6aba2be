//! The router's side of the state cluster nodes share (`ClusterState`):
//! client ids claimed before a connection binds, sessions another node took
//! over, and retained changes the cluster applies here.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::capture::MoveCapture;
use super::marks::MarksFrom;
use super::restore::stored_subscription;
use super::wills::WillAction;
use super::{AttachRefused, Attached, Router};
use crate::core::cluster_state::{Claimed, ClusterState};
use crate::core::commit::Commit;
use crate::core::message::Message;
use crate::core::peer_marks::PeerMark;
use crate::core::session::{KickReason, MovedAway, Session, SessionOwner};
use crate::core::topic::Filter;

impl Router {
    /// [`Router::attach`] for a client id that is one session in the whole
    /// cluster: the id is claimed first (the node that held it ends its
    /// connection), and a resumed session another node held keeps the
    /// subscriptions it had there. Without a cluster, just `attach`.
    pub async fn attach_claimed(
        self: &Arc<Self>,
        client_id: &Arc<str>,
        login: &SessionOwner,
        clean_start: bool,
        expiry_interval: u32,
    ) -> Result<Attached, AttachRefused> {
        let Some(cluster) = self.persistence.cluster().cloned() else {
            return Ok(self.attach(client_id, login, clean_start, expiry_interval)?);
        };
        // A session resuming here from another node: what this node routes
        // for it from now on is kept for it (`capture.rs`), before the claim
        // lets that node go.
        let capture = self
            .capture_move(cluster.as_ref(), client_id, clean_start)
            .await;
        let claimed = match cluster.claim(client_id, clean_start).await {
            Ok(claimed) => claimed,
            Err(e) if self.persistence.store().is_some_and(|s| s.is_shared()) => {
                // A shared store: a session made here would write the id's
                // records (deliveries numbered from 1) over those of the
                // session stored, held by this node or another.
                self.stats.claims_failed.fetch_add(1, Ordering::Relaxed);
                return Err(AttachRefused::OwnerUndecided {
                    client_id: Arc::clone(client_id),
                    reason: e.to_string(),
                });
            }
            Err(e) => {
                // Local traffic keeps flowing while the shared state is unreachable.
                let total = self.stats.claims_failed.fetch_add(1, Ordering::Relaxed) + 1;
                // The first and then every 1000th, so a reconnect storm does not flood the log.
                if total == 1 || total.is_multiple_of(1000) {
                    tracing::warn!(client_id = %client_id, error = %e, failed_total = total, "client id not claimed in the cluster: session bound on this node only");
                }
                Claimed::default()
            }
        };
        // This node serves the id from now on: its records are written again.
        if let Some(store) = self.persistence.store() {
            store.hold_client(client_id);
        }
        // What the session had of other nodes' messages there: not again here.
        // A holder that adopted the id and never read it had nothing of
        // the session: the marks are those of the node it adopted it from.
        let unread_from = claimed
            .unread_from
            .as_ref()
            .map(|(node, run)| MarksFrom::Stored(node, (*run != 0).then_some(*run)));
        let marks_from = match (&claimed.marks, &claimed.previous) {
            (Some(word), _) => MarksFrom::Word(word),
            (None, Some(previous)) => {
                unread_from.unwrap_or(MarksFrom::Stored(previous, claimed.previous_run))
            }
            (None, None) => MarksFrom::Unknown,
        };
        // Read once: a session restored here since (an adoption tried again) is not read twice.
        let unread = (self.unread_takeovers.lock().contains(client_id)
            || claimed.unread_from.is_some())
            && self.session(client_id).is_none();
        // What the session had where it was (its capture leaves that out).
        let mut had = match claimed.held_elsewhere {
            true => super::marks::origin_marks(marks_from, &[]),
            false => Vec::new(),
        };
        if claimed.held_elsewhere || unread {
            // Every node's journal: the previous holder may have adopted the
            // id from a dead node without reading it (its records are still
            // in that node's journal).
            let from = if claimed.held_elsewhere {
                marks_from
            } else {
                unread_from.unwrap_or(MarksFrom::Unknown)
            };
            match self
                .take_over_stored(client_id, clean_start, None, from)
                .await
            {
                Ok(marks) => {
                    cluster.stored_state_read(client_id);
                    if claimed.held_elsewhere {
                        had = marks;
                    }
                }
                Err(reason) if self.persistence.store().is_some_and(|s| s.is_shared()) => {
                    // Still claimed by this node: the next attempt reads again.
                    self.unread_takeovers.lock().insert(Arc::clone(client_id));
                    return Err(AttachRefused::StoredStateUnread {
                        client_id: Arc::clone(client_id),
                        reason,
                    });
                }
                Err(_) => {}
            }
            if unread {
                self.unread_takeovers.lock().remove(client_id);
            }
        }
        let attached = self.attach(client_id, login, clean_start, expiry_interval);
        let mut attached = match attached {
            Ok(attached) => attached,
            Err(refused) => {
                cluster.session_ended(client_id);
                return Err(refused.into());
            }
        };
        if claimed.held_elsewhere && !clean_start && !attached.session_present {
            let marks = self.session_marks(marks_from, &[]);
            attached.session.set_peer_marks(marks);
            for record in &claimed.carried {
                if let Some((filter, options)) = stored_subscription(self, client_id, record) {
                    self.subscribe(&attached.session, filter, options);
                }
            }
            attached.session_present = true;
        }
        if let Some(capture) = capture {
            capture.finish(&attached.session, &had);
        }
        drop(claimed.guard);
        Ok(attached)
    }

    /// Starts a capture for `client_id` when another node holds its
    /// session and this connection resumes it, once the interest of its
    /// filters is subscribed here (see `capture.rs`).
    async fn capture_move(
        &self,
        cluster: &dyn ClusterState,
        client_id: &Arc<str>,
        clean_start: bool,
    ) -> Option<MoveCapture<'_>> {
        if clean_start {
            return None;
        }
        self.routing.fabric()?;
        let (_, records) = cluster.holder(client_id).await?;
        self.capture_adoption(client_id, &records).await
    }

    /// Another node held `client_id`: with a store the nodes share, its
    /// stored state becomes this node's: restored to resume it, or, for a
    /// clean start, deleted (here, before this node writes the new session).
    /// `previous`: the nodes it may have records in, when known (their
    /// journals and this node's are read; None reads every node's). The
    /// session restored skips the other nodes' messages it had there
    /// (`marks`). An error when the stored state could not be read (logged
    /// here).
    async fn take_over_stored(
        self: &Arc<Self>,
        client_id: &str,
        clean_start: bool,
        previous: Option<&[&str]>,
        marks: MarksFrom<'_>,
    ) -> Result<Vec<PeerMark>, String> {
        let Some(store) = self.persistence.store().cloned() else {
            return Ok(super::marks::origin_marks(marks, &[]));
        };
        // After what was submitted before (a release of the id still on
        // its way would otherwise forget what this read adds).
        self.wait_store_applied().await.map_err(|e| e.to_string())?;
        let id = client_id.to_string();
        let previous: Option<Vec<String>> =
            previous.map(|nodes| nodes.iter().map(|n| n.to_string()).collect());
        let loaded = tokio::task::spawn_blocking(move || {
            let nodes: Option<Vec<&str>> = previous
                .as_ref()
                .map(|nodes| nodes.iter().map(String::as_str).collect());
            store.load_client(&id, nodes.as_deref())
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|read| read.map_err(|e| e.to_string()));
        let snapshot = match loaded {
            Ok(Some(snapshot)) => snapshot,
            Ok(None) => return Ok(super::marks::origin_marks(marks, &[])), // a store of this node alone
            Err(e) => {
                tracing::warn!(client_id, error = %e, "stored state of a session taken over not read");
                return Err(e);
            }
        };
        let had = super::marks::origin_marks(marks, &snapshot.peer_marks);
        if clean_start {
            // The clean start ends the old session: its stored will goes out
            // now, from here (the node that held it sends none, alive or
            // dead), and its records go.
            self.persistence
                .remove_stale([crate::store::StoreOp::DeleteSession {
                    client_id: client_id.to_string(),
                }]);
            self.restore_wills(snapshot.wills);
        } else if !snapshot.sessions.is_empty() || !snapshot.wills.is_empty() {
            let marks = self.session_marks(marks, &snapshot.peer_marks);
            let skipping = marks.marks().len();
            let restored = super::restore::restore(self, snapshot, &marks);
            tracing::info!(
                client_id,
                deliveries = restored.deliveries,
                origins_skipped = skipping,
                "session taken over with its stored state"
            );
        }
        Ok(had)
    }

    /// Another node took `client_id` over: the connection here is told so
    /// (session takeover) and the session here ends without a trace, as it
    /// lives on there (its waiting will goes out if the new connection
    /// started clean, and is cancelled if it resumed; with a shared store
    /// the new owner, which read the stored will, does either). Returns the
    /// marks to tell the new owner (`core::peer_marks`): this node's, with
    /// what the session still skipped here (it came from another node).
    pub fn session_moved(&self, client_id: &str, clean_start: bool) -> Vec<PeerMark> {
        let Some(session) = self.sessions.get(client_id) else {
            // Not here (held, its stored state never read): this node
            // routed nothing to it, and its own marks would make the new
            // holder leave out what it routed to its other sessions.
            return Vec::new();
        };
        // Before the kick: the connection it ends settles its will by it.
        session.set_moved_away(if clean_start {
            MovedAway::Ended
        } else {
            MovedAway::Resumed
        });
        session.kick(KickReason::TakenOver);
        let removed = self.sessions.remove(&session);
        // Taken once the session routes nothing more here, with no message
        // routed (to it or not) and left unmarked meanwhile.
        let here = {
            let store = self
                .persistence
                .store()
                .filter(|_| self.routing.fabric().is_some());
            let _stopped = store.map(|store| store.routing_stopped());
            self.routing.drop_subscriptions(&session);
            self.peer_marks()
        };
        if removed {
            tracing::info!(client_id, "session taken over on another node");
            // A shared store's records are the new owner's now: not deleted,
            // the stored will included (nor written from now on).
            let shared = self
                .persistence
                .store()
                .is_some_and(|s| s.release_client(client_id));
            if shared {
                self.drop_waiting_will(client_id);
            } else {
                let action = if clean_start {
                    WillAction::Publish
                } else {
                    WillAction::Cancel
                };
                self.settle_will(client_id, action);
                self.persistence.forget_session(&session);
            }
        }
        session.peer_marks().merged_into(here)
    }

    /// A node died holding `client_id` (or this node's last run, which had
    /// not read it), and this node holds the id now: the session is
    /// restored here from the shared store, with its will, whose delay
    /// starts now (sent at once when there is no session to resume).
    /// `holders`: the nodes whose journals may hold its records; `marks`:
    /// the node (and run) that last had the session, whose stored marks
    /// say what it had. True when a session was restored; an error when its
    /// stored state could not be read: the id stays this node's, and the
    /// state is read when its client attaches here (or by the node it goes
    /// to, which claims it from this one), never left for a fresh session
    /// to write over.
    ///
    /// `capture` ([`Router::capture_adoption`]) is handed to the session
    /// restored, less what the dead node had routed to it, or ended when
    /// there is none to keep; left as it is when the read failed (a try
    /// after it may hand it over; dropped, what it holds is lost).
    ///
    /// `expected`: the claim says the session was kept (it lists its
    /// subscriptions). When `holders`' journals and the bucket have no
    /// session for it, every node's journal is read before the id is given
    /// up: a session on no node gets nothing published for it, while every
    /// node confirms and acknowledges that.
    pub async fn adopt_session<'a>(
        self: &'a Arc<Self>,
        client_id: &str,
        (holders, expected): (&[&str], bool),
        (marks_node, marks_run): (&str, Option<u64>),
        capture: &mut Option<MoveCapture<'a>>,
    ) -> Result<bool, String> {
        if let Some(session) = self.session(client_id) {
            // Restored meanwhile (its client attached here and read it):
            // at worst a repeat of what the dead node had, never a loss.
            if let Some(capture) = capture.take() {
                capture.finish(&session, &[]);
            }
            return Ok(true);
        }
        if let Some(store) = self.persistence.store() {
            store.hold_client(client_id);
        }
        let marks = MarksFrom::Stored(marks_node, marks_run);
        let mut read = self
            .take_over_stored(client_id, false, Some(holders), marks)
            .await;
        if expected && read.is_ok() && self.session(client_id).is_none() {
            read = self.take_over_stored(client_id, false, None, marks).await;
            if self.session(client_id).is_some() {
                tracing::warn!(client_id, holders = ?holders,
                    "session taken over found outside the journals of the nodes that held it");
            }
        }
        let had = match read {
            Ok(had) => had,
            Err(e) => {
                self.unread_takeovers.lock().insert(Arc::from(client_id));
                return Err(e);
            }
        };
        self.unread_takeovers.lock().remove(client_id);
        if let Some(cluster) = self.persistence.cluster() {
            cluster.stored_state_read(client_id);
        }
        let session = self.session(client_id);
        if let Some(capture) = capture.take() {
            match &session {
                Some(session) => capture.finish(session, &had),
                None => capture.no_session(),
            }
        }
        Ok(session.is_some())
    }

    /// Before this node claims `client_id` from a dead node, or from a live
    /// one for a connection resuming it here (`records`: the subscriptions
    /// its claim lists): what this node routes for them is
    /// captured from now on, their interest subscribed, until the session
    /// is restored here ([`Router::adopt_session`]). Without it, what was
    /// routed between the claim and the restore reached no store while
    /// this node confirmed it, and once the dead node ran again (its new
    /// run's confirms count) nothing held those acks back. None when there
    /// is nothing to capture (no cluster fabric, no filter it carries).
    pub async fn capture_adoption(
        &self,
        client_id: &str,
        records: &[crate::store::record::SubscriptionRecord],
    ) -> Option<MoveCapture<'_>> {
        let fabric = self.routing.fabric()?;
        let filters = records
            .iter()
            .filter_map(|r| Filter::parse(&r.filter).ok())
            .collect();
        let capture = self.routing.capture_start(&Arc::from(client_id), filters)?;
        fabric.interest_applied().await;
        Some(MoveCapture {
            routing: &self.routing,
            stats: &self.stats,
            capture: Some(capture),
        })
    }

    /// `client_id` is held here with its stored state unread (a start's
    /// claim of an id its last run adopted and never read): its client's
    /// attach reads it first, if the read after the start has not.
    pub fn mark_unread(&self, client_id: &str) {
        self.unread_takeovers.lock().insert(Arc::from(client_id));
    }

    /// In a cluster with a shared store, the will of a live connection is
    /// stored when it connects (armed: its delay starts when the connection
    /// is found gone), so that the node taking the session over when this
    /// node dies publishes it. Returns the commit to wait for before CONNACK.
    pub fn arm_will(
        &self,
        client_id: &str,
        message: &Message,
        delay: u32,
        expiry_interval: Option<u32>,
    ) -> Commit {
        if !self.shares_store() {
            return Commit::NONE;
        }
        let due = crate::store::record::WillRecord::armed_due(delay);
        self.persistence
            .put_will(client_id, message, expiry_interval, due);
        self.persistence.latest()
    }

    /// The will armed for `session`'s connection will not go out (DISCONNECT,
    /// shutdown, or it went out already): its stored copy goes, unless the
    /// session moved to another node (whose the stored will is now).
    pub fn disarm_will(&self, session: &Session) {
        if self.shares_store() && session.moved_away().is_none() {
            self.persistence.delete_will(&session.client_id);
        }
    }

    /// [`Router::settle_will`] for a session whose stored records another
    /// node holds now: the will and its stored copy are left to it (it
    /// cancels the will on a resume, sends it on a clean start).
    fn drop_waiting_will(&self, client_id: &str) {
        self.wills.take(client_id);
    }

    pub(super) fn shares_store(&self) -> bool {
        self.persistence.cluster().is_some()
            && self.persistence.store().is_some_and(|s| s.is_shared())
    }

    /// A retained message set (non-empty payload) or cleared on another node
    /// of the cluster, in the order the cluster keeps: routed here as that
    /// node's publish would be (`deliver`), or, for a change this node made
    /// itself and delivered already, kept in the index only. Under the trie's
    /// lock either way, so a subscriber subscribing meanwhile gets the
    /// message live or finds it retained, never neither.
    pub fn apply_cluster_retained(&self, message: Message, deliver: bool) {
        let message = Arc::new(Message {
            retain: true,
            ..message
        });
        if !deliver {
            self.routing.apply_retained(message, &self.persistence);
            return;
        }
        // Its connections are woken as the result (`Wakes`) drops.
        if let Err(e) = self.routing.route(
            message,
            None,
            false,
            super::routing::Source::Cluster,
            &self.persistence,
            &self.stats,
        ) {
            tracing::debug!(error = %e, "retained message from the cluster not delivered");
        }
    }
}
