//! Topic names and subscription filters.
//!
//! Topic names are '/'-separated levels; a level may be empty.
//!
//! Valid topic names:     "a", "a/b/c", "/a", "a/", "a//b", "$SYS/broker/load"
//! Invalid topic names:   "" (empty), "a/+", "a/#", "a+b" (wildcard characters), "a\0b" (NUL)
//!
//! Valid filters:         "a/b", "a/+/c", "+", "#", "a/#", "+/+", "/+", "a//b", "a/", "$SYS/#",
//!                        "$share/g/a/+", "$share/g/#"
//! Invalid filters:       "" (empty), "a+", "a/b#", "#/a", "a/#/b" (misplaced wildcard),
//!                        "$share/g" and "$share//a" and "$share/g+/a" (bad share group),
//!                        "$share/g/" (empty filter)
//!
//! Matching examples (filter -> topic):
//!   "sport/tennis/player1/#" matches "sport/tennis/player1", "sport/tennis/player1/score/wimbledon"
//!   "sport/#"                matches "sport" ('#' also matches the parent level)
//!   "+/+" and "/+"           match   "/finance"
//!   "$SYS/#"                 matches "$SYS/monitor/Clients"
//! Non-matching examples:
//!   "+"                      does not match "/finance" (two levels)
//!   "sport/+"                does not match "sport" nor "sport/tennis/player1"
//!   "#", "+/monitor/Clients" do not match "$SYS/monitor/Clients" (the '$' rule)
//!   "a/b"                    does not match "a/b/" (an empty trailing level is a level)
//!
//! Relations between two filters (the ACL decides subscriptions with them):
//!   covers   (every topic B matches, A matches too): "a/#" covers "a", "a/+/c", "a/#";
//!            "a/+" covers "a/b" but not "a/#" nor "a/b/c"; "#" does not cover "$SYS/#"
//!   overlaps (some topic matches both): "a/+" and "+/b"; "a/#" and "a";
//!            not "a/b" and "a/c", nor "#" and "$SYS/x"

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// Maximum length in bytes of a topic name or filter (MQTT's UTF-8 string limit).
pub const MAX_TOPIC_LEN: usize = 65_535;

const SHARE_PREFIX: &str = "$share/";

/// Why a topic name or filter was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The topic name or filter is empty.
    #[error("topic is empty")]
    Empty,
    /// A topic name (as published to) contains '+' or '#'.
    #[error("topic name contains a wildcard ('+' or '#')")]
    WildcardInName,
    /// A wildcard does not occupy a whole level, or '#' is not the last level.
    #[error("wildcard must occupy a whole level and '#' must be the last level")]
    MisplacedWildcard,
    /// A `$share/<group>/<filter>` subscription with a missing or invalid group name.
    #[error("invalid shared subscription: group must be non-empty and contain no '/', '+' or '#'")]
    InvalidShareGroup,
    /// The topic contains a NUL character.
    #[error("topic contains a NUL character")]
    ContainsNul,
    /// The topic is longer than 65535 bytes.
    #[error("topic is longer than 65535 bytes")]
    TooLong,
}

/// Checks common to names and filters.
fn check_common(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong);
    }
    if s.contains('\0') {
        return Err(TopicError::ContainsNul);
    }
    Ok(())
}

/// A topic name a message is published to: non-empty, no '+' or '#', no NUL, at most 65535 bytes.
pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    check_common(name)?;
    if name.contains(['+', '#']) {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// Validates the levels of a (non-shared part of a) filter; returns whether it has wildcards.
fn check_filter_levels(filter: &str) -> Result<bool, TopicError> {
    if filter.is_empty() {
        return Err(TopicError::Empty);
    }
    let mut wildcards = false;
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        match level {
            "+" => wildcards = true,
            "#" if levels.peek().is_none() => wildcards = true,
            "#" => return Err(TopicError::MisplacedWildcard),
            l if l.contains(['+', '#']) => return Err(TopicError::MisplacedWildcard),
            _ => {}
        }
    }
    Ok(wildcards)
}

/// A parsed subscription filter.
///
/// Equality and hashing are those of the raw text (`as_str`). The text is
/// shared: the session, the trie and the router each keep the filter, and a
/// clone costs no copy. Offsets are 16-bit (a filter has at most 65535 bytes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Filter {
    raw: Arc<str>,
    /// Byte length of the share group name (which starts right after "$share/"), if shared.
    group_len: Option<u16>,
    /// Byte offset in `raw` where the topic filter proper starts.
    filter_start: u16,
    wildcards: bool,
}

impl Filter {
    /// Parses "a/+/c", "a/#", "#", "+", "$share/<group>/<filter>" (group: non-empty, no '+', '#', '/';
    /// filter non-empty & valid).
    /// '+' and '#' must occupy a whole level; '#' only last. Empty levels ("a//b", "/a", "a/") are valid.
    /// The bare text "$share" is rejected as an incomplete shared subscription.
    pub fn parse(raw: &str) -> Result<Filter, TopicError> {
        check_common(raw)?;
        let (group_len, filter_start) = if raw == "$share" || raw.starts_with(SHARE_PREFIX) {
            let rest = raw.get(SHARE_PREFIX.len()..).unwrap_or("");
            let (group, _) = rest.split_once('/').ok_or(TopicError::InvalidShareGroup)?;
            if group.is_empty() || group.contains(['+', '#']) {
                return Err(TopicError::InvalidShareGroup);
            }
            (Some(group.len()), SHARE_PREFIX.len() + group.len() + 1)
        } else {
            (None, 0)
        };
        let wildcards = check_filter_levels(raw.get(filter_start..).unwrap_or(""))?;
        let short = |n: usize| u16::try_from(n).map_err(|_| TopicError::TooLong);
        Ok(Filter {
            raw: Arc::from(raw),
            group_len: group_len.map(short).transpose()?,
            filter_start: short(filter_start)?,
            wildcards,
        })
    }

    /// The raw text as subscribed (including any `$share/<group>/` prefix).
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The raw text, shared with this filter.
    pub fn shared_str(&self) -> Arc<str> {
        Arc::clone(&self.raw)
    }

    /// The filter without the `$share/<group>/` prefix.
    pub fn topic_filter(&self) -> &str {
        self.raw.get(usize::from(self.filter_start)..).unwrap_or("")
    }

    /// The share group name of a `$share/<group>/<filter>` subscription.
    pub fn share_group(&self) -> Option<&str> {
        let len = usize::from(self.group_len?);
        self.raw.get(SHARE_PREFIX.len()..SHARE_PREFIX.len() + len)
    }

    /// Whether the topic filter contains '+' or '#'.
    pub fn has_wildcards(&self) -> bool {
        self.wildcards
    }

    /// Does this filter match this topic name? ($-rule: a topic beginning with '$' is not matched by
    /// a filter whose first level is '+' or '#'.) A shared filter matches with its `topic_filter()`.
    pub fn matches(&self, topic: &str) -> bool {
        let filter = self.topic_filter();
        if !self.wildcards {
            return filter == topic;
        }
        // A literal prefix then `/#` (a stream's `sensors/#`): the prefix itself
        // and every topic under it, without walking the levels. The first level
        // is literal, so the '$' rule does not apply.
        if let Some(prefix) = filter.strip_suffix("/#") {
            if !prefix.is_empty() && !prefix.contains('+') {
                return topic
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
            }
        }
        let mut f = filter.split('/');
        let mut t = topic.split('/');
        let mut first = true;
        loop {
            let level = f.next();
            if first && topic.starts_with('$') && matches!(level, Some("+" | "#")) {
                return false;
            }
            first = false;
            match (level, t.next()) {
                (Some("#"), _) => return true,
                (Some("+"), Some(_)) => {}
                (Some(fl), Some(tl)) if fl == tl => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }

    /// Does every topic this filter matches, `other` match too? Compares the
    /// topic filters (a `$share/<group>/` prefix is not part of what is matched).
    /// `a/#` covers `a`, `a/+/c` and `a/#`; `a/+` covers `a/b` but not `a/#`;
    /// `#` does not cover `$SYS/#` (the '$' rule).
    pub fn covers(&self, other: &Filter) -> bool {
        covers(self.topic_filter(), other.topic_filter())
    }

    /// Is there a topic both filters match? `a/+` overlaps `+/b`; `a/#`
    /// overlaps `a`; `a/b` does not overlap `a/c`; `#` does not overlap `$SYS/x`.
    pub fn overlaps(&self, other: &Filter) -> bool {
        overlaps(self.topic_filter(), other.topic_filter())
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl FromStr for Filter {
    type Err = TopicError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Filter::parse(s)
    }
}

/// Does every topic matched by `requested` match `rule` too? (Both are valid
/// topic filters without a `$share` prefix; see [`Filter::covers`].)
pub fn covers(rule: &str, requested: &str) -> bool {
    let mut r = rule.split('/');
    let mut f = requested.split('/');
    let mut first = true;
    loop {
        let (rl, fl) = (r.next(), f.next());
        if first && leading_wildcard_meets_dollar(rl, fl) {
            return false;
        }
        first = false;
        match (rl, fl) {
            (Some("#"), _) => return true,
            (None, None) => return true,
            (Some("+"), Some(level)) if level != "#" => {}
            (Some(rl), Some(fl)) if rl != "+" && rl == fl => {}
            _ => return false,
        }
    }
}

/// Is there a topic matched by both filters? (Both valid, without `$share`;
/// see [`Filter::overlaps`].)
pub fn overlaps(a: &str, b: &str) -> bool {
    let mut a_levels = a.split('/');
    let mut b_levels = b.split('/');
    let mut first = true;
    loop {
        let (al, bl) = (a_levels.next(), b_levels.next());
        if first && (leading_wildcard_meets_dollar(al, bl) || leading_wildcard_meets_dollar(bl, al))
        {
            return false;
        }
        first = false;
        match (al, bl) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (None, None) => return true,
            (Some("+"), Some(_)) | (Some(_), Some("+")) => {}
            (Some(x), Some(y)) if x == y => {}
            _ => return false,
        }
    }
}

/// The `$` rule on a first level: a leading wildcard matches no `$` topic.
fn leading_wildcard_meets_dollar(wild: Option<&str>, other: Option<&str>) -> bool {
    matches!(wild, Some("+" | "#")) && other.is_some_and(|l| l.starts_with('$'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str) -> Filter {
        match Filter::parse(s) {
            Ok(f) => f,
            Err(e) => panic!("{s:?} should parse: {e}"),
        }
    }

    #[test]
    fn valid_topic_names_are_accepted() {
        for name in ["a", "a/b/c", "/a", "a/", "a//b", "/", "$SYS/broker", "ä/ö"] {
            assert_eq!(validate_topic_name(name), Ok(()), "{name:?}");
        }
    }

    #[test]
    fn invalid_topic_names_are_rejected() {
        assert_eq!(validate_topic_name(""), Err(TopicError::Empty));
        assert_eq!(validate_topic_name("a/+"), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name("a/#"), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name("a+b"), Err(TopicError::WildcardInName));
        assert_eq!(validate_topic_name("a\0b"), Err(TopicError::ContainsNul));
        let long = "a".repeat(MAX_TOPIC_LEN + 1);
        assert_eq!(validate_topic_name(&long), Err(TopicError::TooLong));
        assert_eq!(validate_topic_name(&long[1..]), Ok(()));
    }

    #[test]
    fn valid_filters_parse() {
        for s in [
            "a", "a/b", "a/+/c", "+", "#", "a/#", "+/+", "/+", "a//b", "a/", "/", "+/#", "$SYS/#",
        ] {
            let filter = f(s);
            assert_eq!(filter.as_str(), s);
            assert_eq!(filter.topic_filter(), s);
            assert_eq!(filter.share_group(), None);
        }
    }

    #[test]
    fn misplaced_wildcards_are_rejected() {
        for s in ["a+", "+a", "a/b#", "#/a", "a/#/b", "a/++", "##", "a/+#"] {
            assert_eq!(
                Filter::parse(s),
                Err(TopicError::MisplacedWildcard),
                "{s:?}"
            );
        }
    }

    #[test]
    fn empty_nul_and_too_long_filters_are_rejected() {
        assert_eq!(Filter::parse(""), Err(TopicError::Empty));
        assert_eq!(Filter::parse("a/\0"), Err(TopicError::ContainsNul));
        let long = "a".repeat(MAX_TOPIC_LEN + 1);
        assert_eq!(Filter::parse(&long), Err(TopicError::TooLong));
    }

    #[test]
    fn shared_filters_expose_group_and_topic_filter() {
        let s = f("$share/workers/jobs/+");
        assert_eq!(s.as_str(), "$share/workers/jobs/+");
        assert_eq!(s.share_group(), Some("workers"));
        assert_eq!(s.topic_filter(), "jobs/+");
        assert!(s.has_wildcards());
        let s = f("$share/g/#");
        assert_eq!((s.share_group(), s.topic_filter()), (Some("g"), "#"));
        let s = f("$share/g//");
        assert_eq!((s.share_group(), s.topic_filter()), (Some("g"), "/"));
    }

    #[test]
    fn invalid_share_groups_are_rejected() {
        for s in [
            "$share",
            "$share/",
            "$share/g",
            "$share//a",
            "$share/g+/a",
            "$share/#/a",
        ] {
            assert_eq!(
                Filter::parse(s),
                Err(TopicError::InvalidShareGroup),
                "{s:?}"
            );
        }
        assert_eq!(Filter::parse("$share/g/"), Err(TopicError::Empty));
        assert_eq!(
            Filter::parse("$share/g/a#"),
            Err(TopicError::MisplacedWildcard)
        );
    }

    #[test]
    fn share_prefix_lookalikes_are_ordinary_filters() {
        let s = f("$shared/g/a");
        assert_eq!(s.share_group(), None);
        assert_eq!(s.topic_filter(), "$shared/g/a");
    }

    #[test]
    fn has_wildcards_reflects_plus_and_hash() {
        assert!(!f("a/b").has_wildcards());
        assert!(!f("$share/g/a/b").has_wildcards());
        assert!(f("a/+").has_wildcards());
        assert!(f("#").has_wildcards());
    }

    #[test]
    fn exact_filter_matches_only_identical_topic() {
        assert!(f("a/b").matches("a/b"));
        assert!(!f("a/b").matches("a/b/"));
        assert!(!f("a/b").matches("a"));
        assert!(f("a//b").matches("a//b"));
    }

    #[test]
    fn plus_matches_exactly_one_level() {
        let p = f("sport/tennis/+");
        assert!(p.matches("sport/tennis/player1"));
        assert!(p.matches("sport/tennis/"));
        assert!(!p.matches("sport/tennis/player1/ranking"));
        assert!(!p.matches("sport/tennis"));
        assert!(!f("sport/+").matches("sport"));
        assert!(f("sport/+").matches("sport/"));
        assert!(f("+").matches("a"));
        assert!(!f("+").matches("a/b"));
    }

    #[test]
    fn hash_matches_parent_level() {
        assert!(f("sport/#").matches("sport"));
        assert!(f("+/#").matches("a"));
        assert!(!f("sport/#").matches("sports"));
        assert!(f("a/b/#").matches("a/b/"));
        assert!(f("a/b/#").matches("a/b/c/d"));
        assert!(!f("a/b/#").matches("a/bc"));
        assert!(!f("a/b/#").matches("a"));
        assert!(f("/#").matches("/a"));
        assert!(!f("/#").matches("a"));
    }

    #[test]
    fn spec_multi_level_wildcard_examples() {
        let p = f("sport/tennis/player1/#");
        assert!(p.matches("sport/tennis/player1"));
        assert!(p.matches("sport/tennis/player1/ranking"));
        assert!(p.matches("sport/tennis/player1/score/wimbledon"));
        assert!(!p.matches("sport/tennis/player2"));
        assert!(f("#").matches("a/b/c"));
        assert!(f("#").matches("/"));
    }

    #[test]
    fn spec_single_level_wildcard_examples() {
        assert!(f("+/+").matches("/finance"));
        assert!(f("/+").matches("/finance"));
        assert!(!f("+").matches("/finance"));
        assert!(f("sport/+/player1").matches("sport/tennis/player1"));
    }

    #[test]
    fn dollar_topics_not_matched_by_leading_wildcard() {
        assert!(!f("#").matches("$SYS/monitor/Clients"));
        assert!(!f("+/monitor/Clients").matches("$SYS/monitor/Clients"));
        assert!(!f("+").matches("$SYS"));
        assert!(f("$SYS/#").matches("$SYS/monitor/Clients"));
        assert!(f("$SYS/monitor/+").matches("$SYS/monitor/Clients"));
        assert!(f("+/monitor/Clients").matches("a/monitor/Clients"));
        // '$' not at the start is ordinary.
        assert!(f("+/$x").matches("a/$x"));
        assert!(f("a/#").matches("a/$x"));
    }

    #[test]
    fn shared_filter_matches_with_its_topic_filter() {
        assert!(f("$share/g/a/+").matches("a/b"));
        assert!(!f("$share/g/a/+").matches("$share/g/a/b"));
        assert!(!f("$share/g/#").matches("$SYS/x"));
    }

    #[test]
    fn filter_display_and_from_str_round_trip() {
        let parsed: Filter = match "a/+/#".parse() {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(parsed.to_string(), "a/+/#");
        assert!("a/#/b".parse::<Filter>().is_err());
    }

    #[test]
    fn errors_have_human_readable_messages() {
        assert_eq!(TopicError::Empty.to_string(), "topic is empty");
        assert!(TopicError::InvalidShareGroup.to_string().contains("group"));
    }

    #[test]
    fn covering_follows_the_level_rules() {
        for (rule, requested) in [
            ("#", "#"),
            ("#", "a/b"),
            ("#", "+/+"),
            ("a/#", "a"),
            ("a/#", "a/#"),
            ("a/#", "a/+/c"),
            ("a/+", "a/b"),
            ("a/+", "a/+"),
            ("a/b", "a/b"),
            ("+/+", "/x"),
            ("$SYS/#", "$SYS/broker/+"),
            ("a//b", "a//b"),
        ] {
            assert!(covers(rule, requested), "{rule} should cover {requested}");
        }
        for (rule, requested) in [
            ("a/+", "a/#"),
            ("a/+", "a/b/c"),
            ("a/+", "a"),
            ("a/b", "a/+"),
            ("a/b", "a/b/c"),
            ("a", "a/#"),
            ("#", "$SYS/#"),
            ("+/x", "$SYS/x"),
            ("+", "#"),
            ("a/b/#", "a/+/#"),
        ] {
            assert!(
                !covers(rule, requested),
                "{rule} should not cover {requested}"
            );
        }
    }

    #[test]
    fn overlap_is_symmetric_and_follows_the_level_rules() {
        for (a, b) in [
            ("#", "a"),
            ("a/+", "+/b"),
            ("a/#", "a"),
            ("a/b", "a/b"),
            ("+", "x"),
            ("$SYS/#", "$SYS/x"),
            ("#", "+/+"),
        ] {
            assert!(overlaps(a, b), "{a} should overlap {b}");
            assert!(overlaps(b, a), "{b} should overlap {a}");
        }
        for (a, b) in [
            ("a/b", "a/c"),
            ("a/+", "a/b/c"),
            ("#", "$SYS/x"),
            ("+/x", "$SYS/x"),
            ("a", "a/b"),
        ] {
            assert!(!overlaps(a, b), "{a} should not overlap {b}");
            assert!(!overlaps(b, a), "{b} should not overlap {a}");
        }
    }

    #[test]
    fn filter_relations_ignore_the_share_prefix() {
        assert!(f("#").covers(&f("$share/g/a/+")));
        assert!(f("a/+").overlaps(&f("$share/g/+/b")));
        assert!(!f("a/b").covers(&f("$share/g/a/+")));
        assert!(!f("#").overlaps(&f("$share/g/$SYS/x")));
    }
}
