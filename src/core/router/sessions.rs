//! The registry of sessions by client id: a connection binding to its session
//! (taking over or starting clean), who may use a session, sessions leaving,
//! connections being told to end (takeover, an operator, shutdown), and the
//! queue limits every session gets.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use tokio::sync::oneshot;

use super::{Attached, NotSessionOwner};
use crate::core::session::{KickReason, QueueLimits, Session, SessionOwner};
use crate::store::Store;

#[derive(Debug)]
pub(crate) struct SessionRegistry {
    /// Sessions by client id, connected or not.
    sessions: DashMap<Arc<str>, Arc<Session>>,
    next_connection_id: AtomicU64,
    /// Set by `end_all`: a connection binding later is told to end at once.
    closing: AtomicBool,
    /// Only a session's owner may resume it (`auth.session_owner_check`).
    owner_check: AtomicBool,
    /// Limits of session queues; changed live on config reload.
    queue_limits: parking_lot::Mutex<QueueLimits>,
    /// Given to each new session, which stores its deliveries while persistent.
    store: Option<Arc<Store>>,
}

impl SessionRegistry {
    pub(crate) fn new(queue_limits: QueueLimits, store: Option<Arc<Store>>) -> SessionRegistry {
        SessionRegistry {
            sessions: DashMap::new(),
            next_connection_id: AtomicU64::new(1),
            closing: AtomicBool::new(false),
            owner_check: AtomicBool::new(true),
            queue_limits: parking_lot::Mutex::new(queue_limits),
            store,
        }
    }

    fn new_session(&self, client_id: Arc<str>, expiry_interval: u32) -> Arc<Session> {
        Arc::new(Session::with_store(
            client_id,
            expiry_interval,
            *self.queue_limits.lock(),
            self.store.clone(),
        ))
    }

    pub(crate) fn set_owner_check(&self, on: bool) {
        self.owner_check.store(on, Ordering::Relaxed);
    }

    /// New queue limits for every session, existing and future.
    pub(crate) fn set_queue_limits(&self, limits: QueueLimits) {
        *self.queue_limits.lock() = limits;
        for session in self.sessions.iter() {
            session.value().set_limits(limits);
        }
    }

    /// A stored session brought back at start, disconnected.
    pub(crate) fn insert_restored(
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

    /// Whether `login` may use the session `session` (resume it, take over its
    /// connection, or discard it with a clean start).
    pub(crate) fn may_use(
        &self,
        session: &Session,
        login: &SessionOwner,
    ) -> Result<(), NotSessionOwner> {
        let owner = session.owner();
        if owner == *login
            || owner == SessionOwner::Unknown
            || !self.owner_check.load(Ordering::Relaxed)
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
    /// any live connection. With `clean_start`, an existing session is replaced
    /// by a fresh one and `discard` is called with the old one while the map
    /// entry is still held (so no other connection sees it half gone).
    pub(crate) fn bind(
        &self,
        client_id: &Arc<str>,
        login: &SessionOwner,
        clean_start: bool,
        expiry_interval: u32,
        discard: impl FnOnce(&Arc<Session>),
    ) -> Result<Attached, NotSessionOwner> {
        let connection_id = self.next_connection_id.fetch_add(1, Ordering::Relaxed);
        let (kick_tx, kicked) = oneshot::channel();
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
                    discard(&old);
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
        // Bound first, then checked: either `end_all` sees this connection
        // among the sessions, or this sees its flag.
        if self.closing.load(Ordering::SeqCst) {
            session.tell_to_end(KickReason::ShuttingDown);
        }
        Ok(Attached {
            session,
            session_present,
            // Set by the router once it has saved the session.
            commit: crate::core::commit::Commit::NONE,
            connection_id,
            kicked,
        })
    }

    /// Removes `session` if it is still the one registered under its client id.
    pub(crate) fn remove(&self, session: &Arc<Session>) -> bool {
        self.sessions
            .remove_if(&session.client_id, |_, current| {
                Arc::ptr_eq(current, session)
            })
            .is_some()
    }

    /// Ends the live connection of `client_id`, if any; true if one was told.
    pub(crate) fn kick(&self, client_id: &str, reason: KickReason) -> bool {
        self.get(client_id).is_some_and(|s| s.tell_to_end(reason))
    }

    /// Every live connection is told to end, and so is any that binds from now on.
    pub(crate) fn end_all(&self) {
        self.closing.store(true, Ordering::SeqCst);
        for session in self.all() {
            session.tell_to_end(KickReason::ShuttingDown);
        }
    }

    pub(crate) fn get(&self, client_id: &str) -> Option<Arc<Session>> {
        self.sessions.get(client_id).map(|s| Arc::clone(s.value()))
    }

    /// Every session, connected or not (a snapshot).
    pub(crate) fn all(&self) -> Vec<Arc<Session>> {
        self.sessions
            .iter()
            .map(|s| Arc::clone(s.value()))
            .collect()
    }

    pub(crate) fn count(&self) -> usize {
        self.sessions.len()
    }
}
