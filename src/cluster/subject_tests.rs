//! The topic ⇄ subject mapping: one test per rule of `subject.rs`, then
//! property tests (round trip; wildcard equivalence with the core trie).

use proptest::prelude::*;

use super::subject::*;
use crate::core::topic::Filter;
use crate::core::trie::SubscriptionTrie;

fn subject(topic: &str) -> String {
    topic_to_subject(topic).expect("subject")
}

fn subjects(filter: &str) -> Vec<String> {
    filter_to_subjects(filter).expect("subjects")
}

/// NATS subject matching: `*` one token, `>` one or more remaining tokens.
fn nats_matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[test]
fn rule_1_dollar_topics_have_their_own_prefix() {
    assert_eq!(subject("a/b"), "tern.m.a.b");
    assert_eq!(subject("$SYS/x"), "tern.d.$SYS.x");
    assert_eq!(
        subject("a/$b"),
        "tern.m.a.$b",
        "only the first level decides"
    );
}

#[test]
fn rule_2_each_level_is_a_token() {
    assert_eq!(subject("sensors/room1/temp"), "tern.m.sensors.room1.temp");
    assert_eq!(subject("single"), "tern.m.single");
}

#[test]
fn rule_3_empty_levels_are_a_lone_percent() {
    assert_eq!(subject("/a"), "tern.m.%.a");
    assert_eq!(subject("a/"), "tern.m.a.%");
    assert_eq!(subject("a//b"), "tern.m.a.%.b");
    assert_eq!(subject("/"), "tern.m.%.%");
}

#[test]
fn rule_4_characters_nats_reserves_are_escaped() {
    assert_eq!(subject("a.b"), "tern.m.a%2Eb");
    assert_eq!(subject("a*/b>"), "tern.m.a%2A.b%3E");
    assert_eq!(subject("hello world"), "tern.m.hello%20world");
    assert_eq!(subject("tab\there"), "tern.m.tab%09here");
    assert_eq!(subject("100%"), "tern.m.100%25");
    assert_eq!(
        subject("%"),
        "tern.m.%25",
        "a literal % is not an empty level"
    );
    assert_eq!(subject("del\u{7f}"), "tern.m.del%7F");
    assert_eq!(subject("grüße/€"), "tern.m.grüße.€", "non-ASCII kept");
    // The cases nats-server's MQTT mode confuses: `a.b` and `a/b` stay apart.
    assert_ne!(subject("a.b"), subject("a/b"));
}

#[test]
fn rule_5_literal_filters_map_as_topics() {
    assert_eq!(subjects("a/b.c"), ["tern.m.a.b%2Ec"]);
    assert_eq!(subjects("$SYS/broker"), ["tern.d.$SYS.broker"]);
    assert_eq!(subjects("+/x"), ["tern.m.*.x"]);
    assert_eq!(subjects("#"), ["tern.m.>"]);
}

#[test]
fn rule_6_plus_is_one_token() {
    assert_eq!(subjects("a/+/c"), ["tern.m.a.*.c"]);
    assert_eq!(subjects("$SYS/+"), ["tern.d.$SYS.*"]);
    assert!(
        nats_matches("tern.m.a.*", &subject("a/")),
        "+ matches an empty level"
    );
}

#[test]
fn rule_7_hash_also_matches_the_parent() {
    assert_eq!(subjects("a/#"), ["tern.m.a", "tern.m.a.>"]);
    assert_eq!(subjects("a/+/#"), ["tern.m.a.*", "tern.m.a.*.>"]);
    assert_eq!(subjects("#"), ["tern.m.>"]);
}

#[test]
fn long_topics_have_no_subject() {
    let long = "a".repeat(MAX_SUBJECT_LEN);
    assert!(matches!(topic_to_subject(&long), Err(SubjectTooLong(_))));
    assert!(matches!(
        filter_to_subjects(&format!("{long}/#")),
        Err(SubjectTooLong(_))
    ));
}

#[test]
fn foreign_or_malformed_subjects_are_not_topics() {
    for bad in [
        "other.a",
        "tern.m.",
        "tern.m.a..b",
        "tern.m.a%2",
        "tern.m.a%2e", // lower-case: not a spelling the encoder makes
        "tern.m.a%41", // 'A' is never escaped
        "tern.m.$a",   // a $ topic under the plain prefix
        "tern.d.a",    // a plain topic under the $ prefix
    ] {
        assert_eq!(subject_to_topic(bad), None, "{bad:?}");
    }
}

fn level() -> impl Strategy<Value = String> {
    // What makes mapping hard: NATS's reserved characters, %, $, spaces,
    // control characters, non-ASCII, and empty levels.
    prop::collection::vec(
        prop_oneof![
            Just('a'),
            Just('b'),
            Just('.'),
            Just('*'),
            Just('>'),
            Just(' '),
            Just('%'),
            Just('$'),
            Just('\t'),
            Just('é'),
            Just('\u{7f}'),
            Just('2'),
            Just('E'),
        ],
        0..4,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

fn topic() -> impl Strategy<Value = String> {
    prop::collection::vec(level(), 1..5).prop_map(|levels| levels.join("/"))
}

fn filter() -> impl Strategy<Value = String> {
    let filter_level = prop_oneof![3 => level(), 1 => Just("+".to_string())];
    (prop::collection::vec(filter_level, 1..4), any::<bool>()).prop_map(|(levels, hash)| {
        let mut text = levels.join("/");
        if hash {
            text.push_str("/#");
        }
        text
    })
}

proptest! {
    #[test]
    fn topics_round_trip(topic in topic()) {
        let subject = subject(&topic);
        prop_assert_eq!(subject_to_topic(&subject), Some(topic.clone()));
        // Every token is one NATS accepts: non-empty, no reserved character.
        let rest = &subject["tern.m.".len()..];
        for token in rest.split('.') {
            prop_assert!(!token.is_empty());
            prop_assert!(!token.contains(['*', '>', ' ', '\t']), "{:?}", token);
        }
    }

    #[test]
    fn distinct_topics_get_distinct_subjects(a in topic(), b in topic()) {
        prop_assume!(a != b);
        prop_assert_ne!(subject(&a), subject(&b));
    }

    #[test]
    fn subscriptions_match_exactly_what_the_core_trie_matches(
        filters in prop::collection::vec(prop_oneof![filter(), Just("#".to_string()), Just("+".to_string())], 1..6),
        topics in prop::collection::vec(topic(), 1..8),
    ) {
        let mut trie: SubscriptionTrie<usize, ()> = SubscriptionTrie::new();
        let mut valid = Vec::new();
        for (i, raw) in filters.iter().enumerate() {
            let Ok(parsed) = Filter::parse(raw) else { continue };
            trie.insert(&parsed, i, ());
            valid.push((i, raw.clone()));
        }
        for topic in &topics {
            let mut by_trie = std::collections::BTreeSet::new();
            trie.for_each_match(topic, |key, _, _| {
                by_trie.insert(*key);
            });
            let subject = subject(topic);
            let by_nats: std::collections::BTreeSet<usize> = valid
                .iter()
                .filter(|(_, raw)| subjects(raw).iter().any(|s| nats_matches(s, &subject)))
                .map(|(i, _)| *i)
                .collect();
            prop_assert_eq!(by_trie, by_nats, "topic {:?}, filters {:?}", topic, valid);
        }
    }
}
