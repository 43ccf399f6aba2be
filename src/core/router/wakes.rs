//! The connections a publish queued deliveries for, woken once the publish
//! was handed on (to the streams and the cluster fabric) rather than while
//! it is routed.
//!
//! Why the order matters: tokio runs the task a worker woke last next on
//! that worker (its LIFO slot) and moves the one woken before it to the run
//! queue, from where the runtime's other worker, unparked for it, steals it.
//! A cluster node's publish wakes the subscriber's connection and the
//! outbound task: woken in that order, the subscriber's task crossed to the
//! other core for every message (p50 about twice the cluster-off figure). A
//! subscriber woken last runs next on the publisher's core, as with the
//! cluster off; the outbound task is the one that moves.

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
}

impl Drop for Wakes {
    fn drop(&mut self) {
        for session in self.0.drain(..) {
            session.wake();
        }
    }
}
