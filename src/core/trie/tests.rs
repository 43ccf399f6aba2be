use std::collections::{BTreeMap, BTreeSet, HashMap};

use proptest::prelude::*;

use super::SubscriptionTrie;
use crate::core::topic::Filter;

fn f(s: &str) -> Filter {
    match Filter::parse(s) {
        Ok(f) => f,
        Err(e) => panic!("{s:?} should parse: {e}"),
    }
}

/// (filter text, key) pairs visited for `topic`, sorted.
fn matches<V: Clone>(trie: &SubscriptionTrie<u32, V>, topic: &str) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    trie.for_each_match(topic, |k, _, filter| {
        out.push((filter.as_str().to_owned(), *k))
    });
    out.sort();
    out
}

fn pairs(items: &[(&str, u32)]) -> Vec<(String, u32)> {
    let mut v: Vec<_> = items.iter().map(|(s, k)| ((*s).to_owned(), *k)).collect();
    v.sort();
    v
}

fn trie_of(filters: &[&str]) -> SubscriptionTrie<u32, ()> {
    let mut trie = SubscriptionTrie::new();
    for (i, s) in filters.iter().enumerate() {
        trie.insert(&f(s), i as u32, ());
    }
    trie
}

#[test]
fn new_trie_is_empty_and_matches_nothing() {
    let trie: SubscriptionTrie<u32, ()> = SubscriptionTrie::default();
    assert!(trie.is_empty());
    assert_eq!(trie.len(), 0);
    assert!(matches(&trie, "a").is_empty());
}

#[test]
fn insert_returns_previous_value_for_same_filter_and_key() {
    let mut trie = SubscriptionTrie::new();
    assert_eq!(trie.insert(&f("a/+"), 1u32, "qos0"), None);
    assert_eq!(trie.insert(&f("a/+"), 1, "qos1"), Some("qos0"));
    assert_eq!(trie.insert(&f("a/+"), 2, "qos2"), None);
    assert_eq!(trie.insert(&f("a/#"), 1, "qos0"), None);
    assert_eq!(trie.len(), 3);
    let mut seen = Vec::new();
    trie.for_each_match("a/b", |k, v, filter| {
        seen.push((*k, *v, filter.as_str().to_owned()))
    });
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (1, "qos0", "a/#".to_owned()),
            (1, "qos1", "a/+".to_owned()),
            (2, "qos2", "a/+".to_owned())
        ]
    );
}

#[test]
fn exact_filters_match_only_their_topic() {
    let trie = trie_of(&["a/b", "a", "a/b/c", "a//b", "a/b/"]);
    assert_eq!(matches(&trie, "a/b"), pairs(&[("a/b", 0)]));
    assert_eq!(matches(&trie, "a//b"), pairs(&[("a//b", 3)]));
    assert_eq!(matches(&trie, "a/b/"), pairs(&[("a/b/", 4)]));
    assert!(matches(&trie, "b").is_empty());
}

#[test]
fn plus_matches_exactly_one_level() {
    let trie = trie_of(&["sport/tennis/+", "+", "+/+"]);
    assert_eq!(
        matches(&trie, "sport/tennis/player1"),
        pairs(&[("sport/tennis/+", 0)])
    );
    assert_eq!(
        matches(&trie, "sport/tennis/"),
        pairs(&[("sport/tennis/+", 0)])
    );
    assert!(matches(&trie, "sport/tennis/player1/ranking").is_empty());
    assert_eq!(matches(&trie, "sport/tennis"), pairs(&[("+/+", 2)]));
    assert_eq!(matches(&trie, "sport"), pairs(&[("+", 1)]));
}

#[test]
fn hash_matches_parent_level() {
    let trie = trie_of(&["sport/#", "+/#"]);
    assert_eq!(
        matches(&trie, "sport"),
        pairs(&[("sport/#", 0), ("+/#", 1)])
    );
    assert_eq!(matches(&trie, "other"), pairs(&[("+/#", 1)]));
}

#[test]
fn spec_multi_level_wildcard_examples() {
    let trie = trie_of(&["sport/tennis/player1/#", "sport/#", "#"]);
    let all = pairs(&[("sport/tennis/player1/#", 0), ("sport/#", 1), ("#", 2)]);
    assert_eq!(matches(&trie, "sport/tennis/player1"), all);
    assert_eq!(matches(&trie, "sport/tennis/player1/ranking"), all);
    assert_eq!(matches(&trie, "sport/tennis/player1/score/wimbledon"), all);
    assert_eq!(matches(&trie, "sport"), pairs(&[("sport/#", 1), ("#", 2)]));
    assert_eq!(matches(&trie, "/finance"), pairs(&[("#", 2)]));
}

#[test]
fn spec_single_level_wildcard_examples() {
    let trie = trie_of(&["+/+", "/+", "+"]);
    assert_eq!(matches(&trie, "/finance"), pairs(&[("+/+", 0), ("/+", 1)]));
    assert_eq!(matches(&trie, "finance"), pairs(&[("+", 2)]));
}

#[test]
fn dollar_topics_not_matched_by_leading_wildcard() {
    let trie = trie_of(&["#", "+/monitor/Clients", "$SYS/#", "$SYS/monitor/+", "+"]);
    assert_eq!(
        matches(&trie, "$SYS/monitor/Clients"),
        pairs(&[("$SYS/#", 2), ("$SYS/monitor/+", 3)])
    );
    assert!(matches(&trie, "$SYS").iter().all(|(s, _)| s == "$SYS/#"));
    assert_eq!(
        matches(&trie, "a/monitor/Clients"),
        pairs(&[("#", 0), ("+/monitor/Clients", 1)])
    );
    // '$' in a later level is ordinary.
    assert_eq!(matches(&trie, "a/$x"), pairs(&[("#", 0)]));
}

#[test]
fn dollar_rule_applies_to_shared_subscriptions() {
    let trie = trie_of(&["$share/g/#", "$share/g/$SYS/#"]);
    assert_eq!(matches(&trie, "$SYS/x"), pairs(&[("$share/g/$SYS/#", 1)]));
}

#[test]
fn overlapping_filters_visit_key_once_per_filter() {
    let mut trie = SubscriptionTrie::new();
    trie.insert(&f("a/+"), 7u32, ());
    trie.insert(&f("a/#"), 7, ());
    trie.insert(&f("a/b"), 7, ());
    assert_eq!(
        matches(&trie, "a/b"),
        pairs(&[("a/+", 7), ("a/#", 7), ("a/b", 7)])
    );
}

#[test]
fn shared_group_round_robins_between_members() {
    let mut trie = SubscriptionTrie::new();
    for k in 0..3u32 {
        trie.insert(&f("$share/g/jobs/+"), k, ());
    }
    let mut counts: HashMap<u32, usize> = HashMap::new();
    for _ in 0..30 {
        let got = matches(&trie, "jobs/1");
        assert_eq!(got.len(), 1, "exactly one member per group: {got:?}");
        assert_eq!(got[0].0, "$share/g/jobs/+");
        *counts.entry(got[0].1).or_default() += 1;
    }
    assert_eq!(counts.len(), 3);
    assert!(counts.values().all(|&c| c == 10), "{counts:?}");
}

#[test]
fn shared_groups_are_identified_by_group_and_filter() {
    let trie = trie_of(&[
        "$share/g/a/+",
        "$share/g/a/#",
        "$share/h/a/+",
        "$share/g/a/+",
    ]);
    // Keys 0 and 3 form one group; each of the others is its own group.
    let got = matches(&trie, "a/b");
    assert_eq!(got.len(), 3, "{got:?}");
    let filters: BTreeSet<_> = got.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        filters,
        BTreeSet::from(["$share/g/a/+", "$share/g/a/#", "$share/h/a/+"])
    );
}

#[test]
fn shared_and_plain_subscriptions_coexist() {
    let trie = trie_of(&["a/b", "$share/g/a/b", "$share/g/a/b", "a/b"]);
    let got = matches(&trie, "a/b");
    assert_eq!(got.iter().filter(|(s, _)| s == "a/b").count(), 2);
    assert_eq!(got.iter().filter(|(s, _)| s == "$share/g/a/b").count(), 1);
}

#[test]
fn remove_shared_member_keeps_group_for_others() {
    let mut trie = SubscriptionTrie::new();
    let g = f("$share/g/t");
    for k in 0..3u32 {
        trie.insert(&g, k, k * 10);
    }
    assert_eq!(trie.remove(&g, &1), Some(10));
    assert_eq!(trie.remove(&g, &1), None);
    let mut seen = BTreeSet::new();
    for _ in 0..4 {
        trie.for_each_match("t", |k, v, _| {
            assert_eq!(*v, *k * 10);
            seen.insert(*k);
        });
    }
    assert_eq!(seen, BTreeSet::from([0, 2]));
    assert_eq!(trie.insert(&g, 2, 99), Some(20));
    assert_eq!(trie.len(), 2);
}

#[test]
fn remove_returns_value_and_stops_matching() {
    let mut trie = SubscriptionTrie::new();
    trie.insert(&f("a/+"), 1u32, 'x');
    trie.insert(&f("a/+"), 2, 'y');
    assert_eq!(trie.remove(&f("a/+"), &1), Some('x'));
    assert_eq!(matches(&trie, "a/b"), pairs(&[("a/+", 2)]));
    assert_eq!(trie.len(), 1);
}

#[test]
fn remove_of_unknown_subscription_returns_none() {
    let mut trie = trie_of(&["a/b"]);
    assert_eq!(trie.remove(&f("a/b"), &9), None);
    assert_eq!(trie.remove(&f("a/c"), &0), None);
    assert_eq!(trie.remove(&f("a/#"), &0), None);
    assert_eq!(trie.remove(&f("$share/g/a/b"), &0), None);
    assert_eq!(trie.len(), 1);
}

#[test]
fn one_subscriber_grows_to_many_and_shrinks_back_to_none() {
    let mut trie = SubscriptionTrie::new();
    assert_eq!(trie.insert(&f("d/1"), 1u32, 'a'), None);
    assert_eq!(
        trie.insert(&f("d/1"), 1, 'b'),
        Some('a'),
        "same key replaces"
    );
    assert_eq!(trie.insert(&f("d/1"), 2, 'c'), None, "a second key");
    assert_eq!(trie.insert(&f("d/1"), 3, 'd'), None);
    assert_eq!(
        matches(&trie, "d/1"),
        pairs(&[("d/1", 1), ("d/1", 2), ("d/1", 3)])
    );
    assert_eq!(trie.remove(&f("d/1"), &1), Some('b'));
    assert_eq!(trie.remove(&f("d/1"), &3), Some('d'));
    assert_eq!(matches(&trie, "d/1"), pairs(&[("d/1", 2)]));
    assert_eq!(trie.remove(&f("d/1"), &2), Some('c'));
    assert_eq!(trie.remove(&f("d/1"), &2), None);
    assert!(trie.is_empty());
    assert!(matches(&trie, "d/1").is_empty());
    // A lone subscriber removed leaves nothing behind either.
    trie.insert(&f("d/2"), 7, 'e');
    assert_eq!(
        trie.remove(&f("d/2"), &8),
        None,
        "another key is not removed"
    );
    assert_eq!(trie.remove(&f("d/2"), &7), Some('e'));
    assert!(trie.is_empty());
}

#[test]
fn remove_prunes_empty_nodes() {
    let mut trie = SubscriptionTrie::new();
    let filters = [
        "a/b/c/d",
        "a/+/c",
        "a/#",
        "#",
        "+/+/#",
        "/",
        "$share/g/a/b/x",
        "a//b",
    ];
    for round in 0..3 {
        for (i, s) in filters.iter().enumerate() {
            trie.insert(&f(s), i as u32, round);
        }
        assert!(trie.live_nodes() > 1);
        for (i, s) in filters.iter().enumerate() {
            assert_eq!(trie.remove(&f(s), &(i as u32)), Some(round));
        }
        assert!(trie.is_empty());
        assert_eq!(trie.live_nodes(), 1, "only the root remains");
    }
    // Slots were reused rather than grown each round.
    assert!(trie.nodes.len() < 20, "{}", trie.nodes.len());
}

#[test]
fn partial_remove_keeps_shared_prefix() {
    let mut trie = trie_of(&["a/b/c", "a/b"]);
    trie.remove(&f("a/b/c"), &0);
    assert_eq!(trie.live_nodes(), 3); // root, a, b
    assert_eq!(matches(&trie, "a/b"), pairs(&[("a/b", 1)]));
}

#[test]
fn deep_topics_do_not_overflow_the_stack() {
    let deep = "/".repeat(60_000);
    let mut trie = SubscriptionTrie::new();
    trie.insert(&f(&deep), 1u32, ());
    trie.insert(&f(&format!("{deep}/#")), 2, ());
    assert_eq!(matches(&trie, &deep).len(), 2);
    assert_eq!(trie.remove(&f(&deep), &1), Some(()));
    assert_eq!(trie.remove(&f(&format!("{deep}/#")), &2), Some(()));
    assert_eq!(trie.live_nodes(), 1);
    trie.insert(&f(&deep), 1, ());
    drop(trie);
}

// ---- property test against `Filter::matches` ----

fn level() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("a"), Just("b"), Just("$x"), Just("")]
}

fn filter_level() -> impl Strategy<Value = &'static str> {
    prop_oneof![3 => level(), 1 => Just("+"), 1 => Just("#")]
}

/// A valid filter over the small alphabet, sometimes shared.
fn filter_text() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(filter_level(), 1..5),
        prop_oneof![3 => Just(None), 1 => Just(Some("g")), 1 => Just(Some("h"))],
    )
        .prop_map(|(levels, group)| {
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
            match group {
                Some(g) => format!("$share/{g}/{text}"),
                None => text,
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

#[derive(Debug, Clone)]
enum Op {
    Insert(String, u8),
    Remove(String, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (filter_text(), 0u8..4).prop_map(|(s, k)| Op::Insert(s, k)),
        1 => (filter_text(), 0u8..4).prop_map(|(s, k)| Op::Remove(s, k)),
    ]
}

proptest! {
    #[test]
    fn trie_matches_agree_with_filter_matches(
        ops in prop::collection::vec(op(), 0..40),
        topics in prop::collection::vec(topic_text(), 1..8),
    ) {
        let mut trie: SubscriptionTrie<u8, u32> = SubscriptionTrie::new();
        let mut model: BTreeMap<(String, u8), u32> = BTreeMap::new();
        for (n, op) in ops.iter().enumerate() {
            match op {
                Op::Insert(s, k) => {
                    let prev = trie.insert(&f(s), *k, n as u32);
                    prop_assert_eq!(prev, model.insert((s.clone(), *k), n as u32));
                }
                Op::Remove(s, k) => {
                    let prev = trie.remove(&f(s), k);
                    prop_assert_eq!(prev, model.remove(&(s.clone(), *k)));
                }
            }
        }
        prop_assert_eq!(trie.len(), model.len());
        for topic in &topics {
            let mut plain = BTreeSet::new();
            let mut shared: BTreeMap<String, Vec<(u8, u32)>> = BTreeMap::new();
            trie.for_each_match(topic, |k, v, filter| {
                if filter.share_group().is_some() {
                    shared.entry(filter.as_str().to_owned()).or_default().push((*k, *v));
                } else {
                    plain.insert((filter.as_str().to_owned(), *k, *v));
                }
            });
            let expected_plain: BTreeSet<_> = model
                .iter()
                .filter(|((s, _), _)| !s.starts_with("$share/") && f(s).matches(topic))
                .map(|((s, k), v)| (s.clone(), *k, *v))
                .collect();
            prop_assert_eq!(plain, expected_plain);
            let expected_groups: BTreeSet<String> = model
                .keys()
                .filter(|(s, _)| s.starts_with("$share/") && f(s).matches(topic))
                .map(|(s, _)| s.clone())
                .collect();
            prop_assert_eq!(shared.keys().cloned().collect::<BTreeSet<_>>(), expected_groups);
            for (s, members) in &shared {
                prop_assert_eq!(members.len(), 1, "one member per group");
                let (k, v) = members[0];
                prop_assert_eq!(model.get(&(s.clone(), k)), Some(&v));
            }
        }
        // Removing everything prunes back to the root.
        for (s, k) in model.keys() {
            prop_assert!(trie.remove(&f(s), k).is_some());
        }
        prop_assert!(trie.is_empty());
        prop_assert_eq!(trie.live_nodes(), 1);
    }
}

#[test]
fn a_leaf_costs_a_small_node_and_gives_back_its_parents_map() {
    // Every device's own topic is a leaf: its node must stay small.
    assert!(std::mem::size_of::<super::Node<u64, [u64; 4]>>() <= 64);
    let mut trie: SubscriptionTrie<u32, ()> = SubscriptionTrie::new();
    trie.insert(&f("devices/a"), 1, ());
    trie.insert(&f("devices/b"), 2, ());
    trie.remove(&f("devices/a"), &1);
    trie.remove(&f("devices/b"), &2);
    assert_eq!(trie.live_nodes(), 1, "only the root is left");
    let root = trie.nodes.get(0).map(|n| n.children.is_none());
    assert_eq!(root, Some(true), "an emptied map of children is freed");
}
