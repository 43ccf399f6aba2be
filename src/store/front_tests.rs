//! The group commit's bounds: a backend's `max_batch` splits a backlog into
//! several commits (whole submissions each), acknowledged one by one; a
//! trailer goes into the first commit that holds what it was made from; past
//! `BACKLOG_LIMIT` waiting operations, `wait_room` holds until they are
//! committed; a lingering commit (`Backend::linger`) ends when submissions stop.

use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use super::{Backend, Durability, Snapshot, Store, StoreError, StoreOp};

/// Records the size of every commit; holds commits while its gate is shut.
#[derive(Default)]
struct Recorder {
    sizes: Mutex<Vec<usize>>,
    /// The packet ids of every commit's operations.
    ids: Mutex<Vec<Vec<u16>>>,
    open: Mutex<bool>,
    opened: Condvar,
}

impl Backend for Recorder {
    fn apply(&self, ops: &[StoreOp], _fsync: bool) -> Result<i64, StoreError> {
        let mut open = self.open.lock();
        while !*open {
            self.opened.wait(&mut open);
        }
        self.sizes.lock().push(ops.len());
        let ids = ops.iter().map(|op| match op {
            StoreOp::DeleteIncomingQos2 { packet_id, .. } => *packet_id,
            _ => u16::MAX,
        });
        self.ids.lock().push(ids.collect());
        Ok(0)
    }

    fn load(&self) -> Result<Snapshot, StoreError> {
        Ok(Snapshot::default())
    }

    fn max_batch(&self) -> usize {
        3
    }
}

fn op(n: u16) -> StoreOp {
    StoreOp::DeleteIncomingQos2 {
        client_id: "c".into(),
        packet_id: n,
    }
}

/// Commits op 0, then, once the writer holds that commit, a backlog of
/// four submissions of two; returns the store once all is committed.
fn commit_a_backlog(backend: &Arc<Recorder>, trailer: Option<super::Trailer>) -> Arc<Store> {
    let store = Store::start(backend.clone(), Durability::Batched);
    if let Some(trailer) = trailer {
        store.set_trailer(trailer);
    }
    store.submit([op(0)]);
    // The writer holds the first commit at the gate; a backlog builds up.
    while store.pending.lock().ends.len() == 1 {
        std::thread::yield_now();
    }
    let mut last = 0;
    for n in 1..=4 {
        last = store.submit([op(2 * n), op(2 * n + 1)]);
    }
    *backend.open.lock() = true;
    backend.opened.notify_all();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(store.wait(last)).expect("committed");
    store
}

#[test]
fn a_backlog_is_committed_in_pieces_of_the_backends_max_batch() {
    let backend = Arc::new(Recorder::default());
    commit_a_backlog(&backend, None);
    assert_eq!(*backend.sizes.lock(), vec![1, 4, 4]);
}

#[test]
fn a_trailer_goes_into_the_first_commit_holding_everything_submitted_before_it_was_made() {
    let backend = Arc::new(Recorder::default());
    let trailer: super::Trailer = Box::new(|| Some(op(999)));
    commit_a_backlog(&backend, Some(trailer));
    assert_eq!(
        *backend.ids.lock(),
        vec![vec![0, 999], vec![2, 3, 4, 5], vec![6, 7, 8, 9, 999]],
        "the second trailer was made with the backlog waiting: it waits for all of it"
    );
}

#[test]
fn past_the_backlog_limit_room_comes_once_the_waiting_operations_are_committed() {
    let backend = Arc::new(Recorder::default());
    let store = Store::start(backend.clone(), Durability::Batched);
    store.submit([op(0)]);
    while store.pending.lock().ends.len() == 1 {
        std::thread::yield_now();
    }
    assert!(store.wait_room().is_none(), "one operation waits");
    store.submit((0..super::BACKLOG_LIMIT).map(|n| op(n as u16)));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let room = store.wait_room().expect("over the limit: wait");
    *backend.open.lock() = true;
    backend.opened.notify_all();
    runtime.block_on(room);
    assert!(store.is_committed(store.last_ticket()).expect("healthy"));
    assert!(store.wait_room().is_none(), "room again");
}

/// Records commit sizes; a busy commit may linger up to a second.
#[derive(Default)]
struct Lingering {
    sizes: Mutex<Vec<usize>>,
}

impl Backend for Lingering {
    fn apply(&self, ops: &[StoreOp], _fsync: bool) -> Result<i64, StoreError> {
        self.sizes.lock().push(ops.len());
        Ok(0)
    }

    fn load(&self) -> Result<Snapshot, StoreError> {
        Ok(Snapshot::default())
    }

    fn linger(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_secs(1))
    }
}

/// A store on `backend` that has committed one batch big enough to linger after.
fn after_a_busy_commit(backend: &Arc<Lingering>) -> (Arc<Store>, tokio::runtime::Runtime) {
    let store = Store::start(backend.clone(), Durability::Batched);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let ticket = store.submit((0..100).map(op));
    runtime.block_on(store.wait(ticket)).expect("committed");
    (store, runtime)
}

#[test]
fn a_lingering_commit_ends_when_no_more_submissions_come() {
    let backend = Arc::new(Lingering::default());
    let (store, runtime) = after_a_busy_commit(&backend);
    // A lone submission after it: committed after a quiet gap, not after
    // the whole linger or never.
    let ticket = store.submit([op(100)]);
    runtime.block_on(store.wait(ticket)).expect("committed");
    assert_eq!(*backend.sizes.lock(), vec![100, 1]);
}

#[test]
fn closing_a_lingering_store_commits_what_waits() {
    let backend = Arc::new(Lingering::default());
    let (store, _runtime) = after_a_busy_commit(&backend);
    let ticket = store.submit([op(100), op(101)]);
    store.close();
    assert!(store.is_committed(ticket).expect("healthy"));
    assert_eq!(backend.sizes.lock().iter().sum::<usize>(), 102);
}
