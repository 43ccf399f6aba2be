//! The subscribe decision: a deny rule refuses the filters it covers and is
//! an exception of those it only overlaps.

use super::acl::{Acl, Identity, SubscribeDecision};
use super::settings::{AclAccess, AclRule};

fn rule(who: &str, allow: bool, access: AclAccess, topic: &str) -> AclRule {
    let mut r = AclRule {
        topic: topic.into(),
        ..AclRule::default()
    };
    match who.split_once('=') {
        Some(("user", name)) => r.user = Some(name.into()),
        Some(("client_id", id)) => r.client_id = Some(id.into()),
        _ => r.all = true,
    }
    if allow {
        r.allow = Some(access);
    } else {
        r.deny = Some(access);
    }
    r
}

fn acl(rules: &[AclRule]) -> Acl {
    Acl::new(rules).unwrap_or_else(|e| panic!("rules should compile: {e}"))
}

const ANON: Identity<'static> = Identity {
    username: None,
    client_id: "dev-1",
};

/// The exceptions of a granted subscription, as sorted text; None when refused.
fn granted(acl: &Acl, identity: &Identity<'_>, filter: &str) -> Option<Vec<String>> {
    match acl.subscribe(identity, filter) {
        SubscribeDecision::Granted(exceptions) => {
            let mut filters: Vec<String> = exceptions
                .filters()
                .iter()
                .map(|f| f.as_str().to_owned())
                .collect();
            filters.sort();
            Some(filters)
        }
        SubscribeDecision::Refused => None,
    }
}

/// Exceptions in any order (compared sorted).
fn list(items: &[&str]) -> Option<Vec<String>> {
    let mut items: Vec<String> = items.iter().map(|s| (*s).to_owned()).collect();
    items.sort();
    Some(items)
}

/// `allow both #` + `deny subscribe test/nosubscribe`, the configuration of issue 26.
fn one_forbidden_topic() -> Acl {
    acl(&[
        rule("all", true, AclAccess::Both, "#"),
        rule("all", false, AclAccess::Subscribe, "test/nosubscribe"),
    ])
}

#[test]
fn a_filter_a_deny_rule_covers_is_refused() {
    let acl = one_forbidden_topic();
    assert_eq!(granted(&acl, &ANON, "test/nosubscribe"), None);
    assert_eq!(granted(&acl, &ANON, "$share/g/test/nosubscribe"), None);
    let wider = acl_with_deny("test/nosubscribe/#");
    assert_eq!(granted(&wider, &ANON, "test/nosubscribe/#"), None);
    assert_eq!(granted(&wider, &ANON, "test/nosubscribe"), None);
    assert_eq!(granted(&wider, &ANON, "test/nosubscribe/+/x"), None);
}

#[test]
fn a_filter_that_overlaps_a_deny_rule_is_granted_with_it_as_exception() {
    let acl = one_forbidden_topic();
    for filter in [
        "#",
        "+/+",
        "test/#",
        "test/+",
        "+/nosubscribe",
        "$share/g/#",
        "test/nosubscribe/#",
    ] {
        assert_eq!(
            granted(&acl, &ANON, filter),
            list(&["test/nosubscribe"]),
            "{filter}"
        );
    }
}

#[test]
fn a_filter_disjoint_from_every_deny_rule_has_no_exceptions() {
    let acl = one_forbidden_topic();
    for filter in [
        "a/b",
        "a/#",
        "+",
        "test/other",
        "+/+/+",
        "test/nosubscribe/x",
    ] {
        assert_eq!(granted(&acl, &ANON, filter), list(&[]), "{filter}");
    }
}

#[test]
fn plus_and_hash_in_deny_rules() {
    // "devices may read plant/# except plant/keys/#"
    let acl = acl(&[
        rule("all", true, AclAccess::Subscribe, "plant/#"),
        rule("all", false, AclAccess::Subscribe, "plant/keys/#"),
        rule("all", false, AclAccess::Subscribe, "plant/+/secret"),
    ]);
    assert_eq!(
        granted(&acl, &ANON, "plant/#"),
        list(&["plant/keys/#", "plant/+/secret"])
    );
    assert_eq!(granted(&acl, &ANON, "plant/+"), list(&["plant/keys/#"]));
    assert_eq!(granted(&acl, &ANON, "plant/a/+"), list(&["plant/+/secret"]));
    assert_eq!(granted(&acl, &ANON, "plant/keys/+"), None);
    assert_eq!(granted(&acl, &ANON, "plant/a/secret"), None);
    assert_eq!(granted(&acl, &ANON, "plant/a/b"), list(&[]));
    // The allow side still has to cover the filter.
    assert_eq!(granted(&acl, &ANON, "#"), None);
}

#[test]
fn dollar_topics_follow_the_leading_wildcard_rule() {
    let acl = acl(&[
        rule("all", true, AclAccess::Both, "#"),
        rule("all", true, AclAccess::Subscribe, "$SYS/#"),
        rule("all", false, AclAccess::Subscribe, "$SYS/broker/secret"),
        rule("all", false, AclAccess::Subscribe, "+/private"),
    ]);
    // `#` matches no `$` topic, so the `$SYS` deny is not its exception,
    // while `+/private` is.
    assert_eq!(granted(&acl, &ANON, "#"), list(&["+/private"]));
    assert_eq!(
        granted(&acl, &ANON, "$SYS/#"),
        list(&["$SYS/broker/secret"])
    );
    assert_eq!(granted(&acl, &ANON, "$SYS/broker/secret"), None);
    // `+/private` does not match `$SYS/private`: no exception, nothing refused.
    assert_eq!(granted(&acl, &ANON, "$SYS/private"), list(&[]));
}

#[test]
fn placeholders_resolve_per_subscriber() {
    let acl = acl(&[
        rule("all", true, AclAccess::Subscribe, "devices/#"),
        rule("all", false, AclAccess::Subscribe, "devices/%c/keys"),
        rule("all", false, AclAccess::Subscribe, "devices/%u/private/#"),
    ]);
    let alice = Identity {
        username: Some("alice"),
        client_id: "dev-2",
    };
    assert_eq!(
        granted(&acl, &ANON, "devices/#"),
        list(&["devices/dev-1/keys"])
    );
    assert_eq!(
        granted(&acl, &alice, "devices/#"),
        list(&["devices/dev-2/keys", "devices/alice/private/#"])
    );
    assert_eq!(granted(&acl, &ANON, "devices/dev-1/keys"), None);
    assert_eq!(granted(&acl, &ANON, "devices/dev-2/keys"), list(&[]));
    assert_eq!(granted(&acl, &alice, "devices/alice/private/x"), None);
    // A %u rule does not apply to anonymous clients.
    assert_eq!(granted(&acl, &ANON, "devices/alice/private/x"), list(&[]));
    // A client id that would change the rule's shape refuses everything.
    let sneaky = Identity {
        username: None,
        client_id: "+",
    };
    assert_eq!(granted(&acl, &sneaky, "devices/#"), None);
}

#[test]
fn deny_rules_for_someone_else_are_no_exception() {
    let acl = acl(&[
        rule("all", true, AclAccess::Subscribe, "#"),
        rule("user=bob", false, AclAccess::Subscribe, "secret/#"),
        rule("all", false, AclAccess::Publish, "readonly/#"),
    ]);
    assert_eq!(granted(&acl, &ANON, "#"), list(&[]));
    let bob = Identity {
        username: Some("bob"),
        client_id: "b",
    };
    assert_eq!(granted(&acl, &bob, "#"), list(&["secret/#"]));
}

#[test]
fn no_rules_grant_everything_but_sys_without_exceptions() {
    let acl = Acl::default();
    assert_eq!(granted(&acl, &ANON, "#"), list(&[]));
    assert_eq!(granted(&acl, &ANON, "$SYS/#"), None);
}

fn acl_with_deny(topic: &str) -> Acl {
    acl(&[
        rule("all", true, AclAccess::Both, "#"),
        rule("all", false, AclAccess::Subscribe, topic),
    ])
}
