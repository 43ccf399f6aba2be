//! What one bridge reports to operators: connected, queued, sent, dropped,
//! last error. Written by the bridge task, read by metrics, `$SYS`, the admin
//! API and the dashboard; relaxed atomics, a lock only for the error text.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::core::session::Session;

#[derive(Debug)]
pub struct BridgeStatus {
    pub name: String,
    connected: AtomicBool,
    /// Messages the remote acknowledged (QoS 1/2) or that were written to it (QoS 0).
    sent: AtomicU64,
    /// Messages taken in from the remote and published here.
    received: AtomicU64,
    /// Successful connects to the remote.
    connects: AtomicU64,
    /// Why the link last failed (None: it never did).
    last_error: Mutex<Option<String>>,
    /// The address the link is (or was last) connected to.
    address: Mutex<Option<String>>,
    /// The bridge's core session: its queue is what waits for the remote.
    session: Mutex<Option<Arc<Session>>>,
}

/// A copy of a bridge's state, for display.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BridgeSnapshot {
    pub name: String,
    pub connected: bool,
    pub address: Option<String>,
    /// Waiting for the remote: queued plus sent and not yet acknowledged.
    pub queued: u64,
    pub sent: u64,
    pub received: u64,
    /// Dropped by the queue bounds (`queue_overflow`).
    pub dropped: u64,
    pub connects: u64,
    pub last_error: Option<String>,
}

impl BridgeStatus {
    pub fn new(name: &str) -> BridgeStatus {
        BridgeStatus {
            name: name.to_string(),
            connected: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            last_error: Mutex::new(None),
            address: Mutex::new(None),
            session: Mutex::new(None),
        }
    }

    pub(super) fn set_session(&self, session: Arc<Session>) {
        *self.session.lock() = Some(session);
    }

    pub(super) fn link_up(&self, address: &str) {
        *self.address.lock() = Some(address.to_string());
        self.connects.fetch_add(1, Ordering::Relaxed);
        self.connected.store(true, Ordering::Relaxed);
    }

    pub(super) fn link_down(&self, error: String) {
        self.connected.store(false, Ordering::Relaxed);
        *self.last_error.lock() = Some(error);
    }

    pub(super) fn add_sent(&self, n: u64) {
        self.sent.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn add_received(&self, n: u64) {
        self.received.fetch_add(n, Ordering::Relaxed);
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> BridgeSnapshot {
        let session = self.session.lock().clone();
        let (queued, dropped) = session.map_or((0, 0), |s| {
            (
                (s.pending_len() + s.inflight_len()) as u64,
                s.dropped_count(),
            )
        });
        BridgeSnapshot {
            name: self.name.clone(),
            connected: self.is_connected(),
            address: self.address.lock().clone(),
            queued,
            sent: self.sent.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            dropped,
            connects: self.connects.load(Ordering::Relaxed),
            last_error: self.last_error.lock().clone(),
        }
    }
}
