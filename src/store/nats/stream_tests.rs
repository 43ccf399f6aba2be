//! Durable streams on the NATS backend beyond the store suite: a replay
//! longer than many read-ahead batches (by count and by bytes) reads every
//! record once, in order.

use super::tests::Fixture;
use crate::store::record::unix_ms_now;
use crate::store::suite_streams::append_payload;
use crate::store::StoreOp;

/// Record `offset` of stream `s` with a payload of `size` bytes.
fn big(offset: u64, size: usize) -> StoreOp {
    append_payload("s", offset, unix_ms_now(), &vec![b'x'; size])
}

#[test]
fn a_replay_of_many_batches_reads_every_record_once_in_order() {
    let f = Fixture::new();
    let b = f.open("tern-a", &[]);
    // 20,000 small ones (past the batch count), then 6,000 of 1 KiB (past its bytes).
    let n_small = 20_000u64;
    let n_big = 6_000u64;
    for chunk in (0..n_small).collect::<Vec<_>>().chunks(5_000) {
        let ops: Vec<StoreOp> = chunk.iter().map(|&o| big(o, 16)).collect();
        b.apply(&ops, true).unwrap();
    }
    for chunk in (n_small..n_small + n_big).collect::<Vec<_>>().chunks(2_000) {
        let ops: Vec<StoreOp> = chunk.iter().map(|&o| big(o, 1024)).collect();
        b.apply(&ops, true).unwrap();
    }
    let started = std::time::Instant::now();
    let mut next = 0;
    loop {
        let read = b.read_stream("s", next, 256).unwrap();
        if read.is_empty() {
            break;
        }
        for (offset, record) in read {
            assert_eq!(offset, next);
            let size = if offset < n_small { 16 } else { 1024 };
            assert_eq!(record.message.payload.len(), size);
            next += 1;
        }
    }
    assert_eq!(next, n_small + n_big);
    eprintln!("read {next} records in {:?}", started.elapsed());
}
