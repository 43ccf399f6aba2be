//! Subscription trie match cost with 1k / 100k / 1M subscriptions.
//!
//! One trie per (size, kind), built once and dropped before the next, so the 1M
//! groups stay within memory and build time. Each iteration matches one topic from a
//! rotating set of 1,024 (so the walk is not always the same cached path); every
//! topic matches exactly one subscription (or one shared group).
//!
//! Kinds (N = size):
//! - exact:  `site/{i%100}/dev/{i}/temp`,                 topic `site/{j%100}/dev/{j}/temp`
//! - plus:   `site/+/dev/{i}/temp`,                       topic `site/{x}/dev/{j}/temp`
//! - hash:   `site/{i%100}/dev/{i}/#`,                    topic `site/{j%100}/dev/{j}/temp/raw`
//! - shared: `$share/workers/site/{i/100}/#` (groups of 100), topic `site/{j/100}/dev/{j}/temp`
//!
//! Run: `cargo bench --bench trie` (add `-- exact` to filter).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tern::core::topic::Filter;
use tern::core::trie::SubscriptionTrie;

const SIZES: [(usize, &str); 3] = [(1_000, "1k"), (100_000, "100k"), (1_000_000, "1M")];
const QUERIES: usize = 1024;

#[derive(Clone, Copy)]
enum Kind {
    Exact,
    Plus,
    Hash,
    Shared,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Exact, Kind::Plus, Kind::Hash, Kind::Shared];

    fn name(self) -> &'static str {
        match self {
            Kind::Exact => "exact",
            Kind::Plus => "plus",
            Kind::Hash => "hash",
            Kind::Shared => "shared",
        }
    }

    fn filter(self, i: usize) -> String {
        match self {
            Kind::Exact => format!("site/{}/dev/{i}/temp", i % 100),
            Kind::Plus => format!("site/+/dev/{i}/temp"),
            Kind::Hash => format!("site/{}/dev/{i}/#", i % 100),
            Kind::Shared => format!("$share/workers/site/{}/#", i / 100),
        }
    }

    fn topic(self, j: usize) -> String {
        match self {
            Kind::Exact => format!("site/{}/dev/{j}/temp", j % 100),
            Kind::Plus => format!("site/{}/dev/{j}/temp", j % 7),
            Kind::Hash => format!("site/{}/dev/{j}/temp/raw", j % 100),
            Kind::Shared => format!("site/{}/dev/{j}/temp", j / 100),
        }
    }
}

/// A deterministic spread of indices in 0..n.
fn picks(n: usize) -> impl Iterator<Item = usize> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..QUERIES).map(move |_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    })
}

fn build(kind: Kind, n: usize) -> SubscriptionTrie<u32, u8> {
    let mut trie = SubscriptionTrie::new();
    for i in 0..n {
        let filter = Filter::parse(&kind.filter(i)).expect("valid filter");
        trie.insert(&filter, i as u32, 0u8);
    }
    trie
}

fn trie_match(c: &mut Criterion) {
    for (n, label) in SIZES {
        let mut group = c.benchmark_group(format!("trie_match/{label}"));
        group.throughput(Throughput::Elements(1));
        if n >= 1_000_000 {
            group.sample_size(10);
        }
        for kind in Kind::ALL {
            let trie = build(kind, n);
            assert_eq!(trie.len(), n);
            let topics: Vec<String> = picks(n).map(|j| kind.topic(j)).collect();
            let mut next = 0usize;
            group.bench_function(BenchmarkId::from_parameter(kind.name()), |b| {
                b.iter(|| {
                    let topic = &topics[next % QUERIES];
                    next = next.wrapping_add(1);
                    let mut matched = 0u32;
                    trie.for_each_match(black_box(topic), |key, _, _| {
                        matched = matched.wrapping_add(1);
                        black_box(key);
                    });
                    matched
                })
            });
        }
        group.finish();
    }
}

/// Building cost, so the match figures can be read next to what insertion costs.
fn trie_insert(c: &mut Criterion) {
    let mut group = c.benchmark_group("trie_insert");
    group.sample_size(10);
    let n = 100_000;
    group.throughput(Throughput::Elements(n as u64));
    for kind in [Kind::Exact, Kind::Plus] {
        let filters: Vec<Filter> = (0..n)
            .map(|i| Filter::parse(&kind.filter(i)).expect("valid filter"))
            .collect();
        group.bench_function(BenchmarkId::new(kind.name(), "100k"), |b| {
            b.iter(|| {
                let mut trie = SubscriptionTrie::new();
                for (i, f) in filters.iter().enumerate() {
                    trie.insert(f, i as u32, 0u8);
                }
                trie.len()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, trie_match, trie_insert);
criterion_main!(benches);
