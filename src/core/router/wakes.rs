//! The connections a publish queued deliveries for, woken once the publish
//! was handed on (to the streams and the cluster fabric) rather than while
//! it is routed; the fabric is told whether there were any
//! (`Fabric::forward`'s `after_local`).
//!
//! Why: tokio runs the task a worker woke last next on that worker and
//! hands the one woken before it to the runtime's other worker. A cluster
//! node's publish wakes the subscribers' connections and the fabric's
//! outbound task; the local subscriber's p50 was about twice the
//! cluster-off figure. Waking the subscribers last alone did not change it
//! (the other worker was still unparked for every message); the outbound
//! task woken after them, as a yielding task is (`cluster/kick.rs`), did.

use std::sync::Arc;

use smallvec::SmallVec;

use crate::core::session::Session;

/// Sessions whose connections are woken when this is dropped.
#[derive(Debug, Default)]
pub(crate) struct Wakes(SmallVec<[Arc<Session>; 4]>);

impl Wakes {
    pub(super) fn add(&mut self, session: Arc<Session>) {
        self.0.push(session);
    }

    /// No connection to wake.
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Drop for Wakes {
    fn drop(&mut self) {
        for session in self.0.drain(..) {
            session.wake();
        }
    }
}
