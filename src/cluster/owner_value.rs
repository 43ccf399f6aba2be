//! The value of a client id in `tern_clients` (`ownership.rs`): who holds
//! it, as written and read, older layouts included.

use serde::{Deserialize, Serialize};

use crate::store::record::SubscriptionRecord;

/// First byte of every value: its layout, so a later layout can be told apart.
const VALUE_VERSION: u8 = 1;

/// Who holds a client id, as stored in the bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OwnerValue {
    pub node: String,
    /// Random per claim: tells this node's claims of one id apart.
    pub epoch: u64,
    /// The claiming connection started clean (the old session's will goes out).
    pub clean_start: bool,
    pub subscriptions: Vec<SubscriptionRecord>,
    /// The run of `node` that claimed (`Cluster::run`; 0: not said, a
    /// node that predates it). The node taking the session over uses the
    /// holder's stored marks only when that run wrote them: a later run,
    /// restarted without the session, has routed messages the session
    /// never had. Carried in [`OwnerWire`], not in this encoding.
    #[serde(skip)]
    pub run: u64,
    /// The node and run that held the session last, when this claim was
    /// made without reading its stored state (an adoption from a dead node,
    /// or a claim of one so made) and no read has finished since: the
    /// records may still be in that node's journal only. A start, or the
    /// next adopter, reads that journal too. Carried in [`OwnerWire`].
    #[serde(skip)]
    pub unread_from: Option<(String, u64)>,
}

/// [`OwnerValue`] as written: a subscription record leaves its selector out
/// (the store keeps selectors in a table of their own), so the selectors
/// follow the records, one per subscription in order, then the claiming
/// run, then the holder whose records are unread. Each appended last: a
/// node that predates one reads the rest (postcard ignores what follows),
/// and a value without it reads as subscriptions without selectors, as a
/// run not said, or as read.
#[derive(Serialize, Deserialize)]
struct OwnerWire {
    owner: OwnerValue,
    selectors: Vec<Option<String>>,
    run: u64,
    unread_from: Option<(String, u64)>,
}

/// [`OwnerWire`] before the unread holder was written.
#[derive(Deserialize)]
struct OwnerWireWithoutUnread {
    owner: OwnerValue,
    selectors: Vec<Option<String>>,
    run: u64,
}

/// [`OwnerWire`] before the claiming run was written.
#[derive(Deserialize)]
struct OwnerWireWithoutRun {
    owner: OwnerValue,
    selectors: Vec<Option<String>>,
}

impl OwnerValue {
    pub(crate) fn encode(&self) -> bytes::Bytes {
        let wire = OwnerWire {
            owner: self.clone(),
            selectors: self
                .subscriptions
                .iter()
                .map(|s| s.selector.clone())
                .collect(),
            run: self.run,
            unread_from: self.unread_from.clone(),
        };
        crate::store::nats::kv_value::encode(VALUE_VERSION, &wire)
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<OwnerValue> {
        use crate::store::nats::kv_value::decode;
        let with_selectors = |mut owner: OwnerValue, selectors: Vec<Option<String>>| {
            for (record, selector) in owner.subscriptions.iter_mut().zip(selectors) {
                record.selector = selector;
            }
            owner
        };
        if let Some(wire) = decode::<OwnerWire>(VALUE_VERSION, bytes) {
            let owner = with_selectors(wire.owner, wire.selectors);
            return Some(OwnerValue {
                run: wire.run,
                unread_from: wire.unread_from,
                ..owner
            });
        }
        if let Some(wire) = decode::<OwnerWireWithoutUnread>(VALUE_VERSION, bytes) {
            let owner = with_selectors(wire.owner, wire.selectors);
            return Some(OwnerValue {
                run: wire.run,
                ..owner
            });
        }
        if let Some(wire) = decode::<OwnerWireWithoutRun>(VALUE_VERSION, bytes) {
            return Some(with_selectors(wire.owner, wire.selectors));
        }
        decode(VALUE_VERSION, bytes)
    }

    /// The claiming run, when said.
    pub(crate) fn run(&self) -> Option<u64> {
        (self.run != 0).then_some(self.run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_values_round_trip_and_carry_their_layout_version() {
        let value = OwnerValue {
            node: "tern-2".into(),
            epoch: 42,
            clean_start: false,
            subscriptions: vec![SubscriptionRecord {
                selector: None,
                filter: "a/+/c".into(),
                qos: 1,
                no_local: true,
                retain_as_published: false,
                retain_handling: 2,
                subscription_id: Some(7),
            }],
            run: 9,
            unread_from: Some(("tern-3".into(), 11)),
        };
        let bytes = value.encode();
        assert_eq!(bytes[0], VALUE_VERSION);
        assert_eq!(OwnerValue::decode(&bytes), Some(value));
    }

    #[test]
    fn selectors_travel_with_their_subscriptions_and_older_values_still_read() {
        let record = |filter: &str, selector: Option<&str>| SubscriptionRecord {
            selector: selector.map(str::to_string),
            filter: filter.into(),
            qos: 1,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
            subscription_id: None,
        };
        let value = OwnerValue {
            node: "tern-1".into(),
            epoch: 7,
            clean_start: false,
            subscriptions: vec![record("a/#", Some("bucket = 3")), record("b", None)],
            run: 5,
            unread_from: None,
        };
        assert_eq!(OwnerValue::decode(&value.encode()), Some(value.clone()));
        assert_eq!(OwnerValue::decode(&value.encode()).unwrap().run(), Some(5));
        // Written by a node that predates the unread holder: read as read.
        #[derive(Serialize)]
        struct WithoutUnread<'a> {
            owner: &'a OwnerValue,
            selectors: Vec<Option<String>>,
            run: u64,
        }
        let without_unread = crate::store::nats::kv_value::encode(
            VALUE_VERSION,
            &WithoutUnread {
                owner: &value,
                selectors: vec![Some("bucket = 3".to_string()), None],
                run: 5,
            },
        );
        let read = OwnerValue::decode(&without_unread).unwrap();
        assert_eq!((read.run(), read.unread_from), (Some(5), None));
        assert_eq!(
            read.subscriptions[0].selector.as_deref(),
            Some("bucket = 3")
        );
        // Written by a node that predates the claiming run: selectors kept,
        // the run not said.
        #[derive(Serialize)]
        struct WithoutRun<'a> {
            owner: &'a OwnerValue,
            selectors: Vec<Option<String>>,
        }
        let selectors = vec![Some("bucket = 3".to_string()), None];
        let without_run = crate::store::nats::kv_value::encode(
            VALUE_VERSION,
            &WithoutRun {
                owner: &value,
                selectors,
            },
        );
        let read = OwnerValue::decode(&without_run).unwrap();
        assert_eq!(read.run(), None);
        assert_eq!(
            read.subscriptions[0].selector.as_deref(),
            Some("bucket = 3")
        );
        // Written by a node that predates selectors: the bare value.
        let older = crate::store::nats::kv_value::encode(VALUE_VERSION, &value);
        let read = OwnerValue::decode(&older).unwrap();
        assert_eq!(read.subscriptions[0].filter, "a/#");
        assert_eq!(read.subscriptions[0].selector, None);
    }

    #[test]
    fn values_of_another_layout_or_garbage_are_ignored() {
        assert_eq!(OwnerValue::decode(&[]), None);
        assert_eq!(OwnerValue::decode(&[99, 1, 2]), None);
        assert_eq!(OwnerValue::decode(&[VALUE_VERSION, 0xFF]), None);
    }
}
