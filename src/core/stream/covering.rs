//! Which stream holds every message of some filters: what lets a protocol
//! without stream subscriptions of its own (HTTP server-sent events) resume
//! from a stream's offsets when it is asked for plain topics.

use super::Streams;
use crate::core::topic::Filter;

impl Streams {
    /// The first declared stream one of whose topic filters covers every one
    /// of `filters` (each message they match is kept in it); None if none does.
    pub fn covering(&self, filters: &[&Filter]) -> Option<String> {
        if filters.is_empty() {
            return None;
        }
        self.logs
            .read()
            .iter()
            .find(|log| {
                filters
                    .iter()
                    .all(|wanted| log.filters.iter().any(|kept| kept.covers(wanted)))
            })
            .map(|log| log.name.to_string())
    }

    /// True when a stream of that name is declared.
    pub fn exists(&self, name: &str) -> bool {
        self.log(name).is_some()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::core::stream::StreamSettings;
    use crate::store::redb::RedbBackend;
    use crate::store::{Durability, Store};

    fn filter(raw: &str) -> Filter {
        Filter::parse(raw).unwrap()
    }

    #[tokio::test]
    async fn a_stream_covers_filters_its_topics_cover_and_no_others() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(RedbBackend::open(&dir.path().join("tern.redb")).unwrap());
        let streams = Streams::new(Some(Store::start(backend, Durability::Batched)));
        let settings = StreamSettings {
            name: "sensors".into(),
            topics: vec!["sensors/#".into(), "alarms/+".into()],
            max_age: None,
            max_messages: None,
            max_bytes: None,
        };
        streams.declare(&settings).unwrap();
        let covered = |raw: &[&str]| {
            let filters: Vec<Filter> = raw.iter().map(|r| filter(r)).collect();
            streams.covering(&filters.iter().collect::<Vec<_>>())
        };
        assert_eq!(covered(&["sensors/#"]).as_deref(), Some("sensors"));
        assert_eq!(
            covered(&["sensors/+/temp", "alarms/x"]).as_deref(),
            Some("sensors")
        );
        assert_eq!(covered(&["sensors/#", "other/x"]), None);
        assert_eq!(covered(&["alarms/#"]), None);
        assert_eq!(covered(&[]), None);
        assert!(streams.exists("sensors") && !streams.exists("other"));
    }
}
