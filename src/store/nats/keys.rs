//! The layout of the store bucket `tern_store`: one key per record, the kind
//! first, then what names the record, each name made a key token by
//! [`kv_key`] (which never yields a `.`, so the tokens split back unambiguously).
//!
//! | key | value | who loads it |
//! |---|---|---|
//! | `s.<client>` | [`SessionValue`] | the node owning `<client>`, or any node when no node does |
//! | `d.<client>.<seq>` | [`DeliveryValue`] | with its session |
//! | `i.<client>.<packet id>` | empty | with its session |
//! | `w.<client>` | `WillRecord` | with its session |
//! | `m.<node>.<id>` | `MessageRecord` | with the deliveries referring to it |
//! | `r.<topic>` | `MessageRecord` | every node |
//! | `q.<node>.<queue>.<seq>` | `MessageRecord` | node `<node>` (its local queues) |
//! | `x.<schema>` | the schema's bytes | every node |
//! | `c.<stream>.<consumer>` | its last acknowledged offset (`u64`) | every node |
//! | `y.<stream>` | an admin-created stream's settings (JSON bytes) | every node |
//! | `p.<node>` | node `<node>`'s marks (`Vec<PeerMarkRecord>`) | a node taking a session over from `<node>` |
//! | `f.<node>` | node `<node>`'s journal floor (`u64`, `floor.rs`) | a node reading that journal |
//!
//! A stream's messages are in a JetStream stream of their own (`streams.rs`).
//!
//! Session state is keyed by client id, which ownership makes unique in the
//! cluster; message ids and queue sequences are per node, so their keys name it.

use serde::{Deserialize, Serialize};

use super::kv_key;
use crate::store::record::{DeliveryRecord, OwnerRecord, SessionRecord};

/// The bucket of the NATS store backend.
pub const BUCKET: &str = "tern_store";
/// First byte of every value: its layout.
pub(super) const VALUE_VERSION: u8 = 1;

/// A stored session with what its record keeps out of its own encoding.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct SessionValue {
    pub record: SessionRecord,
    pub owner: OwnerRecord,
    /// `(filter, selector text)` of the subscriptions with a selector.
    pub selectors: Vec<(String, String)>,
}

/// A stored delivery and the node whose message id it refers to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct DeliveryValue {
    pub record: DeliveryRecord,
    pub message_node: String,
}

pub(super) fn session(client: &str) -> String {
    format!("s.{}", kv_key::encode(client))
}

pub(super) fn delivery(client: &str, seq: u64) -> String {
    format!("d.{}.{seq}", kv_key::encode(client))
}

pub(super) fn incoming(client: &str, packet_id: u16) -> String {
    format!("i.{}.{packet_id}", kv_key::encode(client))
}

pub(super) fn will(client: &str) -> String {
    format!("w.{}", kv_key::encode(client))
}

pub(super) fn message(node: &str, id: u64) -> String {
    format!("m.{}.{id}", kv_key::encode(node))
}

pub(super) fn retained(topic: &str) -> String {
    format!("r.{}", kv_key::encode(topic))
}

pub(super) fn queued(node: &str, queue: &str, seq: u64) -> String {
    format!("q.{}.{}.{seq}", kv_key::encode(node), kv_key::encode(queue))
}

pub(super) fn schema(name: &str) -> String {
    format!("x.{}", kv_key::encode(name))
}

pub(super) fn stream_consumer(stream: &str, consumer: &str) -> String {
    format!("c.{}.{}", kv_key::encode(stream), kv_key::encode(consumer))
}

/// The subject filter of every consumer key of `stream` (in the bucket's stream).
pub(super) fn stream_consumers_subject(stream: &str) -> String {
    format!("$KV.{BUCKET}.c.{}.*", kv_key::encode(stream))
}

pub(super) fn peer_marks(node: &str) -> String {
    format!("p.{}", kv_key::encode(node))
}

pub(super) fn journal_floor(node: &str) -> String {
    format!("f.{}", kv_key::encode(node))
}

/// The key filter of every node's marks.
pub(super) const PEER_MARKS_FILTER: &str = "p.*";

pub(super) fn stream_declaration(stream: &str) -> String {
    format!("y.{}", kv_key::encode(stream))
}

/// Key filters (`*` one token) covering every record of `client`'s session:
/// the session, its will, deliveries and incoming QoS 2 ids.
pub(super) fn client_filters(client: &str) -> [String; 4] {
    let client = kv_key::encode(client);
    [
        format!("s.{client}"),
        format!("w.{client}"),
        format!("d.{client}.*"),
        format!("i.{client}.*"),
    ]
}

/// A key of the bucket, read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Key {
    Session(String),
    Delivery(String, u64),
    Incoming(String, u16),
    Will(String),
    Message(String, u64),
    Retained(String),
    Queued(String, String, u64),
    Schema(String),
    StreamConsumer(String, String),
    StreamDeclaration(String),
    PeerMarks(String),
    JournalFloor(String),
}

/// What `key` names; None for a key this layout never makes.
pub(super) fn parse(key: &str) -> Option<Key> {
    let mut tokens = key.split('.');
    let kind = tokens.next()?;
    let t = &mut tokens;
    let parsed = match kind {
        "s" => Key::Session(text(t)?),
        "w" => Key::Will(text(t)?),
        "r" => Key::Retained(text(t)?),
        "x" => Key::Schema(text(t)?),
        "y" => Key::StreamDeclaration(text(t)?),
        "p" => Key::PeerMarks(text(t)?),
        "f" => Key::JournalFloor(text(t)?),
        "c" => Key::StreamConsumer(text(t)?, text(t)?),
        "d" => Key::Delivery(text(t)?, t.next()?.parse().ok()?),
        "i" => Key::Incoming(text(t)?, t.next()?.parse().ok()?),
        "m" => Key::Message(text(t)?, t.next()?.parse().ok()?),
        "q" => Key::Queued(text(t)?, text(t)?, t.next()?.parse().ok()?),
        _ => return None,
    };
    tokens.next().is_none().then_some(parsed)
}

fn text(tokens: &mut std::str::Split<'_, char>) -> Option<String> {
    kv_key::decode(tokens.next()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_parses_back_to_what_made_it() {
        let odd = "a.b c/$é=";
        let cases = [
            (session(odd), Key::Session(odd.into())),
            (delivery(odd, 7), Key::Delivery(odd.into(), 7)),
            (incoming(odd, 65535), Key::Incoming(odd.into(), 65535)),
            (will(""), Key::Will(String::new())),
            (message("tern-1", 9), Key::Message("tern-1".into(), 9)),
            (retained("$SYS/x.y"), Key::Retained("$SYS/x.y".into())),
            (
                queued("n.1", "jobs.a", 3),
                Key::Queued("n.1".into(), "jobs.a".into(), 3),
            ),
            (schema("temp"), Key::Schema("temp".into())),
            (
                stream_consumer("s.1", "c 2"),
                Key::StreamConsumer("s.1".into(), "c 2".into()),
            ),
            (stream_declaration("s"), Key::StreamDeclaration("s".into())),
            (peer_marks("tern.1"), Key::PeerMarks("tern.1".into())),
            (journal_floor("tern.1"), Key::JournalFloor("tern.1".into())),
        ];
        for (key, expected) in cases {
            assert_eq!(parse(&key), Some(expected), "{key}");
        }
    }

    #[test]
    fn keys_of_no_known_shape_are_none() {
        for key in ["", "z.a", "s", "d.a", "d.a.x", "s.a.b", "m.n.1.2", "s.=ZZ"] {
            assert_eq!(parse(key), None, "{key}");
        }
    }
}
