//! Property tests: printing a tree and parsing it back gives the same tree;
//! no input makes the parser or the evaluator panic.

use bytes::Bytes;
use proptest::prelude::*;

use super::ast::{BinaryOp, Expr, LikePattern};
use super::{parser, Selector};
use crate::core::content::{Field, MessageView};
use crate::core::message::{Message, QoS};

fn field() -> impl Strategy<Value = Field> {
    prop_oneof![
        Just(Field::Topic),
        (0usize..5).prop_map(Field::TopicLevel),
        Just(Field::Qos),
        Just(Field::Retain),
        Just(Field::ContentType),
        Just(Field::CorrelationId),
        Just(Field::ResponseTopic),
        Just(Field::PayloadSize),
        prop::collection::vec("[a-z][a-z0-9_]{0,4}", 1..3).prop_map(Field::Payload),
        // Any property name, quoted when it is not a plain one.
        "[a-zA-Z_$][a-zA-Z0-9_-]{0,6}".prop_map(Field::Property),
        ".{1,8}".prop_map(Field::Property),
    ]
}

fn leaf() -> impl Strategy<Value = Expr> {
    prop_oneof![
        ".{0,8}".prop_map(Expr::Str),
        (0.0f64..1e12).prop_map(Expr::Number),
        (0u32..1000).prop_map(|n| Expr::Number(f64::from(n))),
        any::<bool>().prop_map(Expr::Bool),
        field().prop_map(Expr::Field),
    ]
}

fn binary_op() -> impl Strategy<Value = BinaryOp> {
    prop_oneof![
        Just(BinaryOp::Or),
        Just(BinaryOp::And),
        Just(BinaryOp::Eq),
        Just(BinaryOp::Ne),
        Just(BinaryOp::Lt),
        Just(BinaryOp::Le),
        Just(BinaryOp::Gt),
        Just(BinaryOp::Ge),
        Just(BinaryOp::Add),
        Just(BinaryOp::Sub),
        Just(BinaryOp::Mul),
        Just(BinaryOp::Div),
    ]
}

fn like_pattern() -> impl Strategy<Value = LikePattern> {
    ("[a-z%_!']{0,6}", prop::option::of(Just('!'))).prop_map(|(source, escape)| {
        // Keep the escape only where the pattern uses it correctly.
        LikePattern::new(source.clone(), escape)
            .or_else(|_| LikePattern::new(source, None))
            .expect("a pattern without escape always compiles")
    })
}

fn expr() -> impl Strategy<Value = Expr> {
    leaf().prop_recursive(5, 48, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| Expr::Not(Box::new(e))),
            inner.clone().prop_map(|e| Expr::Negate(Box::new(e))),
            (binary_op(), inner.clone(), inner.clone()).prop_map(|(op, l, r)| Expr::Binary(
                op,
                Box::new(l),
                Box::new(r)
            )),
            (any::<bool>(), inner.clone(), inner.clone(), inner.clone()).prop_map(
                |(negated, value, low, high)| Expr::Between {
                    negated,
                    value: Box::new(value),
                    low: Box::new(low),
                    high: Box::new(high),
                }
            ),
            (
                any::<bool>(),
                inner.clone(),
                prop::collection::vec(inner.clone(), 1..4)
            )
                .prop_map(|(negated, value, list)| Expr::In {
                    negated,
                    value: Box::new(value),
                    list,
                }),
            (any::<bool>(), inner.clone(), like_pattern()).prop_map(|(negated, value, pattern)| {
                Expr::Like {
                    negated,
                    value: Box::new(value),
                    pattern,
                }
            }),
            (any::<bool>(), inner).prop_map(|(negated, value)| Expr::IsNull {
                negated,
                value: Box::new(value),
            }),
        ]
    })
}

fn message() -> Message {
    Message::new(
        "a/b/c",
        Bytes::from_static(br#"{"a": {"b": 1}, "x": "2"}"#),
        QoS::AtMostOnce,
        false,
    )
}

proptest! {
    #[test]
    fn printing_and_parsing_gives_the_same_tree(tree in expr()) {
        let printed = tree.to_string();
        let parsed = parser::parse(&printed);
        prop_assert_eq!(parsed.as_ref(), Ok(&tree), "printed: {}", printed);
    }

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,64}") {
        if let Ok(selector) = Selector::parse(&text) {
            let message = message();
            selector.matches(&MessageView::new(&message));
        }
    }

    #[test]
    fn selector_like_text_never_panics(
        words in prop::collection::vec(
            prop_oneof![
                Just("a"), Just("payload.a.b"), Just("x-y"), Just("'s'"), Just("'"), Just("\""),
                Just("1"), Just("2.5e3"), Just("."), Just("-"), Just("+"), Just("*"), Just("/"),
                Just("("), Just(")"), Just(","), Just("="), Just("<>"), Just("<"), Just(">="),
                Just("AND"), Just("OR"), Just("NOT"), Just("BETWEEN"), Just("IN"), Just("LIKE"),
                Just("ESCAPE"), Just("IS"), Just("NULL"), Just("TRUE"), Just("'%_'"), Just("'!'"),
            ],
            0..24,
        )
    ) {
        let text = words.join(" ");
        if let Ok(selector) = Selector::parse(&text) {
            let message = message();
            selector.matches(&MessageView::new(&message));
            // Whatever parses also prints to something that parses the same.
            let again = Selector::parse(&selector.to_string());
            prop_assert_eq!(again.as_ref().map(Selector::expr), Ok(selector.expr()));
        }
    }
}
