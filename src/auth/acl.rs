//! Access control: who may publish to which topics and subscribe to which filters.
//! The same rules guard every protocol (STOMP `/topic/t` is checked as `t`,
//! `/queue/q` as `$queue/q`, as the core names them).
//!
//! Rules come from `[[acl]]` tables (see [`super::settings::AclRule`]):
//!
//! ```toml
//! [[acl]]
//! all = true                 # or user = "alice" / client_id = "dev-1" / anonymous = true
//! allow = "both"             # or deny = …; "publish", "subscribe" or "both"
//! topic = "devices/%c/#"     # %u: username, %c: client id
//! ```
//!
//! Decisions:
//! - No rules at all: everything is allowed except `$SYS` and `$dlq` (dead
//!   letters of schemas: other publishers' messages); nobody is granted them.
//! - Any rule: what no rule allows is denied, and a matching deny wins over any allow.
//! - Publish: the topic name must match an allow rule's filter and no deny rule's.
//! - Subscribe ([`Acl::subscribe`]): the requested filter must be *covered* by an
//!   allow rule's filter (every topic it matches, the rule matches too) and by no
//!   deny rule's filter, or it is refused. A deny rule that only *overlaps* it
//!   (some topic matches both) does not refuse it: the deny filter becomes an
//!   exception of the subscription, and the core never delivers a message on it
//!   to that subscription (live, retained, offline queue, shared groups).
//!   `$share/<group>/` is ignored: the filter proper is checked.
//! - `$SYS/…` (and every `$` topic) is never matched by a leading `+` or `#`, so
//!   `all = true, allow = "both", topic = "#"` does not grant `$SYS`: only a rule
//!   naming `$SYS` does.
//! - `%u` / `%c` are replaced by the username / client id. A rule with `%u` does
//!   not apply to anonymous clients. When the value is empty or holds `+`, `#`,
//!   `/` or NUL (so a client id `#` cannot widen a rule), a rule that needs it
//!   denies the whole request.
//!
//! Covering examples (rule filter ⊇ requested filter):
//!   `a/#` covers `a`, `a/b`, `a/+/c`, `a/#`;  `a/+` covers `a/b`, `a/+`
//!   `a/+` does not cover `a/#` nor `a/b/c`;    `#` does not cover `$SYS/#`
//! Overlap examples (some topic matches both):
//!   `a/+` overlaps `+/b`; `a/#` overlaps `a`; `a/b` does not overlap `a/c`;
//!   `#` does not overlap `$SYS/x`.
//! (Both relations live beside `Filter` in `core::topic`.)
//!
//! Subscribe decisions under `allow both #` + `deny subscribe test/nosubscribe`:
//!   refused (covered by the deny):   `test/nosubscribe`, `$share/g/test/nosubscribe`,
//!                                    STOMP `/topic/test/nosubscribe`
//!   granted with exception `test/nosubscribe` (overlapping): `#`, `+/+`, `test/#`,
//!                                    `$share/g/#`, STOMP `/topic/#`
//!   granted as is (disjoint):        `a/b`, `test/+/x`, `test/nosubscribe/x`,
//!                                    STOMP `/queue/jobs` (checked as `$queue/jobs`)
//! A deny of `test/nosubscribe/#` also covers `test/nosubscribe` and `test/nosubscribe/+`.
//!
//! Why exceptions: Mosquitto grants `#` too but checks read access for every
//! message it delivers, so every delivery to every subscriber pays an ACL walk;
//! here only the subscriptions that carry exceptions compare a topic with them
//! (for the others it is one null-pointer test). EMQX compares the filter text
//! with the rules and grants `#` unchanged, so its subscriber receives the
//! denied topic; here it never does. Exceptions are derived from the rules when
//! a subscription is made, when its session is resumed and when the rules are
//! reloaded; they are never stored.

use std::borrow::Cow;

use super::settings::{AclAccess, AclRule};
use crate::core::exceptions::Exceptions;
use crate::core::topic::{covers, overlaps, Filter};

/// What a client asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send a message to a topic name.
    Publish,
    /// Subscribe with a topic filter.
    Subscribe,
}

/// What the rules answer to a subscription request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscribeDecision {
    /// No allow rule covers the filter, a deny rule covers it, or a placeholder
    /// value is unsafe: the client is told no (SUBACK 0x80 / 0x87, STOMP ERROR).
    Refused,
    /// Granted; the deny rules' filters it overlaps are its exceptions (most
    /// often none), which the core keeps from it.
    Granted(Exceptions),
}

/// Who is asking: the authenticated username (None: anonymous) and the client id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity<'a> {
    pub username: Option<&'a str>,
    pub client_id: &'a str,
}

/// A rule that cannot be used; `rule` counts from 1 in the order the rules were given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    #[error(
        "rule {rule}: name exactly one of `user`, `client_id`, `anonymous = true` or `all = true`"
    )]
    Subject { rule: usize },
    #[error("rule {rule}: give exactly one of `allow` or `deny` (\"publish\", \"subscribe\" or \"both\")")]
    Effect { rule: usize },
    #[error("rule {rule}: topic {topic:?} is not a valid filter: {reason}")]
    Topic {
        rule: usize,
        topic: String,
        reason: String,
    },
}

/// The compiled rules; cheap to share and to check.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
struct Rule {
    who: Who,
    allow: bool,
    publish: bool,
    subscribe: bool,
    topic: Template,
}

#[derive(Debug, Clone)]
enum Who {
    User(String),
    ClientId(String),
    Anonymous,
    All,
}

/// A rule's topic filter, parsed once when it has no placeholders.
#[derive(Debug, Clone)]
enum Template {
    Fixed(Filter),
    Pattern(Vec<Piece>),
}

#[derive(Debug, Clone)]
enum Piece {
    Text(String),
    User,
    ClientId,
}

/// A rule's filter for one identity.
enum Resolved<'r> {
    Filter(Cow<'r, Filter>),
    /// The rule needs a username and the client has none.
    NotApplicable,
    /// A placeholder value would change the filter's shape: deny.
    Unsafe,
}

impl Acl {
    /// Compiles the rules; the error names the first bad rule (counting from 1).
    pub fn new(rules: &[AclRule]) -> Result<Acl, AclError> {
        let rules = rules
            .iter()
            .enumerate()
            .map(|(i, rule)| Rule::compile(i + 1, rule))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Acl { rules })
    }

    /// True when there are no rules (everything but `$SYS` and `$dlq` is allowed).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// May `identity` publish to the topic name / subscribe with the filter?
    pub fn check(&self, identity: &Identity<'_>, action: Action, topic_or_filter: &str) -> bool {
        match action {
            Action::Publish => self.check_topic(identity, topic_or_filter, |r| r.publish),
            Action::Subscribe => matches!(
                self.subscribe(identity, topic_or_filter),
                SubscribeDecision::Granted(_)
            ),
        }
    }

    /// May `identity` receive a message published to `topic` (a retained message
    /// found by a subscription)? Checked against the subscribe rules.
    pub fn can_read(&self, identity: &Identity<'_>, topic: &str) -> bool {
        self.check_topic(identity, topic, |r| r.subscribe)
    }

    fn check_topic(&self, identity: &Identity<'_>, topic: &str, wanted: fn(&Rule) -> bool) -> bool {
        if self.rules.is_empty() {
            return !is_reserved_topic(topic);
        }
        let mut allowed = false;
        for rule in self.applicable(identity, wanted) {
            let filter = match rule.topic.resolve(identity) {
                Resolved::Filter(filter) => filter,
                Resolved::NotApplicable => continue,
                Resolved::Unsafe => return deny_unsafe(identity),
            };
            if filter.matches(topic) {
                if !rule.allow {
                    return false;
                }
                allowed = true;
            }
        }
        allowed
    }

    /// May `identity` subscribe with the `requested` filter, and with which exceptions?
    /// Refused when no allow rule covers it or a deny rule covers it; granted with
    /// the filters of the deny rules it only overlaps as its exceptions.
    pub fn subscribe(&self, identity: &Identity<'_>, requested: &str) -> SubscribeDecision {
        use SubscribeDecision::{Granted, Refused};
        let Ok(requested) = Filter::parse(requested) else {
            return Refused;
        };
        let requested = requested.topic_filter();
        if self.rules.is_empty() {
            return if is_reserved_topic(requested) {
                Refused
            } else {
                Granted(Exceptions::NONE)
            };
        }
        let mut allowed = false;
        let mut exceptions = Vec::new();
        for rule in self.applicable(identity, |r| r.subscribe) {
            let filter = match rule.topic.resolve(identity) {
                Resolved::Filter(filter) => filter,
                Resolved::NotApplicable => continue,
                Resolved::Unsafe => {
                    deny_unsafe(identity);
                    return Refused;
                }
            };
            if rule.allow {
                allowed = allowed || covers(filter.topic_filter(), requested);
            } else if covers(filter.topic_filter(), requested) {
                return Refused;
            } else if overlaps(filter.topic_filter(), requested) {
                exceptions.push(filter.into_owned());
            }
        }
        if allowed {
            Granted(Exceptions::new(exceptions))
        } else {
            Refused
        }
    }

    fn applicable<'s>(
        &'s self,
        identity: &'s Identity<'_>,
        wanted: fn(&Rule) -> bool,
    ) -> impl Iterator<Item = &'s Rule> + 's {
        self.rules
            .iter()
            .filter(move |rule| wanted(rule) && rule.who.applies(identity))
    }
}

fn deny_unsafe(identity: &Identity<'_>) -> bool {
    tracing::debug!(
        client_id = %identity.client_id,
        username = identity.username.unwrap_or(""),
        "ACL denied: username or client id is empty or holds '+', '#' or '/' and a rule substitutes it"
    );
    false
}

/// `$SYS` and `$dlq` topics (or filters): only a rule naming them grants them.
fn is_reserved_topic(topic: &str) -> bool {
    matches!(topic.split('/').next(), Some("$SYS" | "$dlq"))
}

impl Rule {
    fn compile(index: usize, rule: &AclRule) -> Result<Rule, AclError> {
        let who = match (&rule.user, &rule.client_id, rule.anonymous, rule.all) {
            (Some(user), None, false, false) => Who::User(user.clone()),
            (None, Some(id), false, false) => Who::ClientId(id.clone()),
            (None, None, true, false) => Who::Anonymous,
            (None, None, false, true) => Who::All,
            _ => return Err(AclError::Subject { rule: index }),
        };
        let (allow, access) = match (rule.allow, rule.deny) {
            (Some(access), None) => (true, access),
            (None, Some(access)) => (false, access),
            _ => return Err(AclError::Effect { rule: index }),
        };
        let topic = Template::parse(&rule.topic).map_err(|reason| AclError::Topic {
            rule: index,
            topic: rule.topic.clone(),
            reason,
        })?;
        Ok(Rule {
            who,
            allow,
            publish: matches!(access, AclAccess::Publish | AclAccess::Both),
            subscribe: matches!(access, AclAccess::Subscribe | AclAccess::Both),
            topic,
        })
    }
}

impl Who {
    fn applies(&self, identity: &Identity<'_>) -> bool {
        match self {
            Who::User(user) => identity.username == Some(user.as_str()),
            Who::ClientId(id) => identity.client_id == id,
            Who::Anonymous => identity.username.is_none(),
            Who::All => true,
        }
    }
}

impl Template {
    fn parse(topic: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut chars = topic.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                text.push(c);
                continue;
            }
            let piece = match chars.next() {
                Some('u') => Piece::User,
                Some('c') => Piece::ClientId,
                _ => return Err("'%' must be followed by 'u' (username) or 'c' (client id)".into()),
            };
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(piece);
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        // Check the shape with a harmless value in every placeholder.
        let sample = render(&pieces, "x", "x");
        let filter = Filter::parse(&sample).map_err(|e| e.to_string())?;
        if filter.share_group().is_some() {
            return Err("rules name the filter itself, without `$share/<group>/`".into());
        }
        if pieces.iter().all(|p| matches!(p, Piece::Text(_))) {
            Ok(Template::Fixed(filter))
        } else {
            Ok(Template::Pattern(pieces))
        }
    }

    fn resolve(&self, identity: &Identity<'_>) -> Resolved<'_> {
        let pieces = match self {
            Template::Fixed(filter) => return Resolved::Filter(Cow::Borrowed(filter)),
            Template::Pattern(pieces) => pieces,
        };
        let needs_user = pieces.iter().any(|p| matches!(p, Piece::User));
        let needs_client = pieces.iter().any(|p| matches!(p, Piece::ClientId));
        let user = match (needs_user, identity.username) {
            (false, _) => "",
            (true, None) => return Resolved::NotApplicable,
            (true, Some(user)) if safe_value(user) => user,
            (true, Some(_)) => return Resolved::Unsafe,
        };
        if needs_client && !safe_value(identity.client_id) {
            return Resolved::Unsafe;
        }
        match Filter::parse(&render(pieces, user, identity.client_id)) {
            Ok(filter) => Resolved::Filter(Cow::Owned(filter)),
            Err(_) => Resolved::Unsafe,
        }
    }
}

/// A value that fills one placeholder without changing the filter's shape.
fn safe_value(value: &str) -> bool {
    !value.is_empty() && !value.contains(['+', '#', '/', '\0'])
}

fn render(pieces: &[Piece], user: &str, client_id: &str) -> String {
    let mut out = String::new();
    for piece in pieces {
        out.push_str(match piece {
            Piece::Text(text) => text,
            Piece::User => user,
            Piece::ClientId => client_id,
        });
    }
    out
}
