//! Retained-message lookup by wildcard over 100k retained topics.
//!
//! Topics: `site/{s}/dev/{d}/temp` for 100 sites x 1,000 devices. Throughput is
//! counted in matched messages, so wide and narrow filters can be compared.
//!
//! Run: `cargo bench --bench retain`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tern::core::retain::RetainedIndex;
use tern::core::topic::Filter;

const SITES: usize = 100;
const DEVICES: usize = 1_000;

fn build() -> RetainedIndex<u32> {
    let mut index = RetainedIndex::new();
    for s in 0..SITES {
        for d in 0..DEVICES {
            index.set(
                &format!("site/{s}/dev/{d}/temp"),
                Some((s * DEVICES + d) as u32),
            );
        }
    }
    index
}

fn retained_lookup(c: &mut Criterion) {
    let index = build();
    assert_eq!(index.len(), SITES * DEVICES);
    let cases: [(&str, &str, u64); 6] = [
        ("exact", "site/42/dev/7/temp", 1),
        ("one_site_plus", "site/42/dev/+/temp", DEVICES as u64),
        ("one_device_all_sites", "site/+/dev/7/temp", SITES as u64),
        ("one_site_hash", "site/42/#", DEVICES as u64),
        ("no_match_plus", "+/+/+/+/humidity", 0),
        ("everything_hash", "#", (SITES * DEVICES) as u64),
    ];
    let mut group = c.benchmark_group("retained_100k");
    for (name, filter, expected) in cases {
        let filter = Filter::parse(filter).expect("valid filter");
        let mut found = 0u64;
        index.for_each_match(&filter, |_, _| found += 1);
        assert_eq!(found, expected, "{name}");
        group.throughput(Throughput::Elements(expected.max(1)));
        if expected > 10_000 {
            group.sample_size(20);
        }
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                let mut n = 0u64;
                index.for_each_match(black_box(&filter), |topic, v| {
                    n += 1;
                    black_box((topic, v));
                });
                n
            })
        });
    }
    group.finish();
}

criterion_group!(benches, retained_lookup);
criterion_main!(benches);
