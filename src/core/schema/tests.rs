use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::core::message::{Message, MessageProperties, QoS};
use crate::core::router::{PublishRefused, Router};
use crate::core::session::QueueLimits;

const TEMPERATURE: &str = r#"{"type": "object", "required": ["temp"],
    "properties": {"temp": {"type": "number"}}}"#;

fn message(topic: &str, payload: &'static [u8]) -> Message {
    Message::new(topic, Bytes::from_static(payload), QoS::AtLeastOnce, false)
}

fn compiled(name: &str, topics: &[&str], on_invalid: OnInvalid, text: &str) -> CompiledSchema {
    CompiledSchema {
        settings: SchemaSettings {
            name: name.into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            kind: SchemaKind::JsonSchema,
            file: "unused.json".into(),
            on_invalid,
        },
        filters: settings::parse_filters(&topics.iter().map(|t| t.to_string()).collect::<Vec<_>>())
            .unwrap(),
        validator: Validator::compile(SchemaKind::JsonSchema, text).unwrap(),
    }
}

fn new_version(topics: &[&str], on_invalid: OnInvalid, definition: &str) -> NewVersion {
    NewVersion {
        kind: SchemaKind::JsonSchema,
        topics: topics.iter().map(|t| t.to_string()).collect(),
        on_invalid,
        definition: serde_json::Value::String(definition.into()),
    }
}

#[test]
fn a_topic_no_schema_is_bound_to_is_not_checked() {
    let schemas = Schemas::new(None);
    assert!(matches!(
        schemas.check(&message("a", b"x")),
        Checked::Unchecked
    ));
    schemas.set_configured(vec![compiled(
        "t",
        &["s/+/t"],
        OnInvalid::Reject,
        TEMPERATURE,
    )]);
    assert!(matches!(
        schemas.check(&message("s/1/h", b"x")),
        Checked::Unchecked
    ));
}

#[test]
fn the_first_bound_schema_decides_and_counts() {
    let schemas = Schemas::new(None);
    schemas.set_configured(vec![
        compiled("first", &["s/#"], OnInvalid::Log, TEMPERATURE),
        compiled(
            "second",
            &["s/1/t"],
            OnInvalid::Reject,
            r#"{"type": "string"}"#,
        ),
    ]);
    assert!(matches!(
        schemas.check(&message("s/1/t", br#"{"temp": 1}"#)),
        Checked::Valid(Some(_))
    ));
    let Checked::Invalid(invalid) = schemas.check(&message("s/1/t", br#"{"temp": "x"}"#)) else {
        panic!("expected invalid");
    };
    assert_eq!(invalid.schema, "first");
    assert_eq!(invalid.on_invalid, OnInvalid::Log);
    assert!(invalid.to_string().contains("/temp"), "{invalid}");
    let counts = schemas.counters("first");
    assert_eq!(counts.valid.load(Ordering::Relaxed), 1);
    assert_eq!(counts.logged.load(Ordering::Relaxed), 1);
    assert_eq!(schemas.counters("second").valid.load(Ordering::Relaxed), 0);
}

#[test]
fn a_dead_letter_keeps_the_payload_and_says_why() {
    let original = message("s/1/t", b"{}");
    let invalid = Invalid {
        schema: "t".into(),
        on_invalid: OnInvalid::DeadLetter,
        violations: vec![],
    };
    let letter = dead_letter(&original, &invalid);
    assert_eq!(&*letter.topic, "$dlq/s/1/t");
    assert_eq!(letter.payload, original.payload);
    let (key, value) = &letter.properties().user_properties[0];
    assert_eq!(key, SCHEMA_ERROR_PROPERTY);
    assert!(value.contains("schema t"));
}

#[test]
fn admin_versions_replace_each_other_and_survive_a_restore() {
    let schemas = Schemas::new(None);
    let (v1, _) = schemas
        .add_version("t", new_version(&["a"], OnInvalid::Reject, TEMPERATURE))
        .unwrap();
    let (v2, _) = schemas
        .add_version(
            "t",
            new_version(&["a"], OnInvalid::Reject, r#"{"type": "string"}"#),
        )
        .unwrap();
    assert_eq!((v1, v2), (1, 2));
    assert_eq!(schemas.bound()[0].version, 2);
    assert!(matches!(
        schemas.check(&message("a", br#""ok""#)),
        Checked::Valid(_)
    ));
    assert_eq!(schemas.version("t", 1).unwrap().definition, TEMPERATURE);

    let record = postcard::to_allocvec(&schemas.versions("t").unwrap()).unwrap();
    let restored = Schemas::new(None);
    assert_eq!(restored.restore(&[("t".into(), record)]), 1);
    assert_eq!(restored.bound()[0].version, 2);

    schemas.delete("t").unwrap();
    assert!(schemas.bound().is_empty());
    assert_eq!(
        schemas.delete("t"),
        Err(ManagedSchemaError::Unknown("t".into()))
    );
}

#[test]
fn the_admin_api_refuses_bad_schemas_and_configured_names() {
    let schemas = Schemas::new(None);
    schemas.set_configured(vec![compiled(
        "conf",
        &["a"],
        OnInvalid::Reject,
        TEMPERATURE,
    )]);
    let taken = schemas.add_version("conf", new_version(&["b"], OnInvalid::Reject, TEMPERATURE));
    assert!(matches!(taken, Err(ManagedSchemaError::Configured(_))));
    let bad = schemas.add_version("x", new_version(&["b"], OnInvalid::Reject, "{"));
    assert!(matches!(bad, Err(ManagedSchemaError::Invalid(_))));
    let bad = schemas.add_version("x", new_version(&["b/#/c"], OnInvalid::Reject, TEMPERATURE));
    assert!(matches!(bad, Err(ManagedSchemaError::Invalid(_))));
    assert!(schemas.versions("x").is_err());
}

fn limits() -> QueueLimits {
    QueueLimits {
        max_queued: 100,
        max_queued_bytes: 0,
        overflow: crate::core::session::OverflowPolicy::DropNew,
        max_queued_age_ms: 0,
    }
}

fn router_with(on_invalid: OnInvalid) -> Router {
    let router = Router::new(limits());
    router
        .schemas()
        .set_configured(vec![compiled("t", &["s/+"], on_invalid, TEMPERATURE)]);
    router
}

#[test]
fn publish_checked_refuses_a_payload_that_fails_a_reject_schema() {
    let router = router_with(OnInvalid::Reject);
    let refused = router.publish_checked(Arc::new(message("s/1", b"[]")));
    assert!(matches!(refused, Err(PublishRefused::SchemaInvalid(_))));
    assert!(router
        .publish_checked(Arc::new(message("s/1", br#"{"temp": 2}"#)))
        .is_ok());
}

#[test]
fn publish_checked_routes_a_dead_letter_to_dlq() {
    let router = router_with(OnInvalid::DeadLetter);
    let session = router
        .attach(
            &Arc::from("watcher"),
            &crate::core::session::SessionOwner::Anonymous,
            true,
            0,
        )
        .unwrap()
        .session;
    let options = crate::core::session::SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        no_local: false,
        retain_as_published: false,
        retain_handling: 0,
        subscription_id: None,
        exceptions: Default::default(),
        selector: None,
    };
    router.subscribe(
        &session,
        crate::core::topic::Filter::parse("$dlq/#").unwrap(),
        options,
    );
    let published = router
        .publish_checked(Arc::new(message("s/1", b"[]")))
        .unwrap();
    assert_eq!(published.matched, 1);
    let mut delivered = Vec::new();
    session.take_pending(usize::MAX, &mut delivered);
    assert_eq!(&*delivered[0].message.topic, "$dlq/s/1");
}

#[test]
fn a_payload_declared_utf8_that_is_not_is_refused_unless_turned_off() {
    let router = Router::new(limits());
    let mut bad = message("a", b"\xff\xfe");
    bad.properties = MessageProperties {
        payload_is_utf8: true,
        ..MessageProperties::NONE
    }
    .shared();
    let bad = Arc::new(bad);
    let refused = router.publish_checked(Arc::clone(&bad));
    assert!(matches!(refused, Err(PublishRefused::PayloadNotUtf8)));
    router.schemas().set_check_utf8(false);
    assert!(router.publish_checked(bad).is_ok());
}

#[test]
fn a_will_failing_a_reject_schema_is_dropped_and_counted() {
    let router = router_with(OnInvalid::Reject);
    assert_eq!(router.publish(Arc::new(message("s/1", b"[]"))), 0);
    let counts = router.schemas().counters("t");
    assert_eq!(counts.rejected.load(Ordering::Relaxed), 1);
}
