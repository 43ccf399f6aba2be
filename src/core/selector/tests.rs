//! The selector language: every operator, precedence, LIKE, NULL logic,
//! coercions and errors.

use bytes::Bytes;

use super::*;
use crate::core::content::{Field, MessageView};
use crate::core::message::{Message, MessageProperties, QoS};

fn message() -> Message {
    let mut message = Message::new(
        "sensors/room1/temp",
        Bytes::from_static(br#"{"temp": 21.5, "device": {"id": "d-1"}, "ok": true}"#),
        QoS::AtLeastOnce,
        false,
    );
    message.properties = MessageProperties {
        content_type: Some("application/json".into()),
        user_properties: vec![
            ("bucket".into(), "3".into()),
            ("x-kind".into(), "alarm".into()),
            ("name".into(), "it's".into()),
            ("flag".into(), "TRUE".into()),
            ("word".into(), "abc".into()),
            ("my header".into(), "spaced".into()),
            ("topic".into(), "shadowed".into()),
        ],
        ..MessageProperties::NONE
    }
    .shared();
    message
}

/// TRUE (Some(true)), FALSE (Some(false)) or UNKNOWN (None) for `text`,
/// told apart through NOT: UNKNOWN matches neither way.
fn truth(text: &str) -> Option<bool> {
    let message = message();
    let view = MessageView::new(&message);
    let positive = Selector::parse(text).unwrap().matches(&view);
    let negative = Selector::parse(&format!("NOT ({text})"))
        .unwrap()
        .matches(&view);
    match (positive, negative) {
        (true, false) => Some(true),
        (false, true) => Some(false),
        (false, false) => None,
        (true, true) => panic!("{text} is both TRUE and FALSE"),
    }
}

fn yes(text: &str) {
    assert_eq!(truth(text), Some(true), "{text} should be TRUE");
}

fn no(text: &str) {
    assert_eq!(truth(text), Some(false), "{text} should be FALSE");
}

fn unknown(text: &str) {
    assert_eq!(truth(text), None, "{text} should be UNKNOWN");
}

fn error(text: &str) -> SelectorError {
    match Selector::parse(text) {
        Ok(s) => panic!("{text} parsed as {s}"),
        Err(e) => e,
    }
}

#[test]
fn comparisons_of_numbers_strings_and_booleans() {
    yes("1 = 1");
    no("1 = 2");
    yes("1 <> 2");
    yes("1 < 2");
    no("2 < 2");
    yes("2 <= 2");
    yes("3 > 2");
    yes("3 >= 3");
    no("2 >= 3");
    yes("'a' = 'a'");
    yes("'a' <> 'b'");
    yes("'a' < 'b'");
    yes("TRUE = TRUE");
    yes("TRUE <> FALSE");
    unknown("TRUE < FALSE");
    unknown("TRUE = 1");
    yes("1.0 = 1");
    yes("1e2 = 100");
    yes("1.5E-1 = .15");
}

#[test]
fn logic_and_precedence() {
    yes("1 = 1 AND 2 = 2");
    no("1 = 1 AND 1 = 2");
    yes("1 = 2 OR 2 = 2");
    yes("NOT 1 = 2");
    // AND binds tighter than OR; NOT tighter than AND.
    yes("1 = 1 OR 1 = 2 AND 1 = 2");
    no("(1 = 1 OR 1 = 2) AND 1 = 2");
    yes("NOT 1 = 2 AND 1 = 1");
    no("NOT (1 = 1 AND 1 = 1)");
    // * / before + -, left to right; unary minus tightest.
    yes("1 + 2 * 3 = 7");
    yes("(1 + 2) * 3 = 9");
    yes("10 - 4 - 3 = 3");
    yes("12 / 3 / 2 = 2");
    yes("-2 * 3 = -6");
    yes("- -2 = 2");
    yes("+2 = 2");
    yes("2 - -1 = 3");
    yes("1 + 1 = 2 AND 2 * 2 > 3");
    yes("7 / 2 = 3.5");
    keywords_are_case_insensitive();
}

fn keywords_are_case_insensitive() {
    yes("true and not false or FaLsE");
    yes("1 between 0 and 2");
}

#[test]
fn between_in_like_is_null() {
    yes("2 BETWEEN 1 AND 3");
    yes("1 BETWEEN 1 AND 3");
    yes("3 BETWEEN 1 AND 3");
    no("4 BETWEEN 1 AND 3");
    yes("4 NOT BETWEEN 1 AND 3");
    no("2 NOT BETWEEN 1 AND 3");
    yes("1 + 1 BETWEEN 1 AND 1 + 1");
    yes("'b' IN ('a', 'b')");
    no("'c' IN ('a', 'b')");
    yes("'c' NOT IN ('a', 'b')");
    yes("2 IN (1, 2)");
    yes("x-kind LIKE 'al%'");
    yes("x-kind LIKE '_larm'");
    no("x-kind LIKE '_arm'");
    yes("x-kind NOT LIKE 'b%'");
    yes("x-kind LIKE '%'");
    yes("x-kind LIKE '%a%m'");
    yes("missing IS NULL");
    no("missing IS NOT NULL");
    yes("bucket IS NOT NULL");
    no("bucket IS NULL");
}

#[test]
fn like_escapes_and_wildcards() {
    let like = |text: &str, pattern: &str, escape: Option<char>| {
        LikePattern::new(pattern.to_owned(), escape)
            .unwrap()
            .matches(text)
    };
    assert!(like("100%", "100!%", Some('!')));
    assert!(!like("1000", "100!%", Some('!')));
    assert!(like("a_b", "a\\_b", Some('\\')));
    assert!(!like("axb", "a\\_b", Some('\\')));
    assert!(like("a!b", "a!!b", Some('!')));
    assert!(like("", "%", None));
    assert!(!like("", "_", None));
    assert!(
        like("héllo", "h_llo", None),
        "_ is one character, not one byte"
    );
    assert!(like("aaab", "%a%b", None));
    assert!(like("mississippi", "%iss%ppi", None));
    assert!(!like("abc", "abcd", None));
    assert!(like("abc", "abc%%", None));
    yes("'100%' LIKE '100!%' ESCAPE '!'");
    no("'1000' LIKE '100!%' ESCAPE '!'");
    yes("'a_b' LIKE 'a\\_b' ESCAPE '\\'");
    yes("'it''s' LIKE 'it''_'");
}

#[test]
fn null_logic_follows_the_sql_truth_tables() {
    // AND
    no("missing = 1 AND FALSE");
    unknown("missing = 1 AND TRUE");
    unknown("missing = 1 AND missing = 2");
    // OR
    yes("missing = 1 OR TRUE");
    unknown("missing = 1 OR FALSE");
    unknown("missing = 1 OR missing = 2");
    // NOT
    unknown("NOT missing = 1");
    // comparisons, arithmetic, BETWEEN, IN, LIKE with NULL
    unknown("missing = missing");
    unknown("missing <> 1");
    unknown("missing + 1 = 1");
    unknown("-missing = 1");
    unknown("missing BETWEEN 1 AND 2");
    unknown("1 BETWEEN missing AND 2");
    no("5 BETWEEN missing AND 2");
    unknown("missing IN ('a')");
    unknown("'a' IN ('b', missing)");
    yes("'a' IN (missing, 'a')");
    unknown("missing LIKE '%'");
    unknown("missing NOT LIKE '%'");
    // A lone name or value that is no boolean is UNKNOWN.
    unknown("missing");
    unknown("1");
    unknown("word");
    // Division by zero and overflow are UNKNOWN, not an error.
    unknown("1 / 0 = 1");
    unknown("1e308 * 10 > 0");
}

#[test]
fn a_string_compared_with_a_number_is_a_number_when_it_parses() {
    yes("bucket = 3");
    yes("bucket = 3.0");
    yes("bucket > 2");
    yes("bucket + 1 = 4");
    yes("bucket BETWEEN 1 AND 5");
    yes("bucket IN (1, 3)");
    // As strings when both are strings.
    yes("bucket = '3'");
    no("bucket = '3.0'");
    // Not a number: UNKNOWN.
    unknown("word = 3");
    unknown("word + 1 = 1");
    // A string against a boolean counts when it is true / false.
    yes("flag = TRUE");
    yes("flag");
    unknown("word = TRUE");
}

#[test]
fn names_reach_the_content_model() {
    yes("topic = 'sensors/room1/temp'");
    yes("topic LIKE 'sensors/%'");
    yes("topic.1 = 'room1'");
    unknown("topic.9 = 'x'");
    yes("qos = 1");
    yes("retain = FALSE");
    yes("NOT retain");
    yes("content-type = 'application/json'");
    yes("content_type = 'application/json'");
    yes("payload.temp > 20");
    yes("payload.temp BETWEEN 20 AND 22.5");
    yes("payload.device.id = 'd-1'");
    yes("payload.ok");
    yes("payload-size > 10");
    unknown("payload.nothing = 1");
    yes("name = 'it''s'");
    yes("\"my header\" = 'spaced'");
    // A quoted name is always a property, so a shadowed one stays reachable.
    yes("\"topic\" = 'shadowed'");
    yes("\"x-kind\" = x-kind");
    // A hyphen between name characters is part of the name; spaces subtract.
    assert_eq!(
        *Selector::parse("x-kind").unwrap().expr(),
        Expr::Field(Field::Property("x-kind".into()))
    );
    assert!(matches!(
        Selector::parse("a - b").unwrap().expr(),
        Expr::Binary(BinaryOp::Sub, _, _)
    ));
    yes("bucket -1 = 2");
}

#[test]
fn only_payload_fields_parse_the_payload() {
    let message = message();
    let view = MessageView::new(&message);
    assert!(Selector::parse("bucket = 3").unwrap().matches(&view));
    assert!(!view.json_parsed());
    assert!(Selector::parse("payload.temp > 1").unwrap().matches(&view));
    assert!(view.json_parsed());
}

#[test]
fn errors_give_the_byte_position_and_what_was_expected() {
    let e = error("a = ");
    assert_eq!(e.position, 4);
    assert!(e.expected.contains("a name, a literal"), "{e}");
    assert_eq!(e.found, "the end");
    let e = error("a = 1 b");
    assert_eq!(e.position, 6);
    assert_eq!(
        e.to_string(),
        "selector error at byte 6: expected an operator, AND, OR or the end, found name 'b'"
    );
    let e = error("(a = 1");
    assert_eq!((e.position, e.expected.as_str()), (6, "')'"));
    let e = error("a = 'open");
    assert_eq!(e.position, 9);
    assert!(e.expected.contains("closing '"), "{e}");
    let e = error("a # 1");
    assert_eq!((e.position, e.found.as_str()), (2, "'#'"));
    let e = error("a BETWEEN 1 OR 2");
    assert_eq!((e.position, e.expected.as_str()), (12, "AND (of BETWEEN)"));
    let e = error("a IN 1");
    assert_eq!(e.position, 5);
    let e = error("a IN (1 2)");
    assert_eq!((e.position, e.expected.as_str()), (8, "',' or ')' (of IN)"));
    let e = error("a LIKE b");
    assert_eq!(
        (e.position, e.expected.as_str()),
        (7, "a string pattern (of LIKE)")
    );
    let e = error("a LIKE 'x' ESCAPE 'ab'");
    assert_eq!(e.position, 18);
    let e = error("a LIKE 'x!y' ESCAPE '!'");
    assert_eq!(e.position, 7);
    let e = error("a IS 1");
    assert_eq!((e.position, e.expected.as_str()), (5, "NULL or NOT NULL"));
    let e = error("a NOT 1");
    assert_eq!(e.position, 6);
    let e = error("payload. = 1");
    assert_eq!(e.position, 0);
    let e = error("1e999 = 1");
    assert_eq!(e.position, 0);
    let e = error("");
    assert_eq!((e.position, e.found.as_str()), (0, "the end"));
    let e = error("\"\" = 1");
    assert_eq!(e.position, 0);
    let deep = format!("{}1{}", "(".repeat(100), ")".repeat(100));
    assert!(error(&deep).expected.contains("nested at most"));
    let long_chain = vec!["a"; 100].join(" + ");
    assert!(error(&long_chain).expected.contains("nested at most"));
    let too_long = format!("a = '{}'", "x".repeat(MAX_SELECTOR_LENGTH));
    assert!(error(&too_long).expected.contains("at most"));
}

#[test]
fn printing_parses_back_to_the_same_tree() {
    for text in [
        "a = 1 AND (b <> 'x''y' OR NOT c)",
        "-a * (b + 2.5) / 1e-3 >= -4",
        "x-kind NOT LIKE '10!%%' ESCAPE '!' AND y IS NOT NULL",
        "q NOT BETWEEN 1 AND 2 OR r IN ('a', 'b', 3)",
        "\"my header\" = \"topic\" AND \"AND\" = topic AND content_type = reply-to",
        "payload.a.b = topic.2",
    ] {
        let selector = Selector::parse(text).unwrap();
        let printed = selector.to_string();
        let again = Selector::parse(&printed).unwrap();
        assert_eq!(selector.expr(), again.expr(), "{text} printed as {printed}");
    }
}

#[test]
fn the_cache_shares_one_selector_per_text_and_the_memo_evaluates_it_once() {
    let cache = SelectorCache::new();
    let a = cache.get_or_compile("bucket = 3").unwrap();
    let b = cache.get_or_compile("bucket = 3").unwrap();
    let c = cache.get_or_compile("bucket = 4").unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert!(!Arc::ptr_eq(&a, &c));
    assert_eq!(cache.live(), 2);
    drop(c);
    assert_eq!(cache.live(), 1);
    assert!(cache.get_or_compile("bucket =").is_err());

    let message = message();
    let memo = SelectorMemo::new(&message);
    assert!(memo.matches(&a));
    assert!(memo.matches(&b));
    assert_eq!(
        memo.evaluated(),
        1,
        "one evaluation for the shared selector"
    );
}

use std::sync::Arc;
