//! The store test suite's stream cases (see `suite.rs`): appends, reads in
//! batches, trims, time lookups, named consumers and declarations, the same
//! on every backend. Record times are in the past (a backend may keep its
//! own, later, times next to them: the NATS one does).

use super::record::{unix_ms_now, MessageRecordRef, StreamRecordRef};
use super::suite::{restart, Open};
use super::{encode_stream_record, Backend, StoreOp};

/// Message `offset` of stream `stream`, published at `time_ms`.
pub(crate) fn append(stream: &str, offset: u64, time_ms: u64) -> StoreOp {
    append_payload(stream, offset, time_ms, b"1234567")
}

/// Message `offset` of stream `stream` on `t/1`, published at `time_ms`, with `payload`.
pub(crate) fn append_payload(stream: &str, offset: u64, time_ms: u64, payload: &[u8]) -> StoreOp {
    let size = 3 + payload.len() as u64;
    let record = StreamRecordRef {
        time_ms,
        size,
        message: MessageRecordRef {
            topic: "t/1",
            payload,
            qos: 0,
            retain: false,
            expires_at_ms: None,
            payload_is_utf8: false,
            content_type: None,
            response_topic: None,
            correlation_data: None,
            user_properties: &[],
            publisher: None,
        },
    };
    StoreOp::AppendStream {
        stream: stream.into(),
        offset,
        size,
        entry: encode_stream_record(&record).expect("encode"),
    }
}

fn offsets(b: &dyn Backend, stream: &str, from: u64, max: usize) -> Vec<u64> {
    let read = b.read_stream(stream, from, max).expect("read");
    read.iter().map(|(o, _)| *o).collect()
}

fn trim(stream: &str, below: u64) -> StoreOp {
    StoreOp::TrimStream {
        stream: stream.into(),
        below,
    }
}

fn consumer(stream: &str, name: &str, offset: u64) -> StoreOp {
    StoreOp::PutStreamConsumer {
        stream: stream.into(),
        consumer: name.into(),
        offset,
    }
}

pub(crate) fn stream_appends_trims_and_consumers_survive_a_restart(open: Open) {
    let t0 = unix_ms_now() - 100_000;
    let b = open();
    let ops: Vec<StoreOp> = (0..10).map(|i| append("s", i, t0 + i * 100)).collect();
    b.apply(&ops, true).unwrap();
    b.apply(&[trim("s", 4), consumer("s", "c", 6)], true)
        .unwrap();
    assert_eq!(offsets(&*b, "s", 0, 3), vec![4, 5, 6]);
    let read = b.read_stream("s", 4, 1).unwrap();
    assert_eq!(read[0].1.message.payload, b"1234567".to_vec());
    assert_eq!(read[0].1.time_ms, t0 + 400);
    let b = restart(b, open);
    let snap = b.load().unwrap();
    assert_eq!(snap.streams.len(), 1);
    let state = &snap.streams[0];
    assert_eq!((state.name.as_str(), state.first, state.next), ("s", 4, 10));
    assert!(state.bytes >= 60, "at least the six records' sizes");
    assert!(state.first_time_ms >= t0 + 400);
    assert_eq!(
        snap.stream_consumers,
        vec![("s".to_string(), "c".to_string(), 6)]
    );
    // Appends go on at the next offset.
    b.apply(&[append("s", 10, t0 + 1000)], true).unwrap();
    assert_eq!(offsets(&*b, "s", 9, 10), vec![9, 10]);
}

pub(crate) fn streams_read_in_batches_and_find_times(open: Open) {
    let t0 = unix_ms_now() - 100_000;
    let b = open();
    for c in 0..3u64 {
        let ops: Vec<StoreOp> = (c * 10..c * 10 + 10)
            .map(|i| append("s", i, t0 + i))
            .collect();
        b.apply(&ops, true).unwrap();
    }
    assert_eq!(offsets(&*b, "s", 8, 4), vec![8, 9, 10, 11]);
    assert_eq!(offsets(&*b, "s", 29, 10), vec![29]);
    assert!(offsets(&*b, "s", 30, 10).is_empty());
    // A replay: batch after batch from where the last ended.
    let mut from = 0;
    loop {
        let batch = offsets(&*b, "s", from, 7);
        let Some(last) = batch.last() else { break };
        assert_eq!(batch, (from..=*last).collect::<Vec<_>>());
        from = last + 1;
    }
    assert_eq!(from, 30);
    assert_eq!(b.find_stream_time("s", t0 + 15).unwrap(), Some(15));
    assert_eq!(b.find_stream_time("s", t0 + 29).unwrap(), Some(29));
    assert_eq!(b.find_stream_time("s", t0 + 30).unwrap(), None);
    assert_eq!(b.find_stream_time("other", 0).unwrap(), None);
    assert!(b.read_stream("other", 0, 10).unwrap().is_empty());
    b.apply(&[trim("s", 15)], true).unwrap();
    assert_eq!(offsets(&*b, "s", 0, 3), vec![15, 16, 17]);
    assert_eq!(b.find_stream_time("s", 0).unwrap(), Some(15));
}

pub(crate) fn a_purged_stream_keeps_its_next_offset(open: Open) {
    let t0 = unix_ms_now() - 100_000;
    let b = open();
    b.apply(&[append("p", 0, t0), append("p", 1, t0 + 1)], true)
        .unwrap();
    b.apply(&[trim("p", 2)], true).unwrap();
    let b = restart(b, open);
    let snap = b.load().unwrap();
    let state = &snap.streams[0];
    assert_eq!((state.first, state.next, state.bytes), (2, 2, 0));
    b.apply(&[append("p", 2, t0 + 2)], true).unwrap();
    assert_eq!(offsets(&*b, "p", 0, 10), vec![2]);
}

pub(crate) fn declarations_are_kept_and_a_deleted_stream_leaves_nothing(open: Open) {
    let t0 = unix_ms_now() - 100_000;
    let b = open();
    let declare = |name: &str| StoreOp::PutStreamDeclaration {
        stream: name.into(),
        settings: b"{}".to_vec(),
    };
    b.apply(&[declare("s"), declare("t"), append("s", 0, t0)], true)
        .unwrap();
    b.apply(&[consumer("s", "c", 0)], true).unwrap();
    let b = restart(b, open);
    let mut snap = b.load().unwrap();
    snap.stream_declarations.sort();
    assert_eq!(
        snap.stream_declarations,
        vec![("s".into(), b"{}".to_vec()), ("t".into(), b"{}".to_vec())]
    );
    b.apply(
        &[
            append("s", 1, t0 + 1),
            StoreOp::DeleteStream { stream: "s".into() },
            StoreOp::DeleteStreamDeclaration { stream: "t".into() },
        ],
        true,
    )
    .unwrap();
    let b = restart(b, open);
    let snap = b.load().unwrap();
    assert!(snap.stream_declarations.is_empty());
    assert!(snap.streams.is_empty(), "{:?}", snap.streams);
    assert!(snap.stream_consumers.is_empty());
    assert!(b.read_stream("s", 0, 10).unwrap().is_empty());
}
