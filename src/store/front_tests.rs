//! The group commit's bounds: a backend's `max_batch` splits a backlog into
//! several commits (whole submissions each), acknowledged one by one; past
//! `BACKLOG_LIMIT` waiting operations, `wait_room` holds until they are committed.

use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use super::{Backend, Durability, Snapshot, Store, StoreError, StoreOp};

/// Records the size of every commit; holds commits while its gate is shut.
#[derive(Default)]
struct Recorder {
    sizes: Mutex<Vec<usize>>,
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

#[test]
fn a_backlog_is_committed_in_pieces_of_the_backends_max_batch() {
    let backend = Arc::new(Recorder::default());
    let store = Store::start(backend.clone(), Durability::Batched);
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
    assert_eq!(*backend.sizes.lock(), vec![1, 4, 4]);
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
