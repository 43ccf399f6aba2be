//! A subscription's exceptions: topic filters it must not deliver although its
//! own filter matches them. The access rules put them there (a deny rule that
//! overlaps a granted filter without covering it); the core only skips them.
//!
//! Most subscriptions have none, and then the check is one null-pointer test:
//! no list is allocated and no filter is compared. A subscription with
//! exceptions compares each delivered topic with each of them (a few at most).
//!
//! Exceptions are derived from the rules in force whenever a subscription is
//! made, resumed or the rules are reloaded; they are never stored.

use std::sync::Arc;

use crate::core::topic::Filter;

/// The filters a subscription skips; empty for most. One pointer wide, shared
/// (not copied) by the session's list and the trie.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exceptions(Option<Arc<Vec<Filter>>>);

impl Exceptions {
    /// No exceptions: the subscription gets everything its filter matches.
    pub const NONE: Exceptions = Exceptions(None);

    /// The given filters as exceptions (none if the list is empty). A filter
    /// another one already covers is left out: it would never decide anything.
    pub fn new(mut filters: Vec<Filter>) -> Exceptions {
        let mut kept: Vec<Filter> = Vec::with_capacity(filters.len());
        // Wider filters first, so the narrower ones they cover are dropped.
        filters.sort_by_key(|f| std::cmp::Reverse(f.has_wildcards()));
        for filter in filters {
            if !kept.iter().any(|k| k.covers(&filter)) {
                kept.retain(|k| !filter.covers(k));
                kept.push(filter);
            }
        }
        if kept.is_empty() {
            Exceptions::NONE
        } else {
            kept.shrink_to_fit();
            Exceptions(Some(Arc::new(kept)))
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The filters, for logs and tests.
    pub fn filters(&self) -> &[Filter] {
        self.0.as_deref().map_or(&[], Vec::as_slice)
    }

    /// Must a message published to `topic` be kept from this subscription?
    #[inline]
    pub fn excludes(&self, topic: &str) -> bool {
        match &self.0 {
            None => false,
            Some(filters) => filters.iter().any(|f| f.matches(topic)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters(raw: &[&str]) -> Vec<Filter> {
        raw.iter()
            .map(|r| Filter::parse(r).unwrap_or_else(|e| panic!("{r}: {e}")))
            .collect()
    }

    #[test]
    fn no_exceptions_exclude_nothing() {
        assert!(Exceptions::NONE.is_empty());
        assert!(Exceptions::new(Vec::new()).is_empty());
        assert!(!Exceptions::NONE.excludes("test/nosubscribe"));
    }

    #[test]
    fn exceptions_exclude_exactly_the_topics_they_match() {
        let ex = Exceptions::new(filters(&["test/nosubscribe", "plant/keys/#"]));
        assert!(ex.excludes("test/nosubscribe"));
        assert!(ex.excludes("plant/keys"));
        assert!(ex.excludes("plant/keys/k1"));
        assert!(!ex.excludes("test/nosubscribe/x"));
        assert!(!ex.excludes("test/other"));
        assert!(!ex.excludes("plant/temp"));
    }

    #[test]
    fn a_covered_exception_is_left_out() {
        let ex = Exceptions::new(filters(&["a/b", "a/#", "c/+", "c/d"]));
        let kept: Vec<&str> = ex.filters().iter().map(Filter::as_str).collect();
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert!(kept.contains(&"a/#") && kept.contains(&"c/+"), "{kept:?}");
    }

    #[test]
    fn exceptions_are_one_pointer_wide() {
        assert_eq!(
            std::mem::size_of::<Exceptions>(),
            std::mem::size_of::<usize>()
        );
    }
}
