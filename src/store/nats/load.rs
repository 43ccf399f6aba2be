//! Reading the bucket at start (the part of it this node serves) or one
//! client's keys at a takeover, as the core's `Snapshot`, and the
//! [`Mirror`] of it that later commits keep.
//!
//! A node loads the sessions (with their deliveries, incoming QoS 2 ids and
//! wills) of the client ids no other node owns, every retained message and
//! schema, its own queued messages, and the messages its deliveries refer to.

use std::collections::{BTreeMap, HashMap, HashSet};

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures_util::StreamExt;

use super::keys::{self, DeliveryValue, Key, SessionValue, VALUE_VERSION};
use super::kv_value;
use super::mirror::{MessageRef, Mirror};
use crate::store::record::{MessageRecord, WillRecord};
use crate::store::{Snapshot, StoreError};

/// The current value of every key of KV bucket `bucket` (deleted keys left
/// out); retried while JetStream elects a leader (`patience.rs`).
pub(crate) async fn read_bucket(
    jetstream: &jetstream::Context,
    bucket: &str,
) -> Result<Vec<(String, Bytes)>, String> {
    let entries = read_entries(jetstream, bucket).await?;
    Ok(entries.into_iter().map(|e| (e.key, e.value)).collect())
}

/// The current entry (with its revision) of every key of KV bucket `bucket`
/// (deleted keys left out); retried while JetStream elects a leader.
pub(crate) async fn read_entries(
    jetstream: &jetstream::Context,
    bucket: &str,
) -> Result<Vec<kv::Entry>, String> {
    super::patience::patiently(bucket, || async {
        read_entries_once(jetstream, bucket)
            .await
            .map_err(super::patience::Failure::Transient)
    })
    .await
}

async fn read_entries_once(
    jetstream: &jetstream::Context,
    bucket: &str,
) -> Result<Vec<kv::Entry>, String> {
    // Opened afresh: a store's status is the stream's state when it was opened.
    let kv = jetstream
        .get_key_value(bucket)
        .await
        .map_err(|e| format!("opening: {e}"))?;
    let status = kv
        .status()
        .await
        .map_err(|e| format!("reading its status: {e}"))?;
    if status.info.state.messages == 0 {
        return Ok(Vec::new());
    }
    // The leader's last sequence (a stream info is answered by the leader):
    // the watch must reach it. Its consumer may sit on a replica that is
    // behind (a NATS server just restarted), which would read acknowledged
    // writes as missing; then the read is made again.
    let last = status.info.state.last_sequence;
    let mut entries = Vec::new();
    let seen = read_keys(&kv, ">", &mut entries).await?;
    if seen < last {
        return Err(format!(
            "read up to sequence {seen} where its leader has {last} (a replica behind answered)"
        ));
    }
    Ok(entries)
}

/// Adds the current values of the keys matching `filter` (at least one must
/// exist: a watch of none never ends) to `entries`, deleted keys left out;
/// returns the highest revision (stream sequence) seen, deletes included.
async fn read_keys(
    kv: &kv::Store,
    filter: &str,
    entries: &mut Vec<kv::Entry>,
) -> Result<u64, String> {
    let mut watch = kv
        .watch_with_history(filter)
        .await
        .map_err(|e| format!("watching it: {e}"))?;
    let mut seen = 0;
    while let Some(entry) = next_within(&mut watch).await? {
        let entry = entry.map_err(|e| format!("reading it: {e}"))?;
        let last = entry.delta == 0;
        seen = seen.max(entry.revision);
        if entry.operation == kv::Operation::Put {
            entries.push(entry);
        }
        if last {
            break;
        }
    }
    Ok(seen)
}

/// The current values of `client`'s records (see [`keys::client_filters`]),
/// of the messages its deliveries refer to and of the nodes' marks: what a
/// takeover needs, without reading the rest of the bucket. Every read is
/// answered by the bucket's leader: the keys from its stream info, each
/// value by [`leader_get`]. Not a watch: its consumer may be placed on any
/// replica (nats-server 2.9), one behind too (a NATS server just
/// restarted), and acknowledged deliveries read as missing.
pub(crate) async fn read_client(
    jetstream: &jetstream::Context,
    client: &str,
) -> Result<Vec<(String, Bytes)>, String> {
    let kv = jetstream
        .get_key_value(keys::BUCKET)
        .await
        .map_err(|e| e.to_string())?;
    let stream = jetstream
        .get_stream(format!("KV_{}", keys::BUCKET))
        .await
        .map_err(|e| e.to_string())?;
    let prefix = format!("$KV.{}.", keys::BUCKET);
    let mut names = HashSet::new();
    let filters = keys::client_filters(client);
    let marks = std::iter::once(keys::PEER_MARKS_FILTER.to_string());
    for filter in filters.into_iter().chain(marks) {
        let subjects = format!("{prefix}{filter}");
        let mut info = stream
            .info_with_subjects(&subjects)
            .await
            .map_err(|e| e.to_string())?;
        while let Some(subject) = info.next().await {
            let (subject, _) = subject.map_err(|e| e.to_string())?;
            if let Some(key) = subject.strip_prefix(&prefix) {
                names.insert(key.to_string());
            }
        }
    }
    let mut entries = read_named(&kv, names).await?;
    let referred = referred_messages(&entries);
    entries.extend(read_named(&kv, referred).await?);
    Ok(entries)
}

/// The message keys the deliveries among `entries` refer to.
pub(super) fn referred_messages(entries: &[(String, Bytes)]) -> HashSet<String> {
    entries
        .iter()
        .filter(|(key, _)| key.starts_with("d."))
        .filter_map(|(_, bytes)| kv_value::decode::<DeliveryValue>(VALUE_VERSION, bytes))
        .map(|d| keys::message(&d.message_node, d.record.message_id))
        .collect()
}

/// The current values of the keys `names` of `kv` (those that exist),
/// read from the bucket's leader ([`leader_get`]).
pub(super) async fn read_named(
    kv: &kv::Store,
    names: HashSet<String>,
) -> Result<Vec<(String, Bytes)>, String> {
    let reads = names.into_iter().map(|key| {
        let kv = kv.clone();
        async move { leader_get(&kv, &key).await.map(|value| (key, value)) }
    });
    let mut reads = futures_util::stream::iter(reads).buffer_unordered(64);
    let mut entries = Vec::new();
    while let Some(read) = reads.next().await {
        if let (key, Some(value)) = read? {
            entries.push((key, value));
        }
    }
    Ok(entries)
}

/// The current value of `key` in `kv` (None: none, or deleted), asked of
/// the stream's leader. `kv.get` on a bucket with `allow_direct` is a
/// direct get, which any replica answers, one that is behind too (a NATS
/// server just restarted: nats-server before 2.9.17 answered before it
/// caught up, nats-io/nats-server#4171; and direct gets promise no
/// read-your-writes, nats-io/nats.docs#815). What a takeover reads must
/// hold every write acknowledged before it.
pub(super) async fn leader_get(kv: &kv::Store, key: &str) -> Result<Option<Bytes>, String> {
    Ok(leader_last(kv, key).await?.and_then(|(_, value)| value))
}

/// The last message of `key` in `kv`, asked of the stream's leader (see
/// [`leader_get`]): its revision, and its value (None: a delete); None when
/// the key has none.
pub(super) async fn leader_last(
    kv: &kv::Store,
    key: &str,
) -> Result<Option<(u64, Option<Bytes>)>, String> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    let subject = format!("{}{key}", kv.prefix);
    match kv.stream.get_last_raw_message_by_subject(&subject).await {
        Ok(message) => {
            let operation = message.headers.get("KV-Operation");
            let put = operation.is_none_or(|op| op.as_str() == "PUT");
            Ok(Some((message.sequence, put.then_some(message.payload))))
        }
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(format!("reading {subject}: {e}")),
    }
}

/// The store bucket's last sequence now, asked of its leader; retried
/// while JetStream elects a leader. Read when this node comes to hold
/// client ids (its start, a takeover): every write of theirs another node
/// made up to it is from before (see [`own_last`]).
pub(super) async fn last_sequence(jetstream: &jetstream::Context) -> Result<u64, String> {
    super::patience::patiently(keys::BUCKET, || async {
        // Its info, answered by the leader, comes with it.
        let stream = jetstream
            .get_stream(format!("KV_{}", keys::BUCKET))
            .await
            .map_err(|e| super::patience::Failure::Transient(e.to_string()))?;
        Ok(stream.cached_info().state.last_sequence)
    })
    .await
}

/// For each of `keys` (with the bucket's [`last_sequence`] when this node
/// came to hold its client), the sequence of its last message in the
/// bucket (0: none) when this node (`node`) wrote it or when it is from
/// before that point; None when another node wrote it since (its
/// `Nats-Msg-Id` tells): asked of the bucket's leader. A released record
/// goes over this node's own earlier write or delete (a session's delivery
/// numbers start again at 1 when it has none stored) and over what a
/// holder before wrote or deleted (a session moved A → B → A), never over
/// what the node holding it now wrote (all after it came to hold it).
pub(super) async fn own_last(
    jetstream: &jetstream::Context,
    keys: Vec<(String, u64)>,
    node: &str,
) -> Result<Vec<Option<u64>>, String> {
    use async_nats::jetstream::stream::LastRawMessageErrorKind;
    let stream = jetstream
        .get_stream(format!("KV_{}", keys::BUCKET))
        .await
        .map_err(|e| e.to_string())?;
    let own = format!("{node}.");
    let reads = keys.into_iter().map(|(key, held_from)| {
        let (stream, own) = (stream.clone(), own.clone());
        async move {
            let subject = format!("$KV.{}.{key}", keys::BUCKET);
            match stream.get_last_raw_message_by_subject(&subject).await {
                Ok(message) => {
                    let id = message.headers.get(async_nats::header::NATS_MESSAGE_ID);
                    let mine = id.is_some_and(|id| id.as_str().starts_with(&own));
                    let before = message.sequence <= held_from;
                    Ok((mine || before).then_some(message.sequence))
                }
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(Some(0)),
                Err(e) => Err(format!("reading {subject}: {e}")),
            }
        }
    });
    futures_util::stream::iter(reads)
        .buffered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// How long a bucket read waits for its next entry before it is made
/// again: its consumer may sit on a NATS server that stalls (one just
/// restarted), and nothing else ends the wait.
const READ_IDLE: std::time::Duration = std::time::Duration::from_secs(5);

/// The next item of `stream`, or an error after [`READ_IDLE`] without one.
async fn next_within<S: futures_util::Stream + Unpin>(
    stream: &mut S,
) -> Result<Option<S::Item>, String> {
    tokio::time::timeout(READ_IDLE, stream.next())
        .await
        .map_err(|_| format!("nothing read for {} s", READ_IDLE.as_secs()))
}

/// The client ids with a stored session or will (keys read, not values);
/// retried while JetStream elects a leader.
pub(crate) async fn stored_clients(
    jetstream: &jetstream::Context,
) -> Result<HashSet<String>, String> {
    super::patience::patiently(keys::BUCKET, || async {
        stored_clients_once(jetstream)
            .await
            .map_err(super::patience::Failure::Transient)
    })
    .await
}

async fn stored_clients_once(jetstream: &jetstream::Context) -> Result<HashSet<String>, String> {
    let kv = jetstream
        .get_key_value(keys::BUCKET)
        .await
        .map_err(|e| e.to_string())?;
    let status = kv.status().await.map_err(|e| e.to_string())?;
    if status.info.state.messages == 0 {
        return Ok(HashSet::new());
    }
    let mut names = kv.keys().await.map_err(|e| e.to_string())?;
    let mut clients = HashSet::new();
    while let Some(key) = next_within(&mut names).await? {
        let key = key.map_err(|e| e.to_string())?;
        if let Some(Key::Session(client) | Key::Will(client)) = keys::parse(&key) {
            clients.insert(client);
        }
    }
    Ok(clients)
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    kv_value::decode(VALUE_VERSION, bytes)
        .ok_or_else(|| StoreError::Decode(format!("{} key {key}", keys::BUCKET)))
}

/// What a read of the bucket is for.
pub(super) enum Scope<'a> {
    /// The start: everything but the sessions of the client ids given (owned
    /// by other nodes). Other nodes' messages get ids above this node's.
    Start(&'a HashSet<String>),
    /// A session taken over from another node: its client id's records only;
    /// other nodes' messages get ids from the one given on (see `next_id`).
    Client(&'a str, u64),
}

/// The snapshot of node `node` from the bucket's `entries` for `scope`, the
/// mirror of it, and the id after the last one given to another node's message.
pub(super) fn snapshot(
    entries: Vec<(String, Bytes)>,
    node: &str,
    scope: &Scope<'_>,
) -> Result<(Snapshot, Mirror, u64), StoreError> {
    let mut snapshot = Snapshot::default();
    let mut mirror = Mirror::new(node);
    let mut deliveries: BTreeMap<(String, u64), DeliveryValue> = BTreeMap::new();
    let mut messages: HashMap<(String, u64), MessageRecord> = HashMap::new();
    let mine = |client: &str| match scope {
        Scope::Start(foreign) => !foreign.contains(client),
        Scope::Client(id, _) => client == *id,
    };
    let start = matches!(scope, Scope::Start(_));
    for (key, bytes) in entries {
        let Some(parsed) = keys::parse(&key) else {
            tracing::warn!(bucket = keys::BUCKET, key, "key of no known shape skipped");
            continue;
        };
        match parsed {
            Key::Session(client) if mine(&client) => {
                let value: SessionValue = decode(&key, &bytes)?;
                let mut record = value.record;
                record.owner = value.owner;
                for (filter, selector) in value.selectors {
                    if let Some(s) = record.subscriptions.iter_mut().find(|s| s.filter == filter) {
                        s.selector = Some(selector);
                    }
                }
                snapshot.sessions.push((client, record));
            }
            Key::Delivery(client, seq) if mine(&client) => {
                deliveries.insert((client, seq), decode(&key, &bytes)?);
            }
            Key::Delivery(..) if start => {
                // Another node's session refers to this node's message: it
                // is never deleted here (`Mirror::shared_away`).
                let stored: DeliveryValue = decode(&key, &bytes)?;
                if stored.message_node == node {
                    mirror.shared_away.insert(stored.record.message_id);
                }
            }
            Key::Incoming(client, id) if mine(&client) => {
                mirror.incoming.insert((client.clone(), id));
                snapshot.incoming_qos2.push((client, id));
            }
            Key::Will(client) if mine(&client) => {
                let will: WillRecord = decode(&key, &bytes)?;
                snapshot.wills.push((client, will));
            }
            Key::Message(from, id) => {
                messages.insert((from, id), decode(&key, &bytes)?);
            }
            Key::Retained(_) if start => snapshot.retained.push(decode(&key, &bytes)?),
            Key::Queued(owner, queue, seq) if start && owner == node => {
                mirror.queued.insert((queue.clone(), seq));
                snapshot.queued.push((queue, seq, decode(&key, &bytes)?));
            }
            Key::Schema(name) if start => {
                let record: Vec<u8> = decode(&key, &bytes)?;
                snapshot.schemas.push((name, record));
            }
            Key::StreamConsumer(stream, consumer) if start => {
                let offset: u64 = decode(&key, &bytes)?;
                snapshot.stream_consumers.push((stream, consumer, offset));
            }
            Key::StreamDeclaration(stream) if start => {
                let settings: Vec<u8> = decode(&key, &bytes)?;
                snapshot.stream_declarations.push((stream, settings));
            }
            Key::PeerMarks(from) => {
                snapshot.peer_marks.push((from, decode(&key, &bytes)?));
            }
            Key::StreamConsumer(..)
            | Key::StreamDeclaration(_)
            | Key::Session(_)
            | Key::Delivery(..)
            | Key::Incoming(..)
            | Key::Will(_)
            | Key::Retained(_)
            | Key::Queued(..)
            | Key::Schema(_)
            | Key::JournalFloor(_) => {}
        }
    }
    snapshot
        .queued
        .sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    // This node's messages keep their ids; another node's get ids above them.
    let mut next_foreign = match scope {
        Scope::Start(_) => {
            messages
                .keys()
                .filter(|(from, _)| from == node)
                .map(|(_, id)| *id)
                .max()
                .unwrap_or(0)
                + 1
        }
        Scope::Client(_, next) => *next,
    };
    let mut local_ids: HashMap<(String, u64), u64> = HashMap::new();
    for ((from, id), record) in &messages {
        // At start all of this node's (the core's ids continue above them).
        if from == node && start {
            local_ids.insert((from.clone(), *id), *id);
            snapshot.messages.push((*id, record.clone()));
        }
    }
    for ((client, seq), stored) in deliveries {
        let source = (stored.message_node, stored.record.message_id);
        let Some(record) = messages.get(&source) else {
            tracing::warn!(client_id = %client, seq, "stored delivery without its message skipped");
            continue;
        };
        let local = *local_ids.entry(source.clone()).or_insert_with(|| {
            let id = if source.0 == node {
                source.1
            } else {
                next_foreign += 1;
                next_foreign - 1
            };
            snapshot.messages.push((id, record.clone()));
            id
        });
        mirror
            .messages
            .entry(local)
            .or_insert_with(|| MessageRef {
                node: source.0.clone(),
                stored_id: source.1,
                refs: 0,
            })
            .refs += 1;
        let mut delivery = stored.record;
        delivery.message_id = local;
        mirror
            .deliveries
            .insert((client.clone(), seq), delivery.clone());
        snapshot.deliveries.push((client, seq, delivery));
    }
    Ok((snapshot, mirror, next_foreign))
}
