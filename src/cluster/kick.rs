//! The outbound task's wake-up (`outbound.rs`): now, or once the thread
//! that queued a message ran what it woke before (`Kick::wake`).
//!
//! tokio runs the task a worker woke last next on that worker and hands the
//! one woken before it to the runtime's other worker, unparking it. A
//! publish on a cluster node wakes its local subscribers' connections and
//! the outbound task: woken at once, one of them crossed to the other core
//! for every message (the local subscriber's p50 was about twice the
//! cluster-off figure). So when the publish woke connections here, the
//! outbound task is woken as a yielding task is: once this worker ran what
//! it has queued (or at its next maintenance tick under load), on the same
//! worker, waking no other.

use std::future::Future;
use std::task::{Context, Poll, Waker};

use super::out_queue::OutQueue;
use futures_util::task::AtomicWaker;

/// Where the outbound task leaves its waker while its queue is empty.
#[derive(Debug, Default)]
pub(super) struct Kick(AtomicWaker);

impl Kick {
    /// A message was queued: wakes the outbound task if it waits, at once,
    /// or (`later`) once this worker ran what it has queued.
    pub(super) fn wake(&self, later: bool) {
        if let Some(waker) = self.0.take() {
            if later {
                wake_later(waker);
            } else {
                waker.wake();
            }
        }
    }

    /// Resolves once `queue` has a message or is closed (the fabric is gone).
    pub(super) async fn ready(&self, queue: &OutQueue) {
        std::future::poll_fn(|cx| {
            // Registered before the check: a message queued after the check
            // finds the waker (`wake` takes it after queueing).
            self.0.register(cx.waker());
            if queue.is_empty() && !queue.is_closed() {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
    }
}

/// Wakes `waker` the way `tokio::task::yield_now` wakes its own task: handed
/// to this worker's deferred wake-ups, woken when it has run what is queued
/// (outside a runtime: at once). A yield that completes at once (it never
/// does on its first poll) wakes it here.
fn wake_later(waker: Waker) {
    let mut cx = Context::from_waker(&waker);
    let yielded = std::pin::pin!(tokio::task::yield_now()).poll(&mut cx);
    if yielded.is_ready() {
        waker.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use bytes::Bytes;
    use futures_util::FutureExt;
    use parking_lot::Mutex;

    use crate::core::message::{Message, QoS};

    fn message() -> Arc<Message> {
        Arc::new(Message::new("t", Bytes::new(), QoS::AtMostOnce, false))
    }

    #[tokio::test]
    async fn a_later_wake_runs_the_task_after_those_woken_after_it() {
        let kick = Arc::new(Kick::default());
        let queue = Arc::new(OutQueue::new(4));
        assert!(kick.ready(&queue).now_or_never().is_none(), "empty: waits");
        let order = Arc::new(Mutex::new(Vec::new()));
        let (go, went) = tokio::sync::oneshot::channel::<()>();
        let outbound = {
            let (kick, order, queue) = (Arc::clone(&kick), Arc::clone(&order), Arc::clone(&queue));
            tokio::spawn(async move {
                kick.ready(&queue).await;
                order.lock().push("outbound");
            })
        };
        let other = {
            let order = Arc::clone(&order);
            tokio::spawn(async move {
                let _ = went.await;
                order.lock().push("woken after it");
            })
        };
        // Both wait now.
        tokio::task::yield_now().await;
        queue.push(&message()).expect("room");
        kick.wake(true);
        let _ = go.send(());
        outbound.await.expect("joined");
        other.await.expect("joined");
        assert_eq!(*order.lock(), ["woken after it", "outbound"]);
    }

    #[tokio::test]
    async fn a_closed_queue_is_ready() {
        let kick = Kick::default();
        let queue = OutQueue::new(1);
        queue.close();
        assert!(kick.ready(&queue).now_or_never().is_some());
    }

    struct Flag(AtomicBool);

    impl std::task::Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn outside_a_runtime_a_later_wake_is_now() {
        let kick = Kick::default();
        let queue = OutQueue::new(1);
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(Arc::clone(&flag));
        let mut ready = std::pin::pin!(kick.ready(&queue));
        assert!(ready
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending());
        queue.push(&message()).expect("room");
        kick.wake(true);
        assert!(flag.0.load(Ordering::SeqCst), "woken at once");
        assert!(ready.poll(&mut Context::from_waker(&waker)).is_ready());
    }
}
