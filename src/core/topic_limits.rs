//! How deep and how long a topic name or filter may be (`limits.max_topic_levels`,
//! `limits.max_topic_length`).
//!
//! Every level costs a node in the subscription trie or the retained index, so a
//! 30,000-level topic costs megabytes where its text costs 60 KB: these caps keep
//! what one PUBLISH or SUBSCRIBE can make the broker hold in proportion to its size.
//!
//! Examples with `max_levels = 3`, `max_length = 10`:
//!   accepted: "a/b/c", "a//c" (an empty level is a level), "$share/g/a/b/c" (the
//!             share prefix is not counted), "0123456789"
//!   refused:  "a/b/c/d" (4 levels), "a/b/c/" (4 levels, the last empty),
//!             "01234567890" (11 bytes)

/// Why a topic was over the limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicLimitError {
    #[error("topic has {levels} levels, more than limits.max_topic_levels ({max})")]
    TooManyLevels { levels: usize, max: usize },
    #[error("topic is {length} bytes long, more than limits.max_topic_length ({max})")]
    TooLong { length: usize, max: usize },
}

/// Caps on the topics a client may name; checked by the adapters before a
/// topic reaches the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicLimits {
    /// Levels a topic name or filter may have ('/'-separated, empty levels count).
    pub max_levels: usize,
    /// Bytes a topic name or filter may have.
    pub max_length: usize,
}

impl TopicLimits {
    /// Checks a topic name, or the topic filter part of a filter (without any
    /// `$share/<group>/` prefix; the prefix still counts towards the length).
    pub fn check(&self, text: &str) -> Result<(), TopicLimitError> {
        if text.len() > self.max_length {
            return Err(TopicLimitError::TooLong {
                length: text.len(),
                max: self.max_length,
            });
        }
        let levels = levels_of(text);
        if levels > self.max_levels {
            return Err(TopicLimitError::TooManyLevels {
                levels,
                max: self.max_levels,
            });
        }
        Ok(())
    }

    /// Checks a filter: its whole text for length, its topic filter for levels.
    pub fn check_filter(&self, filter: &crate::core::topic::Filter) -> Result<(), TopicLimitError> {
        let whole = filter.as_str();
        if whole.len() > self.max_length {
            return Err(TopicLimitError::TooLong {
                length: whole.len(),
                max: self.max_length,
            });
        }
        self.check(filter.topic_filter()).or_else(|e| match e {
            // The topic filter alone is never longer than the whole text.
            TopicLimitError::TooLong { .. } => Ok(()),
            levels => Err(levels),
        })
    }
}

/// Number of '/'-separated levels in `text` (an empty text has one, empty, level).
fn levels_of(text: &str) -> usize {
    text.bytes().filter(|&b| b == b'/').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::topic::Filter;

    const SMALL: TopicLimits = TopicLimits {
        max_levels: 3,
        max_length: 10,
    };

    #[test]
    fn topics_within_the_limits_are_accepted() {
        for topic in ["a/b/c", "a//c", "0123456789", "a", "/a/"] {
            assert_eq!(SMALL.check(topic), Ok(()), "{topic}");
        }
    }

    #[test]
    fn too_many_levels_are_refused_empty_levels_counted() {
        assert_eq!(
            SMALL.check("a/b/c/d"),
            Err(TopicLimitError::TooManyLevels { levels: 4, max: 3 })
        );
        assert_eq!(
            SMALL.check("a/b/c/"),
            Err(TopicLimitError::TooManyLevels { levels: 4, max: 3 })
        );
        assert_eq!(
            SMALL.check("///"),
            Err(TopicLimitError::TooManyLevels { levels: 4, max: 3 })
        );
    }

    #[test]
    fn too_long_topics_are_refused() {
        assert_eq!(
            SMALL.check("01234567890"),
            Err(TopicLimitError::TooLong {
                length: 11,
                max: 10
            })
        );
    }

    #[test]
    fn a_share_prefix_counts_for_length_but_not_levels() {
        let wide = TopicLimits {
            max_levels: 3,
            max_length: 100,
        };
        let shared = Filter::parse("$share/g/a/+/#").unwrap();
        assert_eq!(wide.check_filter(&shared), Ok(()));
        let deep = Filter::parse("$share/g/a/b/c/#").unwrap();
        assert!(matches!(
            wide.check_filter(&deep),
            Err(TopicLimitError::TooManyLevels { levels: 4, .. })
        ));
        let long = Filter::parse("$share/group/abc").unwrap();
        assert!(matches!(
            SMALL.check_filter(&long),
            Err(TopicLimitError::TooLong { length: 16, .. })
        ));
    }

    #[test]
    fn wildcards_are_levels() {
        assert_eq!(SMALL.check_filter(&Filter::parse("+/+/#").unwrap()), Ok(()));
        assert!(SMALL
            .check_filter(&Filter::parse("+/+/+/#").unwrap())
            .is_err());
    }
}
