//! The ACL's decisions on publish, subscribe and read, and its rule errors.

use super::acl::{Acl, AclError, Action, Identity};
use super::settings::{AclAccess, AclRule};

fn rule(who: &str, effect: &str, access: AclAccess, topic: &str) -> AclRule {
    let mut r = AclRule {
        topic: topic.into(),
        ..AclRule::default()
    };
    match who.split_once('=') {
        Some(("user", name)) => r.user = Some(name.into()),
        Some(("client_id", id)) => r.client_id = Some(id.into()),
        _ if who == "anonymous" => r.anonymous = true,
        _ => r.all = true,
    }
    if effect == "allow" {
        r.allow = Some(access);
    } else {
        r.deny = Some(access);
    }
    r
}

fn acl(rules: &[AclRule]) -> Acl {
    match Acl::new(rules) {
        Ok(acl) => acl,
        Err(e) => panic!("rules should compile: {e}"),
    }
}

const ALICE: Identity<'static> = Identity {
    username: Some("alice"),
    client_id: "alice-phone",
};
const BOB: Identity<'static> = Identity {
    username: Some("bob"),
    client_id: "bob-1",
};
const ANON: Identity<'static> = Identity {
    username: None,
    client_id: "dev-1",
};

use AclAccess::{Both, Publish as Pub, Subscribe as Sub};
use Action::{Publish, Subscribe};

#[test]
fn no_rules_allow_everything_but_sys() {
    let acl = Acl::default();
    assert!(acl.is_empty());
    assert!(acl.check(&ANON, Publish, "a/b"));
    assert!(acl.check(&ANON, Subscribe, "#"));
    assert!(acl.check(&ANON, Subscribe, "$share/g/a/+"));
    assert!(acl.check(&ANON, Publish, "$queue/jobs"));
    assert!(!acl.check(&ALICE, Subscribe, "$SYS/#"));
    assert!(!acl.check(&ALICE, Subscribe, "$SYS"));
    assert!(!acl.check(&ALICE, Subscribe, "$share/g/$SYS/broker/+"));
    assert!(!acl.check(&ALICE, Publish, "$SYS/broker/load"));
    assert!(acl.can_read(&ALICE, "a/b"));
    assert!(!acl.can_read(&ALICE, "$SYS/broker/load"));
    assert!(acl.check(&ALICE, Publish, "$SYSTEM/x"));
}

#[test]
fn no_rules_do_not_grant_dead_letters_either() {
    let acl = Acl::default();
    assert!(!acl.check(&ALICE, Subscribe, "$dlq/#"));
    assert!(!acl.check(&ALICE, Subscribe, "$dlq/sensors/+"));
    assert!(!acl.can_read(&ALICE, "$dlq/sensors/t"));
    assert!(!acl.check(&ALICE, Publish, "$dlq/sensors/t"));
    assert!(acl.check(&ALICE, Subscribe, "$dlqx/a"));
}

#[test]
fn any_rule_makes_the_default_deny() {
    let acl = acl(&[rule("user=alice", "allow", Both, "home/#")]);
    assert!(acl.check(&ALICE, Publish, "home/kitchen"));
    assert!(acl.check(&ALICE, Subscribe, "home/+"));
    assert!(!acl.check(&ALICE, Publish, "work/desk"));
    assert!(!acl.check(&BOB, Publish, "home/kitchen"));
    assert!(!acl.check(&ANON, Subscribe, "home/#"));
}

#[test]
fn deny_wins_over_allow_whatever_the_order() {
    for rules in [
        vec![
            rule("all", "allow", Both, "#"),
            rule("user=alice", "deny", Pub, "secret/#"),
        ],
        vec![
            rule("user=alice", "deny", Pub, "secret/#"),
            rule("all", "allow", Both, "#"),
        ],
    ] {
        let acl = acl(&rules);
        assert!(!acl.check(&ALICE, Publish, "secret/plans"));
        assert!(!acl.check(&ALICE, Publish, "secret"));
        assert!(acl.check(&ALICE, Publish, "public"));
        assert!(acl.check(&BOB, Publish, "secret/plans"));
        // Only publishing was denied.
        assert!(acl.check(&ALICE, Subscribe, "secret/#"));
    }
}

#[test]
fn publish_and_subscribe_are_separate_rights() {
    let acl = acl(&[
        rule("all", "allow", Pub, "in/#"),
        rule("all", "allow", Sub, "out/#"),
    ]);
    assert!(acl.check(&ANON, Publish, "in/x"));
    assert!(!acl.check(&ANON, Subscribe, "in/x"));
    assert!(acl.check(&ANON, Subscribe, "out/x"));
    assert!(!acl.check(&ANON, Publish, "out/x"));
}

#[test]
fn subjects_select_who_a_rule_applies_to() {
    let acl = acl(&[
        rule("user=alice", "allow", Both, "u/alice"),
        rule("client_id=bob-1", "allow", Both, "c/bob-1"),
        rule("anonymous", "allow", Both, "anon"),
        rule("all", "allow", Both, "everyone"),
    ]);
    assert!(acl.check(&ALICE, Publish, "u/alice"));
    assert!(!acl.check(&BOB, Publish, "u/alice"));
    assert!(acl.check(&BOB, Publish, "c/bob-1"));
    assert!(!acl.check(&ALICE, Publish, "c/bob-1"));
    assert!(acl.check(&ANON, Publish, "anon"));
    assert!(!acl.check(&ALICE, Publish, "anon"));
    for id in [ALICE, BOB, ANON] {
        assert!(acl.check(&id, Publish, "everyone"));
    }
    // A client id rule applies whoever logged in with it.
    let anon_bob = Identity {
        username: None,
        client_id: "bob-1",
    };
    assert!(acl.check(&anon_bob, Publish, "c/bob-1"));
}

#[test]
fn client_id_and_username_substitution() {
    let acl = acl(&[
        rule("all", "allow", Both, "devices/%c/#"),
        rule("all", "allow", Sub, "users/%u/inbox"),
    ]);
    let dev = Identity {
        username: None,
        client_id: "dev-7",
    };
    assert!(acl.check(&dev, Publish, "devices/dev-7/temp"));
    assert!(acl.check(&dev, Subscribe, "devices/dev-7/#"));
    assert!(!acl.check(&dev, Publish, "devices/dev-8/temp"));
    assert!(!acl.check(&dev, Subscribe, "devices/+/temp"));
    assert!(acl.check(&ALICE, Subscribe, "users/alice/inbox"));
    assert!(!acl.check(&ALICE, Subscribe, "users/bob/inbox"));
    // %u rules do not apply to anonymous clients.
    assert!(!acl.check(&dev, Subscribe, "users/x/inbox"));
}

#[test]
fn placeholder_inside_a_level() {
    let acl = acl(&[rule("all", "allow", Pub, "t/dev-%c-out")]);
    let dev = Identity {
        username: None,
        client_id: "7",
    };
    assert!(acl.check(&dev, Publish, "t/dev-7-out"));
    assert!(!acl.check(&dev, Publish, "t/dev-8-out"));
}

#[test]
fn wildcard_characters_in_substituted_values_cannot_widen_rights() {
    let acl = acl(&[
        rule("all", "allow", Both, "devices/%c/#"),
        rule("all", "allow", Both, "users/%u/#"),
        rule("all", "allow", Both, "public/#"),
    ]);
    for client_id in ["#", "+", "a/b", "", "a+", "x#"] {
        let id = Identity {
            username: None,
            client_id,
        };
        assert!(!acl.check(&id, Subscribe, "devices/#"), "{client_id:?}");
        assert!(!acl.check(&id, Subscribe, "devices/+/x"), "{client_id:?}");
        assert!(!acl.check(&id, Publish, "devices/other/x"), "{client_id:?}");
        assert!(!acl.check(&id, Publish, "devices/a/b/x"), "{client_id:?}");
        // Denied altogether while a rule that needs the value applies.
        assert!(!acl.check(&id, Publish, "public/x"), "{client_id:?}");
    }
    let sneaky = Identity {
        username: Some("+"),
        client_id: "ok",
    };
    assert!(!acl.check(&sneaky, Subscribe, "users/+/#"));
    assert!(!acl.check(&sneaky, Publish, "users/bob/x"));
}

#[test]
fn subscribe_needs_a_covering_allow_rule() {
    let acl = acl(&[rule("all", "allow", Sub, "a/+/c")]);
    assert!(acl.check(&ANON, Subscribe, "a/b/c"));
    assert!(acl.check(&ANON, Subscribe, "a/+/c"));
    assert!(!acl.check(&ANON, Subscribe, "a/#"));
    assert!(!acl.check(&ANON, Subscribe, "a/b/+"));
    assert!(!acl.check(&ANON, Subscribe, "#"));
    assert!(!acl.check(&ANON, Subscribe, "a/b"));
}

#[test]
fn subscribe_covered_by_a_deny_is_refused_and_overlapping_one_granted() {
    let acl = acl(&[
        rule("all", "allow", Sub, "#"),
        rule("all", "deny", Sub, "secret/#"),
    ]);
    assert!(acl.check(&ANON, Subscribe, "public/#"));
    // Granted, with `secret/#` as an exception (see acl_subscribe_tests.rs).
    assert!(acl.check(&ANON, Subscribe, "#"));
    assert!(acl.check(&ANON, Subscribe, "+/x"));
    assert!(!acl.check(&ANON, Subscribe, "secret"));
    assert!(!acl.check(&ANON, Subscribe, "secret/+"));
    assert!(acl.can_read(&ANON, "public/x"));
    assert!(!acl.can_read(&ANON, "secret/x"));
}

#[test]
fn shared_subscriptions_are_checked_by_their_filter() {
    let acl = acl(&[rule("all", "allow", Sub, "jobs/#")]);
    assert!(acl.check(&ANON, Subscribe, "$share/workers/jobs/+"));
    assert!(!acl.check(&ANON, Subscribe, "$share/workers/other/+"));
}

#[test]
fn sys_is_readable_only_when_granted_by_name() {
    let acl = acl(&[
        rule("all", "allow", Both, "#"),
        rule("user=admin", "allow", Sub, "$SYS/#"),
    ]);
    let admin = Identity {
        username: Some("admin"),
        client_id: "ops",
    };
    assert!(!acl.check(&ALICE, Subscribe, "$SYS/#"));
    // Allowed, but a leading wildcard never matches `$SYS` topics.
    assert!(acl.check(&ALICE, Subscribe, "+/broker/load"));
    assert!(!acl.can_read(&ALICE, "$SYS/broker/load"));
    assert!(acl.check(&admin, Subscribe, "$SYS/#"));
    assert!(acl.check(&admin, Subscribe, "$SYS/broker/+"));
    assert!(acl.can_read(&admin, "$SYS/broker/load"));
    assert!(!acl.check(&admin, Publish, "$SYS/broker/load"));
}

#[test]
fn queues_are_guarded_by_their_core_names() {
    let acl = acl(&[rule("user=alice", "allow", Both, "$queue/orders")]);
    assert!(acl.check(&ALICE, Publish, "$queue/orders"));
    assert!(acl.check(&ALICE, Subscribe, "$queue/orders"));
    assert!(!acl.check(&BOB, Subscribe, "$queue/orders"));
    assert!(!acl.check(&ALICE, Subscribe, "$queue/+"));
}

#[test]
fn invalid_requests_are_denied() {
    let acl = Acl::default();
    assert!(!acl.check(&ANON, Subscribe, "a/#/b"));
    assert!(!acl.check(&ANON, Subscribe, ""));
}

#[test]
fn bad_rules_are_named_by_position() {
    let mut no_subject = rule("all", "allow", Both, "#");
    no_subject.all = false;
    let mut two_subjects = rule("user=a", "allow", Both, "#");
    two_subjects.anonymous = true;
    let mut no_effect = rule("all", "allow", Both, "#");
    no_effect.allow = None;
    let mut both_effects = rule("all", "allow", Both, "#");
    both_effects.deny = Some(Pub);
    let ok = rule("all", "allow", Both, "#");
    let cases = [
        (no_subject, AclError::Subject { rule: 2 }),
        (two_subjects, AclError::Subject { rule: 2 }),
        (no_effect, AclError::Effect { rule: 2 }),
        (both_effects, AclError::Effect { rule: 2 }),
    ];
    for (bad, expected) in cases {
        assert_eq!(Acl::new(&[ok.clone(), bad]).unwrap_err(), expected);
    }
    for topic in ["", "a/#/b", "a+", "%x/a", "a/%", "$share/g/a", "%u+"] {
        let err = Acl::new(&[rule("all", "allow", Both, topic)]).unwrap_err();
        assert!(matches!(err, AclError::Topic { rule: 1, .. }), "{topic:?}");
        assert!(err.to_string().contains("rule 1"), "{err}");
    }
}
