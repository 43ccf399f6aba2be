//! The router's registry of sessions: a connection attaching to its session
//! (taking over or starting clean), detaching and expiring, being told to end
//! (takeover, an operator, shutdown), and the session records in the store.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use dashmap::mapref::entry::Entry;
use tokio::sync::oneshot;

use super::{Attached, NotSessionOwner, Router};
use crate::core::persist;
use crate::core::session::{KickReason, Session, SessionOwner};
use crate::core::will::WillAction;
use crate::store::StoreOp;

impl Router {
    fn new_session(&self, client_id: Arc<str>, expiry_interval: u32) -> Arc<Session> {
        Arc::new(Session::with_store(
            client_id,
            expiry_interval,
            *self.queue_limits.lock(),
            self.store.clone(),
        ))
    }

    /// A stored session brought back at start, disconnected.
    pub(crate) fn insert_restored_session(
        &self,
        client_id: &str,
        expiry: u32,
        owner: SessionOwner,
    ) -> Arc<Session> {
        let session = self.new_session(Arc::from(client_id), expiry);
        session.set_owner(owner);
        session.mark_stored();
        self.sessions
            .insert(Arc::clone(&session.client_id), Arc::clone(&session));
        session
    }

    /// Writes a session's record (subscriptions, expiry) if it is persistent.
    pub(crate) fn save_session(&self, session: &Session, disconnected: bool) {
        let Some(store) = &self.store else {
            return;
        };
        let expiry = session.expiry_interval();
        if expiry == 0 {
            return;
        }
        let at = disconnected.then(crate::store::record::unix_ms_now);
        let record =
            persist::session_record(expiry, at, &session.owner(), &session.subscriptions());
        session.mark_stored();
        store.submit([StoreOp::PutSession {
            client_id: session.client_id.to_string(),
            record,
        }]);
    }

    fn forget_session(&self, session: &Session) {
        if !session.is_stored() {
            return; // a clean session: nothing of it is in the store
        }
        if let Some(store) = &self.store {
            store.submit([StoreOp::DeleteSession {
                client_id: session.client_id.to_string(),
            }]);
        }
    }

    /// A client id no client chose, for clients that leave it to the server.
    pub fn generate_client_id(&self) -> String {
        format!("tern-{:016x}", rand::random::<u64>())
    }

    /// Whether `login` may use the session `session` (resume it, take over its
    /// connection, or discard it with a clean start).
    fn may_use(&self, session: &Session, login: &SessionOwner) -> Result<(), NotSessionOwner> {
        let owner = session.owner();
        if owner == *login
            || owner == SessionOwner::Unknown
            || !self.session_owner_check.load(Ordering::Relaxed)
        {
            return Ok(());
        }
        Err(NotSessionOwner {
            client_id: Arc::clone(&session.client_id),
            owner,
            login: login.clone(),
        })
    }

    /// Binds a new connection of `login` to the session `client_id`, taking over
    /// any live connection. With `clean_start`, an existing session is discarded
    /// first. A new session shares `client_id` with the caller and belongs to
    /// `login`. An existing session of another user is refused (and left
    /// untouched) while the owner check is on.
    pub fn attach(
        &self,
        client_id: &Arc<str>,
        login: &SessionOwner,
        clean_start: bool,
        expiry_interval: u32,
    ) -> Result<Attached, NotSessionOwner> {
        // Checked before the waiting will is settled (which must not happen for
        // another user) and again under the map's lock, which decides.
        if let Some(existing) = self.session(client_id) {
            self.may_use(&existing, login)?;
        }
        let connection_id = self.next_connection_id.fetch_add(1, Ordering::Relaxed);
        let (kick_tx, kicked) = oneshot::channel();
        // A waiting will is cancelled when its session resumes, and goes out now when
        // clean start ends that session (outside the sessions map's lock: it publishes).
        let will_action = if clean_start {
            WillAction::Publish
        } else {
            WillAction::Cancel
        };
        self.settle_will(client_id, will_action);
        let (session, session_present, old_kick) = match self.sessions.entry(Arc::clone(client_id))
        {
            Entry::Occupied(mut entry) => {
                self.may_use(entry.get(), login)?;
                if clean_start {
                    let old = entry.get().clone();
                    let fresh = self.new_session(Arc::clone(entry.key()), expiry_interval);
                    fresh.set_owner(login.clone());
                    entry.insert(Arc::clone(&fresh));
                    let old_kick = old.kick(KickReason::TakenOver);
                    self.drop_subscriptions(&old);
                    self.forget_session(&old);
                    let none = fresh.attach(connection_id, kick_tx, expiry_interval);
                    debug_assert!(none.is_none());
                    (fresh, false, old_kick)
                } else {
                    let session = entry.get().clone();
                    if session.owner() != *login {
                        // An unknown owner is claimed, or the owner check is off.
                        tracing::info!(%client_id, from = session.owner().name(), to = login.name(), "session changes owner");
                        session.set_owner(login.clone());
                    }
                    let old = session.attach(connection_id, kick_tx, expiry_interval);
                    let kicked_old = old.is_some_and(|tx| tx.send(KickReason::TakenOver).is_ok());
                    (session, true, kicked_old)
                }
            }
            Entry::Vacant(entry) => {
                let session = self.new_session(Arc::clone(entry.key()), expiry_interval);
                session.set_owner(login.clone());
                entry.insert(Arc::clone(&session));
                session.attach(connection_id, kick_tx, expiry_interval);
                (session, false, false)
            }
        };
        if old_kick {
            tracing::info!(%client_id, "session taken over by a new connection");
        }
        // Bound first, then checked: either `end_all_connections` sees this
        // connection among the sessions, or this sees its flag.
        if self.closing.load(Ordering::SeqCst) {
            session.tell_to_end(KickReason::ShuttingDown);
        }
        self.save_session(&session, false);
        if session_present {
            // Queues skip offline consumers: hand this one what waited meanwhile.
            self.queues.dispatch_for(&session);
        }
        Ok(Attached {
            session,
            session_present,
            connection_id,
            kicked,
        })
    }

    /// Unbinds a connection from its session. A session with expiry 0 ends now; others wait
    /// for their expiry interval and end then unless a connection came back meanwhile.
    pub fn detach(self: &Arc<Self>, session: &Arc<Session>, connection_id: u64) {
        if !session.detach(connection_id) {
            return; // already taken over: the new connection owns the session
        }
        let expiry = session.expiry_interval();
        if expiry == 0 {
            self.remove_session(session);
            return;
        }
        self.save_session(session, true);
        if expiry != u32::MAX {
            self.expire_later(session, expiry);
        }
    }

    /// Ends `session` after `expiry` seconds unless a connection comes back meanwhile.
    pub(crate) fn expire_later(self: &Arc<Self>, session: &Arc<Session>, expiry: u32) {
        let router = Arc::clone(self);
        let session = Arc::clone(session);
        let generation = session.generation();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(u64::from(expiry))).await;
            if session.generation() == generation && !session.is_connected() {
                tracing::info!(client_id = %session.client_id, "session expired");
                router.remove_session(&session);
            }
        });
    }

    /// Ends a session: its subscriptions and queued messages are gone.
    pub fn remove_session(&self, session: &Arc<Session>) {
        let removed = self.sessions.remove_if(&session.client_id, |_, current| {
            Arc::ptr_eq(current, session)
        });
        self.drop_subscriptions(session);
        if removed.is_some() {
            self.settle_will(&session.client_id, WillAction::Publish);
            self.forget_session(session);
        }
    }

    /// Ends the live connection of `client_id`, if any; true if one was told.
    /// The session ends with it as with any end of a connection (a clean one
    /// is gone, a persistent one waits for its client).
    pub fn kick(&self, client_id: &str, reason: KickReason) -> bool {
        let session = self.sessions.get(client_id).map(|s| Arc::clone(s.value()));
        session.is_some_and(|s| s.tell_to_end(reason))
    }

    /// The broker is shutting down: every live connection is told to end, and
    /// so is any that attaches from now on. Connections learn it through their
    /// kick handle, which they wait on anyway, so none needs a shutdown future.
    pub fn end_all_connections(&self) {
        self.closing.store(true, Ordering::SeqCst);
        for session in self.sessions() {
            session.tell_to_end(KickReason::ShuttingDown);
        }
    }

    pub fn session(&self, client_id: &str) -> Option<Arc<Session>> {
        self.sessions.get(client_id).map(|s| Arc::clone(s.value()))
    }

    /// Every session, connected or not (a snapshot).
    pub fn sessions(&self) -> Vec<Arc<Session>> {
        self.sessions
            .iter()
            .map(|s| Arc::clone(s.value()))
            .collect()
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }
}
