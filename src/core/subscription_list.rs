//! A session's subscriptions, by filter. Most clients hold a handful, so a
//! vector that grows by half its length (one at first) costs far less memory
//! per idle client than a hash map, and a linear search over a few entries is
//! as fast. `limits.max_subscriptions_per_client` bounds its length.

use crate::core::session::SubscriptionOptions;
use crate::core::topic::Filter;

#[derive(Debug, Default)]
pub(crate) struct SubscriptionList {
    entries: Vec<(Filter, SubscriptionOptions)>,
}

impl SubscriptionList {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn contains(&self, raw_filter: &str) -> bool {
        self.position(raw_filter).is_some()
    }

    /// Adds or replaces the subscription on `filter`; true if it replaced one.
    pub fn insert(&mut self, filter: Filter, options: SubscriptionOptions) -> bool {
        if let Some(i) = self.position(filter.as_str()) {
            self.entries[i] = (filter, options);
            return true;
        }
        if self.entries.len() == self.entries.capacity() {
            self.entries.reserve_exact((self.entries.len() / 2).max(1));
        }
        self.entries.push((filter, options));
        false
    }

    pub fn remove(&mut self, raw_filter: &str) -> Option<(Filter, SubscriptionOptions)> {
        let i = self.position(raw_filter)?;
        let removed = self.entries.swap_remove(i);
        if self.entries.is_empty() {
            self.entries = Vec::new();
        }
        Some(removed)
    }

    pub fn iter(&self) -> impl Iterator<Item = &(Filter, SubscriptionOptions)> {
        self.entries.iter()
    }

    pub fn take_all(&mut self) -> Vec<(Filter, SubscriptionOptions)> {
        std::mem::take(&mut self.entries)
    }

    fn position(&self, raw_filter: &str) -> Option<usize> {
        self.entries
            .iter()
            .position(|(f, _)| f.as_str() == raw_filter)
    }
}

#[cfg(test)]
mod tests {
    use super::SubscriptionList;
    use crate::core::message::QoS;
    use crate::core::session::SubscriptionOptions;
    use crate::core::topic::Filter;

    fn options(qos: QoS) -> SubscriptionOptions {
        SubscriptionOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
            subscription_id: None,
            exceptions: Default::default(),
            selector: None,
        }
    }

    fn filter(raw: &str) -> Filter {
        Filter::parse(raw).expect("valid filter")
    }

    #[test]
    fn insert_replaces_by_filter_and_remove_finds_it() {
        let mut list = SubscriptionList::default();
        assert!(!list.insert(filter("a/#"), options(QoS::AtMostOnce)));
        assert!(!list.insert(filter("b/+"), options(QoS::AtMostOnce)));
        assert!(
            list.insert(filter("a/#"), options(QoS::ExactlyOnce)),
            "replaced"
        );
        assert_eq!(list.len(), 2);
        assert!(list.contains("b/+") && !list.contains("c"));
        let qos = list
            .iter()
            .find(|(f, _)| f.as_str() == "a/#")
            .map(|(_, o)| o.qos);
        assert_eq!(qos, Some(QoS::ExactlyOnce));
        assert!(list.remove("a/#").is_some());
        assert!(list.remove("a/#").is_none());
        assert_eq!(list.take_all().len(), 1);
        assert_eq!(list.len(), 0);
    }

    #[test]
    fn one_subscription_holds_room_for_one() {
        let mut list = SubscriptionList::default();
        list.insert(filter("only/one"), options(QoS::AtLeastOnce));
        assert_eq!(list.entries.capacity(), 1);
        for i in 0..100 {
            list.insert(filter(&format!("many/{i}")), options(QoS::AtMostOnce));
        }
        assert_eq!(list.len(), 101);
        assert!(list.entries.capacity() < 160, "grows by half, not double");
    }
}
