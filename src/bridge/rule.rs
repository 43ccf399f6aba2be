//! One bridge topic rule in Mosquitto's syntax, so a `mosquitto.conf` bridge
//! moves over as is:
//!
//! `[topic] <pattern> [out|in|both [qos [local-prefix [remote-prefix]]]]`
//!
//! - direction defaults to `out`, qos to 0 (mosquitto.conf(5), "topic");
//! - `""` is the empty marker: an empty pattern or an empty prefix;
//! - the local side is `local-prefix + pattern`, the remote side
//!   `remote-prefix + pattern`: `sensors/# out 1 site7/ plant/` takes local
//!   `site7/sensors/#` to remote `plant/sensors/#`;
//! - an empty pattern remaps one topic: `"" both 0 local/t remote/t`; it needs
//!   both prefixes (Mosquitto's table: `""` with one or no prefix is invalid);
//! - prefixes are topic names (no `+` or `#`).
//!
//! A message crossing the bridge loses the prefix of the side it comes from
//! and gains the other's ([`TopicRule::to_remote`], [`TopicRule::to_local`]).

use crate::core::topic::{validate_topic_name, Filter};

/// Which way a rule carries messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Local messages to the remote broker.
    Out,
    /// Remote messages into this broker.
    In,
    Both,
}

impl Direction {
    pub fn outbound(self) -> bool {
        matches!(self, Direction::Out | Direction::Both)
    }

    pub fn inbound(self) -> bool {
        matches!(self, Direction::In | Direction::Both)
    }
}

/// A parsed rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRule {
    /// The pattern as written (may be empty: one remapped topic).
    pub pattern: String,
    pub direction: Direction,
    /// QoS of the subscriptions on both sides (so a message crosses at most at it).
    pub qos: u8,
    pub local_prefix: String,
    pub remote_prefix: String,
}

/// A rule that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bridge topic rule {rule:?}: {reason}")]
pub struct RuleError {
    pub rule: String,
    pub reason: String,
}

/// The `""` marker of Mosquitto's config: an empty value.
fn unquote(token: &str) -> &str {
    if token == "\"\"" {
        ""
    } else {
        token
    }
}

impl TopicRule {
    /// Parses one rule; the leading `topic` keyword of mosquitto.conf is optional.
    pub fn parse(text: &str) -> Result<TopicRule, RuleError> {
        let error = |reason: &str| RuleError {
            rule: text.to_string(),
            reason: reason.to_string(),
        };
        let mut tokens: Vec<&str> = text.split_whitespace().collect();
        if tokens.first() == Some(&"topic") && tokens.len() > 1 {
            tokens.remove(0);
        }
        if tokens.is_empty() {
            return Err(error("is empty"));
        }
        if tokens.len() > 5 {
            return Err(error(
                "has more than: pattern, direction, qos, local prefix, remote prefix",
            ));
        }
        let pattern = unquote(tokens[0]).to_string();
        let direction = match tokens.get(1).copied() {
            None | Some("out") => Direction::Out,
            Some("in") => Direction::In,
            Some("both") => Direction::Both,
            Some(_) => return Err(error("direction must be out, in or both")),
        };
        let qos = match tokens.get(2).copied() {
            None => 0,
            Some("0") => 0,
            Some("1") => 1,
            Some("2") => 2,
            Some(_) => return Err(error("qos must be 0, 1 or 2")),
        };
        let local_prefix = tokens.get(3).map_or("", |t| unquote(t)).to_string();
        let remote_prefix = tokens.get(4).map_or("", |t| unquote(t)).to_string();
        for (prefix, side) in [(&local_prefix, "local"), (&remote_prefix, "remote")] {
            if !prefix.is_empty() && validate_topic_name(prefix).is_err() {
                return Err(error(&format!(
                    "the {side} prefix must be a topic name (no '+' or '#')"
                )));
            }
        }
        if pattern.is_empty() && (local_prefix.is_empty() || remote_prefix.is_empty()) {
            return Err(error(
                "an empty pattern (\"\") needs both a local and a remote prefix",
            ));
        }
        let rule = TopicRule {
            pattern,
            direction,
            qos,
            local_prefix,
            remote_prefix,
        };
        for (side, filter) in [
            ("local", rule.local_filter()),
            ("remote", rule.remote_filter()),
        ] {
            if let Err(e) = Filter::parse(&filter) {
                return Err(error(&format!("{side} filter {filter:?} is invalid: {e}")));
            }
            if filter.starts_with("$share/") {
                return Err(error(&format!(
                    "{side} filter {filter:?} is a shared subscription"
                )));
            }
        }
        Ok(rule)
    }

    /// The filter subscribed on this broker (outbound rules).
    pub fn local_filter(&self) -> String {
        format!("{}{}", self.local_prefix, self.pattern)
    }

    /// The filter subscribed on the remote broker (inbound rules).
    pub fn remote_filter(&self) -> String {
        format!("{}{}", self.remote_prefix, self.pattern)
    }

    /// The remote topic of a local one this rule sends out, or None if the
    /// rule does not send it.
    pub fn to_remote(&self, local_topic: &str) -> Option<String> {
        if !self.direction.outbound() {
            return None;
        }
        map_topic(
            local_topic,
            &self.local_filter(),
            &self.local_prefix,
            &self.remote_prefix,
        )
    }

    /// The local topic of a remote one this rule takes in, or None if the
    /// rule does not take it.
    pub fn to_local(&self, remote_topic: &str) -> Option<String> {
        if !self.direction.inbound() {
            return None;
        }
        map_topic(
            remote_topic,
            &self.remote_filter(),
            &self.remote_prefix,
            &self.local_prefix,
        )
    }
}

/// `topic` matched against `filter`, `from` prefix replaced by `to`.
fn map_topic(topic: &str, filter: &str, from: &str, to: &str) -> Option<String> {
    let filter = Filter::parse(filter).ok()?;
    if !filter.matches(topic) {
        return None;
    }
    let rest = topic.strip_prefix(from)?;
    Some(format!("{to}{rest}"))
}

/// The first rule that sends `local_topic` out: its remote topic and QoS.
pub fn outbound_topic(rules: &[TopicRule], local_topic: &str) -> Option<(String, u8)> {
    rules
        .iter()
        .find_map(|rule| rule.to_remote(local_topic).map(|t| (t, rule.qos)))
}

/// The first rule that takes `remote_topic` in: its local topic.
pub fn inbound_topic(rules: &[TopicRule], remote_topic: &str) -> Option<String> {
    rules.iter().find_map(|rule| rule.to_local(remote_topic))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> TopicRule {
        match TopicRule::parse(text) {
            Ok(rule) => rule,
            Err(e) => panic!("{text:?} should parse: {e}"),
        }
    }

    #[test]
    fn pattern_alone_defaults_to_out_at_qos_0_without_prefixes() {
        // mosquitto.conf(5): "the default of out is used", QoS "defaults to 0".
        let r = rule("topic sensors/#");
        assert_eq!(r.direction, Direction::Out);
        assert_eq!(r.qos, 0);
        assert_eq!(
            (r.local_filter(), r.remote_filter()),
            ("sensors/#".into(), "sensors/#".into())
        );
        assert_eq!(rule("sensors/#"), r, "the keyword `topic` is optional");
    }

    #[test]
    fn direction_and_qos_forms() {
        assert_eq!(rule("a/# in").direction, Direction::In);
        assert_eq!(rule("a/# both").direction, Direction::Both);
        let r = rule("a/# out 2");
        assert_eq!((r.direction, r.qos), (Direction::Out, 2));
        assert!(TopicRule::parse("a/# sideways").is_err());
        assert!(TopicRule::parse("a/# out 3").is_err());
        assert!(TopicRule::parse("a/# out one").is_err());
    }

    #[test]
    fn table_row_pattern_l_r_maps_l_pattern_to_r_pattern() {
        // "if you publish to L/topic on the local broker, then the remote broker
        // will receive a message on the topic R/topic."
        let r = rule("topic topic both 0 L/ R/");
        assert_eq!(r.local_filter(), "L/topic");
        assert_eq!(r.remote_filter(), "R/topic");
        assert_eq!(r.to_remote("L/topic").as_deref(), Some("R/topic"));
        assert_eq!(r.to_local("R/topic").as_deref(), Some("L/topic"));
    }

    #[test]
    fn table_row_pattern_l_empty() {
        let r = rule("topic pattern both 0 L/ \"\"");
        assert_eq!(
            (r.local_filter(), r.remote_filter()),
            ("L/pattern".into(), "pattern".into())
        );
        assert_eq!(r.to_remote("L/pattern").as_deref(), Some("pattern"));
    }

    #[test]
    fn table_row_pattern_empty_r() {
        let r = rule("topic pattern both 0 \"\" R/");
        assert_eq!(
            (r.local_filter(), r.remote_filter()),
            ("pattern".into(), "R/pattern".into())
        );
        assert_eq!(r.to_local("R/pattern").as_deref(), Some("pattern"));
    }

    #[test]
    fn table_row_pattern_empty_empty_is_no_remapping() {
        let r = rule("topic pattern both 0 \"\" \"\"");
        assert_eq!(r.to_remote("pattern").as_deref(), Some("pattern"));
        assert_eq!(r.to_local("pattern").as_deref(), Some("pattern"));
    }

    #[test]
    fn table_row_empty_pattern_remaps_a_single_topic() {
        let r = rule("topic \"\" both 0 local remote");
        assert_eq!(
            (r.local_filter(), r.remote_filter()),
            ("local".into(), "remote".into())
        );
        assert_eq!(r.to_remote("local").as_deref(), Some("remote"));
        assert_eq!(r.to_local("remote").as_deref(), Some("local"));
        assert_eq!(r.to_remote("local/x"), None);
    }

    #[test]
    fn table_rows_empty_pattern_without_both_prefixes_are_invalid() {
        for text in [
            "topic \"\" both 0 local \"\"",
            "topic \"\" both 0 \"\" remote",
            "topic \"\" both 0 \"\" \"\"",
            "topic \"\"",
        ] {
            assert!(TopicRule::parse(text).is_err(), "{text} must be refused");
        }
    }

    #[test]
    fn remap_an_entire_tree() {
        // "To remap an entire topic tree, use e.g.: topic # both 2 local/topic/ remote/topic/"
        let r = rule("topic # both 2 local/topic/ remote/topic/");
        assert_eq!(r.qos, 2);
        assert_eq!(r.local_filter(), "local/topic/#");
        assert_eq!(r.remote_filter(), "remote/topic/#");
        assert_eq!(
            r.to_remote("local/topic/a/b").as_deref(),
            Some("remote/topic/a/b")
        );
        assert_eq!(
            r.to_local("remote/topic/a/b").as_deref(),
            Some("local/topic/a/b")
        );
        assert_eq!(r.to_remote("other/a"), None);
    }

    #[test]
    fn issue_examples() {
        let out = rule("sensors/# out 1");
        assert_eq!(out.to_remote("sensors/t1").as_deref(), Some("sensors/t1"));
        assert_eq!(out.to_local("sensors/t1"), None, "out does not take in");
        let r = rule("commands/# in 1 site7/ plant/");
        assert_eq!(r.remote_filter(), "plant/commands/#");
        assert_eq!(
            r.to_local("plant/commands/open").as_deref(),
            Some("site7/commands/open")
        );
        assert_eq!(
            r.to_remote("site7/commands/open"),
            None,
            "in does not send out"
        );
    }

    #[test]
    fn local_prefix_alone_is_allowed() {
        let r = rule("a/# out 1 L/");
        assert_eq!(
            (r.local_filter(), r.remote_filter()),
            ("L/a/#".into(), "a/#".into())
        );
    }

    #[test]
    fn malformed_rules_are_refused() {
        for text in [
            "",
            "a/#/b out",
            "a/# out 1 L/+/ R/",
            "a/# out 1 L/ R/#",
            "a/# out 1 L/ R/ extra",
            "$share/g/a out",
        ] {
            assert!(TopicRule::parse(text).is_err(), "{text:?} must be refused");
        }
    }

    #[test]
    fn first_matching_rule_maps_a_topic() {
        let rules = vec![rule("a/# out 1 \"\" x/"), rule("# out 0 \"\" y/")];
        assert_eq!(outbound_topic(&rules, "a/1"), Some(("x/a/1".into(), 1)));
        assert_eq!(outbound_topic(&rules, "b"), Some(("y/b".into(), 0)));
        assert_eq!(inbound_topic(&rules, "x/a/1"), None);
    }
}
