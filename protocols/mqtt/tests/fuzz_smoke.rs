//! Runs the fuzz target's check (fuzz/src/lib.rs) on random and mutated inputs, so the
//! no-panic and re-encode properties are exercised by `cargo test` without libFuzzer.

mod common;
#[path = "../fuzz/src/lib.rs"]
mod fuzz_check;

use bytes::BytesMut;
use proptest::collection::vec;
use proptest::prelude::*;
use tern_mqtt::encode;

/// One edit applied to an encoded packet stream.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Remove),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    match *m {
        Mutation::Flip(i, b) => {
            let i = i % bytes.len();
            bytes[i] ^= b;
        }
        Mutation::Insert(i, b) => bytes.insert(i % (bytes.len() + 1), b),
        Mutation::Remove(i) => {
            bytes.remove(i % bytes.len());
        }
        Mutation::Truncate(i) => bytes.truncate(i % bytes.len()),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn random_bytes_never_break_the_codec(data in vec(any::<u8>(), 0..96)) {
        fuzz_check::check(&data);
    }

    #[test]
    fn mutated_valid_streams_never_break_the_codec(
        (v, packets) in common::version()
            .prop_flat_map(|v| (Just(v), vec(common::packet(v), 1..4))),
        mutations in vec(mutation(), 1..4),
    ) {
        let mut wire = BytesMut::new();
        for p in &packets {
            encode(p, v, &mut wire).unwrap();
        }
        let mut bytes = wire.to_vec();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        fuzz_check::check(&bytes);
    }
}
