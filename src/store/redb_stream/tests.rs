//! The redb stream tables: appends, trims, consumers, declarations, reads
//! across chunks and time lookups.

use std::path::PathBuf;

use crate::store::redb::RedbBackend;
use crate::store::{Backend, StoreOp};

use super::*;

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tern-stream-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir.join("tern.redb")
}

fn append(offset: u64, time_ms: u64) -> StoreOp {
    crate::store::suite_streams::append("s", offset, time_ms)
}

#[test]
fn appends_trims_and_consumers_survive_reopen_with_bytes_and_offsets() {
    let path = temp_path("reopen");
    {
        let b = RedbBackend::open(&path).unwrap();
        let ops: Vec<StoreOp> = (0..10).map(|i| append(i, 1000 + i * 100)).collect();
        b.apply(&ops, true).unwrap();
        b.apply(
            &[
                StoreOp::TrimStream {
                    stream: "s".into(),
                    below: 4,
                },
                StoreOp::PutStreamConsumer {
                    stream: "s".into(),
                    consumer: "c".into(),
                    offset: 6,
                },
            ],
            true,
        )
        .unwrap();
        let read = b.read_stream("s", 0, 3).unwrap();
        assert_eq!(
            read.iter().map(|(o, _)| *o).collect::<Vec<_>>(),
            vec![4, 5, 6]
        );
        assert_eq!(read[0].1.message.payload, b"1234567".to_vec());
    }
    let b = RedbBackend::open(&path).unwrap();
    let snap = b.load().unwrap();
    assert_eq!(
        snap.streams,
        vec![StreamState {
            name: "s".into(),
            first: 4,
            next: 10,
            bytes: 60,
            first_time_ms: 1400,
        }]
    );
    assert_eq!(
        snap.stream_consumers,
        vec![("s".to_string(), "c".to_string(), 6)]
    );
}

#[test]
fn declarations_are_kept_and_a_deleted_stream_leaves_nothing() {
    let path = temp_path("declared");
    let b = RedbBackend::open(&path).unwrap();
    let declare = |name: &str| StoreOp::PutStreamDeclaration {
        stream: name.into(),
        settings: b"{}".to_vec(),
    };
    b.apply(&[declare("s"), declare("t"), append(0, 1)], true)
        .unwrap();
    b.apply(
        &[StoreOp::PutStreamConsumer {
            stream: "s".into(),
            consumer: "c".into(),
            offset: 0,
        }],
        true,
    )
    .unwrap();
    let snap = b.load().unwrap();
    assert_eq!(snap.stream_declarations.len(), 2);
    b.apply(
        &[
            append(1, 2),
            StoreOp::DeleteStream { stream: "s".into() },
            StoreOp::DeleteStreamDeclaration { stream: "t".into() },
        ],
        true,
    )
    .unwrap();
    let snap = b.load().unwrap();
    assert!(snap.stream_declarations.is_empty());
    assert!(snap.streams.is_empty());
    assert!(snap.stream_consumers.is_empty());
    assert!(b.read_stream("s", 0, 10).unwrap().is_empty());
}

#[test]
fn chunks_of_several_commits_read_trim_and_search_as_one_stream() {
    let path = temp_path("chunks");
    let b = RedbBackend::open(&path).unwrap();
    // Three commits, three chunks: 0..10, 10..20, 20..30.
    for c in 0..3u64 {
        let ops: Vec<StoreOp> = (c * 10..c * 10 + 10).map(|i| append(i, 1000 + i)).collect();
        b.apply(&ops, true).unwrap();
    }
    let offsets = |from, max| {
        b.read_stream("s", from, max)
            .unwrap()
            .iter()
            .map(|(o, _)| *o)
            .collect::<Vec<_>>()
    };
    assert_eq!(offsets(8, 4), vec![8, 9, 10, 11]);
    // A batch that ends exactly at a chunk's end, one that starts at a
    // chunk's first offset, one over every chunk.
    assert_eq!(offsets(5, 5), (5..10).collect::<Vec<_>>());
    assert_eq!(offsets(10, 10), (10..20).collect::<Vec<_>>());
    assert_eq!(offsets(3, 100), (3..30).collect::<Vec<_>>());
    assert_eq!(offsets(29, 10), vec![29]);
    assert_eq!(b.find_stream_time("s", 1015).unwrap(), Some(15));
    assert_eq!(b.find_stream_time("s", 1029).unwrap(), Some(29));
    b.apply(
        &[StoreOp::TrimStream {
            stream: "s".into(),
            below: 15,
        }],
        true,
    )
    .unwrap();
    assert_eq!(offsets(0, 3), vec![15, 16, 17]);
    let snap = b.load().unwrap();
    let state = &snap.streams[0];
    assert_eq!((state.first, state.next, state.bytes), (15, 30, 150));
    assert_eq!(state.first_time_ms, 1015);
    assert_eq!(b.find_stream_time("s", 0).unwrap(), Some(15));
}

#[test]
fn a_purged_stream_keeps_its_next_offset() {
    let path = temp_path("purged");
    let b = RedbBackend::open(&path).unwrap();
    b.apply(&[append(0, 1), append(1, 2)], true).unwrap();
    b.apply(
        &[StoreOp::TrimStream {
            stream: "s".into(),
            below: 2,
        }],
        true,
    )
    .unwrap();
    let snap = b.load().unwrap();
    assert_eq!((snap.streams[0].first, snap.streams[0].next), (2, 2));
    assert_eq!(snap.streams[0].bytes, 0);
}

#[test]
fn time_lookup_finds_the_first_message_at_or_after_a_time() {
    let path = temp_path("time");
    let b = RedbBackend::open(&path).unwrap();
    let ops: Vec<StoreOp> = (0..100).map(|i| append(i, 1000 + i * 10)).collect();
    b.apply(&ops, true).unwrap();
    assert_eq!(b.find_stream_time("s", 0).unwrap(), Some(0));
    assert_eq!(b.find_stream_time("s", 1000).unwrap(), Some(0));
    assert_eq!(b.find_stream_time("s", 1001).unwrap(), Some(1));
    assert_eq!(b.find_stream_time("s", 1500).unwrap(), Some(50));
    assert_eq!(b.find_stream_time("s", 1990).unwrap(), Some(99));
    assert_eq!(b.find_stream_time("s", 1991).unwrap(), None);
    assert_eq!(b.find_stream_time("other", 0).unwrap(), None);
}

#[test]
fn a_stream_bigger_than_the_page_cache_reads_back_whole() {
    let path = temp_path("small-cache");
    let b = RedbBackend::open_with_cache(&path, 1 << 20).unwrap();
    for commit in 0..40 {
        let ops: Vec<StoreOp> = (0..1000).map(|i| append(commit * 1000 + i, 1)).collect();
        b.apply(&ops, true).unwrap();
    }
    let mut from = 0;
    loop {
        let batch = b.read_stream("s", from, 256).unwrap();
        if batch.is_empty() {
            break;
        }
        for (offset, entry) in &batch {
            assert_eq!(
                (*offset, &entry.message.payload[..]),
                (from, &b"1234567"[..])
            );
            from += 1;
        }
    }
    assert_eq!(from, 40_000);
}
