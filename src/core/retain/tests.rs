use std::collections::BTreeMap;

use proptest::prelude::*;

use super::RetainedIndex;
use crate::core::topic::Filter;

fn f(s: &str) -> Filter {
    match Filter::parse(s) {
        Ok(f) => f,
        Err(e) => panic!("{s:?} should parse: {e}"),
    }
}

fn index_of(topics: &[&str]) -> RetainedIndex<usize> {
    let mut idx = RetainedIndex::new();
    for (i, t) in topics.iter().enumerate() {
        idx.set(t, Some(i));
    }
    idx
}

fn matching(idx: &RetainedIndex<usize>, filter: &str) -> Vec<String> {
    let mut out = Vec::new();
    idx.for_each_match(&f(filter), |t, _| out.push(t.to_owned()));
    out.sort();
    out
}

fn sorted(items: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = items.iter().map(|s| (*s).to_owned()).collect();
    v.sort();
    v
}

#[test]
fn new_index_is_empty() {
    let idx: RetainedIndex<u8> = RetainedIndex::default();
    assert!(idx.is_empty());
    assert_eq!(idx.get("a"), None);
    assert!(matching(&index_of(&[]), "#").is_empty());
}

#[test]
fn set_stores_replaces_and_clears() {
    let mut idx = RetainedIndex::new();
    assert_eq!(idx.set("a/b", Some("one")), None);
    assert_eq!(idx.set("a/b", Some("two")), Some("one"));
    assert_eq!(idx.get("a/b"), Some(&"two"));
    assert_eq!(idx.get("a"), None);
    assert_eq!(idx.len(), 1);
    assert_eq!(idx.set("a/b", None), Some("two"));
    assert_eq!(idx.set("a/b", None), None);
    assert_eq!(idx.get("a/b"), None);
    assert!(idx.is_empty());
}

#[test]
fn invalid_topic_names_are_ignored() {
    let mut idx = RetainedIndex::new();
    for t in ["", "a/+", "#", "a\0"] {
        assert_eq!(idx.set(t, Some(1)), None);
        assert_eq!(idx.get(t), None);
    }
    assert!(idx.is_empty());
    assert_eq!(idx.live_nodes(), 1);
}

#[test]
fn empty_levels_are_distinct_topics() {
    let idx = index_of(&["a", "a/", "/a", "a//b", "/"]);
    assert_eq!(idx.get("a/"), Some(&1));
    assert_eq!(idx.get("/"), Some(&4));
    assert_eq!(matching(&idx, "a/+"), sorted(&["a/"]));
    assert_eq!(matching(&idx, "+/+"), sorted(&["a/", "/a", "/"]));
}

#[test]
fn plus_matches_exactly_one_level() {
    let idx = index_of(&["sport", "sport/tennis", "sport/tennis/player1", "sport/"]);
    assert_eq!(
        matching(&idx, "sport/+"),
        sorted(&["sport/tennis", "sport/"])
    );
    assert_eq!(matching(&idx, "+"), sorted(&["sport"]));
    assert_eq!(matching(&idx, "+/+/+"), sorted(&["sport/tennis/player1"]));
}

#[test]
fn hash_matches_parent_level() {
    let idx = index_of(&["sport", "sport/tennis", "sports"]);
    assert_eq!(
        matching(&idx, "sport/#"),
        sorted(&["sport", "sport/tennis"])
    );
    assert_eq!(
        matching(&idx, "+/#"),
        sorted(&["sport", "sport/tennis", "sports"])
    );
}

#[test]
fn spec_multi_level_wildcard_examples() {
    let idx = index_of(&[
        "sport/tennis/player1",
        "sport/tennis/player1/ranking",
        "sport/tennis/player1/score/wimbledon",
        "sport/tennis/player2",
        "sport",
    ]);
    assert_eq!(
        matching(&idx, "sport/tennis/player1/#"),
        sorted(&[
            "sport/tennis/player1",
            "sport/tennis/player1/ranking",
            "sport/tennis/player1/score/wimbledon",
        ])
    );
    assert_eq!(matching(&idx, "sport/#").len(), 5);
    assert_eq!(matching(&idx, "#").len(), 5);
}

#[test]
fn spec_single_level_wildcard_examples() {
    let idx = index_of(&["/finance", "finance"]);
    assert_eq!(matching(&idx, "+/+"), sorted(&["/finance"]));
    assert_eq!(matching(&idx, "/+"), sorted(&["/finance"]));
    assert_eq!(matching(&idx, "+"), sorted(&["finance"]));
}

#[test]
fn dollar_topics_not_matched_by_leading_wildcard() {
    let idx = index_of(&["$SYS/monitor/Clients", "$SYS", "a/monitor/Clients", "a/$x"]);
    assert_eq!(matching(&idx, "#"), sorted(&["a/monitor/Clients", "a/$x"]));
    assert_eq!(
        matching(&idx, "+/monitor/Clients"),
        sorted(&["a/monitor/Clients"])
    );
    assert!(matching(&idx, "+").is_empty());
    assert_eq!(
        matching(&idx, "$SYS/#"),
        sorted(&["$SYS/monitor/Clients", "$SYS"])
    );
    assert_eq!(matching(&idx, "a/+"), sorted(&["a/$x"]));
}

#[test]
fn shared_filter_matches_with_its_topic_filter() {
    let idx = index_of(&["a/b", "c"]);
    assert_eq!(matching(&idx, "$share/g/a/+"), sorted(&["a/b"]));
    assert_eq!(matching(&idx, "$share/g/#"), sorted(&["a/b", "c"]));
}

#[test]
fn for_each_visits_every_entry() {
    let mut idx = index_of(&["a", "a/b", "$SYS/x", "/"]);
    idx.set("a", None);
    let mut all = BTreeMap::new();
    idx.for_each(|t, v| {
        all.insert(t.to_owned(), *v);
    });
    let expected: BTreeMap<String, usize> = [("a/b", 1), ("$SYS/x", 2), ("/", 3)]
        .iter()
        .map(|(t, v)| ((*t).to_owned(), *v))
        .collect();
    assert_eq!(all, expected);
}

#[test]
fn clearing_prunes_empty_branches() {
    let mut idx = RetainedIndex::new();
    let topics = ["a/b/c/d", "a/b", "a//b", "/", "$SYS/x/y", "z"];
    for round in 0..3usize {
        for (i, t) in topics.iter().enumerate() {
            idx.set(t, Some(i + round));
        }
        for (i, t) in topics.iter().enumerate() {
            assert_eq!(idx.set(t, None), Some(i + round));
        }
        assert!(idx.is_empty());
        assert_eq!(idx.live_nodes(), 1, "only the root remains");
    }
    assert!(idx.nodes.len() < 20, "{}", idx.nodes.len());
}

#[test]
fn clearing_a_parent_keeps_children() {
    let mut idx = index_of(&["a", "a/b"]);
    idx.set("a", None);
    assert_eq!(idx.get("a/b"), Some(&1));
    assert_eq!(matching(&idx, "a/#"), sorted(&["a/b"]));
    idx.set("a/b", None);
    assert_eq!(idx.live_nodes(), 1);
}

#[test]
fn deep_topics_do_not_overflow_the_stack() {
    let deep = format!("x{}", "/".repeat(60_000));
    let mut idx = RetainedIndex::new();
    idx.set(&deep, Some(1u8));
    assert_eq!(idx.get(&deep), Some(&1));
    let mut n = 0;
    idx.for_each_match(&f("#"), |_, _| n += 1);
    idx.for_each_match(&f(&deep), |_, _| n += 1);
    assert_eq!(n, 2);
    assert_eq!(idx.set(&deep, None), Some(1));
    assert_eq!(idx.live_nodes(), 1);
    idx.set(&deep, Some(2));
    drop(idx);
}

// ---- property test against `Filter::matches` ----

fn level() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("a"), Just("b"), Just("$x"), Just("")]
}

fn filter_level() -> impl Strategy<Value = &'static str> {
    prop_oneof![3 => level(), 1 => Just("+"), 1 => Just("#")]
}

fn filter_text() -> impl Strategy<Value = String> {
    (prop::collection::vec(filter_level(), 1..5), any::<bool>()).prop_map(|(levels, shared)| {
        let last = levels.len() - 1;
        let levels: Vec<&str> = levels
            .iter()
            .enumerate()
            .map(|(i, l)| if *l == "#" && i != last { "+" } else { *l })
            .collect();
        let mut text = levels.join("/");
        if text.is_empty() {
            text = "a".into();
        }
        if shared {
            format!("$share/g/{text}")
        } else {
            text
        }
    })
}

fn topic_text() -> impl Strategy<Value = String> {
    prop::collection::vec(level(), 1..5).prop_map(|l| {
        let t = l.join("/");
        if t.is_empty() {
            "a".into()
        } else {
            t
        }
    })
}

proptest! {
    #[test]
    fn retained_matches_agree_with_filter_matches(
        ops in prop::collection::vec((topic_text(), prop::option::weighted(0.7, 0u32..100)), 0..40),
        filters in prop::collection::vec(filter_text(), 1..8),
    ) {
        let mut idx = RetainedIndex::new();
        let mut model: BTreeMap<String, u32> = BTreeMap::new();
        for (topic, value) in &ops {
            let prev = idx.set(topic, *value);
            let expected = match value {
                Some(v) => model.insert(topic.clone(), *v),
                None => model.remove(topic),
            };
            prop_assert_eq!(prev, expected);
        }
        prop_assert_eq!(idx.len(), model.len());
        for (topic, value) in &model {
            prop_assert_eq!(idx.get(topic), Some(value));
        }
        for text in &filters {
            let filter = f(text);
            let mut got = Vec::new();
            idx.for_each_match(&filter, |t, v| got.push((t.to_owned(), *v)));
            got.sort();
            let expected: Vec<(String, u32)> = model
                .iter()
                .filter(|(t, _)| filter.matches(t))
                .map(|(t, v)| (t.clone(), *v))
                .collect();
            prop_assert_eq!(got, expected);
        }
        for topic in model.keys() {
            prop_assert!(idx.set(topic, None).is_some());
        }
        prop_assert_eq!(idx.live_nodes(), 1);
    }
}
