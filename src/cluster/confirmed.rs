//! What the other nodes confirmed of this node's messages (`window.rs`), for
//! the acks waiting on it (`Fabric::wait_confirmed`).
//!
//! Each waiting ack is woken once its own number is confirmed, not at every
//! confirm: with many publishers at different points, a confirm covers the
//! messages of one or a few of them, and waking every waiting connection for
//! each would cost a wake-up per connection per confirm.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use parking_lot::Mutex;

/// The number every node alive confirmed, and who waits for which.
#[derive(Debug, Default)]
pub(super) struct Confirmed {
    /// Confirmed up to this message (`u64::MAX` once nothing more will be:
    /// no flow control, or the sender stopped). Written under `waiting`'s lock.
    upto: AtomicU64,
    waiting: Mutex<Waiting>,
}

#[derive(Debug, Default)]
struct Waiting {
    next_id: u64,
    /// By (number waited for, waiter).
    wakers: BTreeMap<(u64, u64), Waker>,
}

impl Confirmed {
    pub(super) fn get(&self) -> u64 {
        self.upto.load(Ordering::Acquire)
    }

    /// Confirms up to `seq` (a lower one changes nothing) and wakes those
    /// waiting for it.
    pub(super) fn set(&self, seq: u64) {
        let woken = {
            let mut waiting = self.waiting.lock();
            if seq <= self.upto.load(Ordering::Acquire) {
                return;
            }
            self.upto.store(seq, Ordering::Release);
            let later = match seq.checked_add(1) {
                Some(next) => waiting.wakers.split_off(&(next, 0)),
                None => BTreeMap::new(),
            };
            std::mem::replace(&mut waiting.wakers, later)
        };
        for waker in woken.into_values() {
            waker.wake();
        }
    }

    /// Resolves once message `seq` is confirmed.
    pub(super) fn wait(&self, seq: u64) -> WaitConfirmed<'_> {
        WaitConfirmed {
            confirmed: self,
            seq,
            id: None,
        }
    }
}

/// Sets what the window confirms; once dropped (the outbound task ended:
/// the node is stopping) the acks waiting stop waiting.
#[derive(Debug)]
pub(super) struct ConfirmedTx(pub(super) Arc<Confirmed>);

impl ConfirmedTx {
    pub(super) fn set(&self, seq: u64) {
        self.0.set(seq);
    }
}

impl Drop for ConfirmedTx {
    fn drop(&mut self) {
        self.0.set(u64::MAX);
    }
}

/// [`Confirmed::wait`].
pub(super) struct WaitConfirmed<'a> {
    confirmed: &'a Confirmed,
    seq: u64,
    /// Set once registered among the waiting.
    id: Option<u64>,
}

impl Future for WaitConfirmed<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let seq = self.seq;
        if self.confirmed.get() >= seq {
            return Poll::Ready(());
        }
        let confirmed = self.confirmed;
        let mut waiting = confirmed.waiting.lock();
        // Checked again under the lock: `set` stores under it.
        if confirmed.get() >= seq {
            return Poll::Ready(());
        }
        let id = match self.id {
            Some(id) => id,
            None => {
                let id = waiting.next_id;
                waiting.next_id += 1;
                self.id = Some(id);
                id
            }
        };
        match waiting.wakers.get_mut(&(seq, id)) {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            Some(waker) => waker.clone_from(cx.waker()),
            None => {
                waiting.wakers.insert((seq, id), cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

impl Drop for WaitConfirmed<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.confirmed.waiting.lock().wakers.remove(&(self.seq, id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    #[derive(Default)]
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn woken(count: &Arc<Count>) -> usize {
        count.0.load(Ordering::Relaxed)
    }

    #[test]
    fn a_waiter_is_woken_once_its_own_number_is_confirmed() {
        let confirmed = Confirmed::default();
        let (early, late) = (Arc::new(Count::default()), Arc::new(Count::default()));
        let mut wait_early = Box::pin(confirmed.wait(10));
        let mut wait_late = Box::pin(confirmed.wait(20));
        let early_waker = Waker::from(Arc::clone(&early));
        let late_waker = Waker::from(Arc::clone(&late));
        assert!(wait_early
            .as_mut()
            .poll(&mut Context::from_waker(&early_waker))
            .is_pending());
        assert!(wait_late
            .as_mut()
            .poll(&mut Context::from_waker(&late_waker))
            .is_pending());
        // Polled again (the connection's loop does): registered once.
        assert!(wait_late
            .as_mut()
            .poll(&mut Context::from_waker(&late_waker))
            .is_pending());
        confirmed.set(5);
        assert_eq!(
            (woken(&early), woken(&late)),
            (0, 0),
            "neither is confirmed"
        );
        confirmed.set(10);
        assert_eq!(
            (woken(&early), woken(&late)),
            (1, 0),
            "only the one confirmed"
        );
        assert!(wait_early
            .as_mut()
            .poll(&mut Context::from_waker(&early_waker))
            .is_ready());
        confirmed.set(8);
        assert_eq!(confirmed.get(), 10, "never lowered");
        confirmed.set(25);
        assert_eq!(woken(&late), 1);
        assert!(wait_late
            .as_mut()
            .poll(&mut Context::from_waker(&late_waker))
            .is_ready());
        assert!(confirmed.waiting.lock().wakers.is_empty());
    }

    #[test]
    fn a_dropped_waiter_leaves_nothing_and_a_dropped_sender_ends_every_wait() {
        let confirmed = Arc::new(Confirmed::default());
        let count = Arc::new(Count::default());
        let waker = Waker::from(Arc::clone(&count));
        {
            let mut wait = Box::pin(confirmed.wait(3));
            assert!(wait
                .as_mut()
                .poll(&mut Context::from_waker(&waker))
                .is_pending());
        }
        assert!(
            confirmed.waiting.lock().wakers.is_empty(),
            "dropped: removed"
        );
        let tx = ConfirmedTx(Arc::clone(&confirmed));
        let mut wait = Box::pin(confirmed.wait(u64::MAX - 1));
        assert!(wait
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending());
        drop(tx);
        assert_eq!(woken(&count), 1);
        assert!(wait
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_ready());
    }
}
