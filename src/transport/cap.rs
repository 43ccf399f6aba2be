//! Connection caps (broker-wide and per listener) whose limit can change while
//! the broker runs (config reload): lowering one refuses new connections until
//! enough have gone; nobody connected is dropped.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Debug)]
pub struct ConnectionCap {
    held: AtomicUsize,
    limit: AtomicUsize,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct CapPermit(Arc<ConnectionCap>);

impl Drop for CapPermit {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ConnectionCap {
    pub fn new(limit: usize) -> Arc<ConnectionCap> {
        Arc::new(ConnectionCap {
            held: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit),
        })
    }

    /// A place for one more connection, or None at the limit.
    pub fn try_acquire(self: &Arc<Self>) -> Option<CapPermit> {
        let limit = self.limit.load(Ordering::Acquire);
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held < limit).then_some(held + 1)
            })
            .ok()
            .map(|_| CapPermit(Arc::clone(self)))
    }

    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Release);
    }

    #[cfg(test)]
    fn limit(&self) -> usize {
        self.limit.load(Ordering::Acquire)
    }

    #[cfg(test)]
    fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::ConnectionCap;

    #[test]
    fn the_cap_admits_up_to_its_limit_and_follows_a_new_limit() {
        let cap = ConnectionCap::new(2);
        let first = cap.try_acquire();
        let second = cap.try_acquire();
        assert!(first.is_some() && second.is_some());
        assert!(cap.try_acquire().is_none());
        drop(first);
        assert_eq!(cap.held(), 1);
        let third = cap.try_acquire();
        assert!(third.is_some());
        // Lowered below what is held: nobody is dropped, nobody new gets in.
        cap.set_limit(1);
        assert_eq!(cap.held(), 2);
        assert!(cap.try_acquire().is_none());
        drop((second, third));
        assert!(cap.try_acquire().is_some());
        cap.set_limit(5);
        assert_eq!(cap.limit(), 5);
    }
}

/// The broker-wide cap and each listener's own, kept together so a config
/// reload can change them all.
#[derive(Debug)]
pub struct ListenerCaps {
    pub total: Arc<ConnectionCap>,
    listeners: parking_lot::Mutex<Vec<(&'static str, Arc<ConnectionCap>)>>,
}

impl ListenerCaps {
    pub fn new(total: usize) -> Arc<ListenerCaps> {
        Arc::new(ListenerCaps {
            total: ConnectionCap::new(total),
            listeners: parking_lot::Mutex::new(Vec::new()),
        })
    }

    /// The cap of listener `name` (`None`: only the broker-wide one applies).
    pub fn register(&self, name: &'static str, limit: Option<usize>) -> Arc<ConnectionCap> {
        let cap = ConnectionCap::new(limit.unwrap_or(usize::MAX));
        self.listeners.lock().push((name, Arc::clone(&cap)));
        cap
    }

    /// Sets the broker-wide limit and each listener's from `limit_of(name)`.
    pub fn set_limits(&self, total: usize, limit_of: impl Fn(&str) -> Option<usize>) {
        self.total.set_limit(total);
        for (name, cap) in self.listeners.lock().iter() {
            cap.set_limit(limit_of(name).unwrap_or(usize::MAX));
        }
    }
}
