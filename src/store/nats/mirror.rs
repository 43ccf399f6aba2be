//! What this node knows of its part of the bucket, built at load and kept by
//! every commit: the deliveries, incoming QoS 2 ids and queued messages that
//! exist, and how many deliveries refer to each stored message. A batch of
//! store operations becomes the writes it means (last write per key), without
//! reading the bucket: the same effect as the redb backend's transaction.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use bytes::Bytes;

use super::keys::{self, DeliveryValue, SessionValue, VALUE_VERSION};
use super::kv_value;
use crate::store::StoreOp;

/// The last write of a batch per key: a value, or None to delete the key.
/// In the order the batch made them (a key written twice keeps its first
/// place): they are published in that order, so when this node dies in the
/// middle of a batch what JetStream kept is a prefix of it, never a later
/// delivery without an earlier one.
pub(super) type Writes = indexmap::IndexMap<String, Option<Bytes>>;

/// A batch's writes being planned: the keys it made that JetStream has not
/// seen. Such a key deleted again in the same batch is never written at all
/// (no value, no tombstone): a QoS 1 message delivered and acknowledged while
/// the previous commit was out costs no write.
#[derive(Debug, Default)]
struct Batch {
    writes: Writes,
    fresh: HashSet<String>,
}

impl Batch {
    fn put(&mut self, key: String, value: Option<Bytes>) {
        self.writes.insert(key, value);
    }

    /// A key this batch makes (it did not exist before the batch).
    fn create(&mut self, key: String, value: Option<Bytes>) {
        self.fresh.insert(key.clone());
        self.writes.insert(key, value);
    }

    /// The writes, without the deletes of keys made in this batch, and the
    /// keys made in it that still exist.
    fn finish(self) -> (Writes, HashSet<String>) {
        let Batch {
            mut writes,
            mut fresh,
        } = self;
        if !fresh.is_empty() {
            writes.retain(|key, value| value.is_some() || !fresh.contains(key));
            fresh.retain(|key| writes.contains_key(key));
        }
        (writes, fresh)
    }
}

/// A stored message as this node refers to it.
#[derive(Debug, Clone)]
pub(super) struct MessageRef {
    /// The node whose id space `stored_id` is in (part of the key).
    pub node: String,
    pub stored_id: u64,
    /// Deliveries of this node's sessions that refer to it.
    pub refs: u64,
}

#[derive(Debug, Default)]
pub(super) struct Mirror {
    pub node: String,
    /// By (client id, sequence); each refers to a message by this node's id.
    pub deliveries: BTreeMap<(String, u64), crate::store::record::DeliveryRecord>,
    pub incoming: BTreeSet<(String, u16)>,
    pub queued: HashSet<(String, u64)>,
    /// By the id this node's core knows the message by (a message another
    /// node stored gets an id of this node at load).
    pub messages: HashMap<u64, MessageRef>,
    /// Client ids another node took over: their records are no longer
    /// written here (fencing), until this node holds them again.
    pub released: HashSet<String>,
    /// The keys the last plan made (they were not in the bucket): their
    /// deletion needs no write there until a compaction wrote them.
    pub fresh: HashSet<String>,
    /// This node's messages that deliveries of a client let go referred to:
    /// the node holding that client now refers to them under this node's
    /// key, so they are never deleted here (a session of this node
    /// acknowledging the same message deleted it under the new holder's
    /// deliveries: the crash test's "stored delivery without its message").
    pub shared_away: HashSet<u64>,
}

fn value<T: serde::Serialize>(record: &T) -> Option<Bytes> {
    Some(kv_value::encode(VALUE_VERSION, record))
}

impl Mirror {
    pub(super) fn new(node: &str) -> Mirror {
        Mirror {
            node: node.to_string(),
            ..Mirror::default()
        }
    }

    /// The bucket writes `ops` mean, and by how much the stored messages
    /// (deliveries plus queued) change.
    pub(super) fn plan(&mut self, ops: &[StoreOp]) -> (Writes, i64) {
        let mut batch = Batch::default();
        let mut held = 0i64;
        for op in ops {
            if self.fenced(op) {
                continue;
            }
            match op {
                StoreOp::PutSession { client_id, record } => {
                    let selectors = record
                        .subscriptions
                        .iter()
                        .filter_map(|s| Some((s.filter.clone(), s.selector.clone()?)))
                        .collect();
                    let session = SessionValue {
                        record: record.clone(),
                        owner: record.owner.clone(),
                        selectors,
                    };
                    batch.put(keys::session(client_id), value(&session));
                }
                StoreOp::DeleteSession { client_id } => {
                    batch.put(keys::session(client_id), None);
                    let range = (client_id.clone(), 0)..=(client_id.clone(), u64::MAX);
                    let seqs: Vec<u64> = self.deliveries.range(range).map(|(k, _)| k.1).collect();
                    for seq in seqs {
                        held -= self.delete_delivery(client_id, seq, &mut batch);
                    }
                    let range = (client_id.clone(), 0)..=(client_id.clone(), u16::MAX);
                    let ids: Vec<u16> = self.incoming.range(range).map(|k| k.1).collect();
                    for id in ids {
                        self.incoming.remove(&(client_id.clone(), id));
                        batch.put(keys::incoming(client_id, id), None);
                    }
                }
                StoreOp::PutMessage { id, record } => {
                    let key = keys::message(&self.node, *id);
                    if self.messages.contains_key(id) {
                        batch.put(key, value(record));
                    } else {
                        self.messages.insert(
                            *id,
                            MessageRef {
                                node: self.node.clone(),
                                stored_id: *id,
                                refs: 0,
                            },
                        );
                        batch.create(key, value(record));
                    }
                }
                StoreOp::PutDelivery {
                    client_id,
                    seq,
                    record,
                } => {
                    let old = self
                        .deliveries
                        .insert((client_id.clone(), *seq), record.clone());
                    let fresh = old.is_none();
                    held += i64::from(fresh);
                    let old_message = old.map(|o| o.message_id);
                    if old_message != Some(record.message_id) {
                        self.ref_message(record.message_id);
                        if let Some(previous) = old_message {
                            self.unref_message(previous, &mut batch);
                        }
                    }
                    self.write_delivery(client_id, *seq, fresh, &mut batch);
                }
                StoreOp::MarkDelivery {
                    client_id,
                    seq,
                    packet_id,
                    released,
                } => {
                    // Gone meanwhile (acknowledged, session ended): nothing to mark.
                    if let Some(d) = self.deliveries.get_mut(&(client_id.clone(), *seq)) {
                        d.packet_id = Some(*packet_id);
                        d.released = *released;
                        self.write_delivery(client_id, *seq, false, &mut batch);
                    }
                }
                StoreOp::DeleteDelivery { client_id, seq } => {
                    held -= self.delete_delivery(client_id, *seq, &mut batch);
                }
                StoreOp::PutIncomingQos2 {
                    client_id,
                    packet_id,
                } => {
                    let key = keys::incoming(client_id, *packet_id);
                    if self.incoming.insert((client_id.clone(), *packet_id)) {
                        batch.create(key, value(&()));
                    } else {
                        batch.put(key, value(&()));
                    }
                }
                StoreOp::DeleteIncomingQos2 {
                    client_id,
                    packet_id,
                } => {
                    self.incoming.remove(&(client_id.clone(), *packet_id));
                    batch.put(keys::incoming(client_id, *packet_id), None);
                }
                StoreOp::PutRetained { record } => {
                    batch.put(keys::retained(&record.topic), value(record));
                }
                StoreOp::DeleteRetained { topic } => {
                    batch.put(keys::retained(topic), None);
                }
                StoreOp::PutQueued { queue, seq, record } => {
                    let key = keys::queued(&self.node, queue, *seq);
                    if self.queued.insert((queue.clone(), *seq)) {
                        held += 1;
                        batch.create(key, value(record));
                    } else {
                        batch.put(key, value(record));
                    }
                }
                StoreOp::DeleteQueued { queue, seq } => {
                    held -= i64::from(self.queued.remove(&(queue.clone(), *seq)));
                    batch.put(keys::queued(&self.node, queue, *seq), None);
                }
                StoreOp::PutWill { client_id, record } => {
                    batch.put(keys::will(client_id), value(record));
                }
                StoreOp::DeleteWill { client_id } => {
                    batch.put(keys::will(client_id), None);
                }
                StoreOp::PutSchema { name, record } => {
                    batch.put(keys::schema(name), value(record));
                }
                StoreOp::DeleteSchema { name } => {
                    batch.put(keys::schema(name), None);
                }
                StoreOp::PutStreamConsumer {
                    stream,
                    consumer,
                    offset,
                } => batch.put(keys::stream_consumer(stream, consumer), value(offset)),
                StoreOp::PutStreamDeclaration { stream, settings } => {
                    batch.put(keys::stream_declaration(stream), value(settings));
                }
                StoreOp::DeleteStreamDeclaration { stream } | StoreOp::DeleteStream { stream } => {
                    batch.put(keys::stream_declaration(stream), None);
                }
                StoreOp::PutPeerMarks { node, marks } => {
                    batch.put(keys::peer_marks(node), value(marks));
                }
                // Their own JetStream streams (`streams.rs`).
                StoreOp::AppendStream { .. } | StoreOp::TrimStream { .. } => {}
                // In order: the client's records before it are written,
                // none after (the compactor follows once this commits).
                StoreOp::ReleaseClient { client_id } => self.release(client_id),
                StoreOp::HoldClient { client_id } => self.hold(client_id),
            }
        }
        let (writes, fresh) = batch.finish();
        self.fresh = fresh;
        (writes, held)
    }

    /// Whether `op` writes records of a client id another node took over.
    fn fenced(&self, op: &StoreOp) -> bool {
        if self.released.is_empty() {
            return false;
        }
        let client = match op {
            StoreOp::PutSession { client_id, .. }
            | StoreOp::DeleteSession { client_id }
            | StoreOp::PutDelivery { client_id, .. }
            | StoreOp::MarkDelivery { client_id, .. }
            | StoreOp::DeleteDelivery { client_id, .. }
            | StoreOp::PutIncomingQos2 { client_id, .. }
            | StoreOp::DeleteIncomingQos2 { client_id, .. }
            | StoreOp::PutWill { client_id, .. }
            | StoreOp::DeleteWill { client_id } => client_id,
            _ => return false,
        };
        self.released.contains(client)
    }

    /// This node serves `client_id` again: its records are written again.
    pub(super) fn hold(&mut self, client_id: &str) {
        self.released.remove(client_id);
    }

    /// Adds what a read of one client's records found (a session taken over).
    pub(super) fn merge(&mut self, other: Mirror) {
        self.deliveries.extend(other.deliveries);
        self.incoming.extend(other.incoming);
        self.shared_away.extend(other.shared_away);
        for (id, message) in other.messages {
            // This node's message, come back with a session from another
            // node: sessions that moved on from here may still refer to it
            // (those let go when no other here did are known nowhere now),
            // so its last reference here never deletes it.
            if message.node == self.node {
                self.shared_away.insert(id);
            }
            self.messages
                .entry(id)
                .and_modify(|m| m.refs += message.refs)
                .or_insert(message);
        }
    }

    /// Forgets `client_id`'s records without writing: another node holds
    /// them now (and may refer to this node's messages, which therefore stay).
    pub(super) fn release(&mut self, client_id: &str) {
        let range = (client_id.to_string(), 0)..=(client_id.to_string(), u64::MAX);
        let gone: Vec<(String, u64)> = self
            .deliveries
            .range(range)
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            if let Some(old) = self.deliveries.remove(&key) {
                if let Some(m) = self.messages.get_mut(&old.message_id) {
                    m.refs = m.refs.saturating_sub(1);
                    if m.refs == 0 {
                        // Not deleted here: nothing left to guard.
                        self.messages.remove(&old.message_id);
                        self.shared_away.remove(&old.message_id);
                    } else if m.node == self.node {
                        self.shared_away.insert(old.message_id);
                    }
                }
            }
        }
        self.incoming.retain(|(client, _)| client != client_id);
        self.released.insert(client_id.to_string());
    }

    /// Writes the delivery as the mirror has it, naming the node its message is from.
    /// Writes delivery `seq` of `client_id` as it is now; `fresh` when this
    /// batch made it (see [`Batch::create`]).
    fn write_delivery(&self, client_id: &str, seq: u64, fresh: bool, batch: &mut Batch) {
        let Some(record) = self.deliveries.get(&(client_id.to_string(), seq)) else {
            return;
        };
        let mut record = record.clone();
        let message_node = match self.messages.get(&record.message_id) {
            Some(m) => {
                record.message_id = m.stored_id;
                m.node.clone()
            }
            None => self.node.clone(),
        };
        let stored = DeliveryValue {
            record,
            message_node,
        };
        let key = keys::delivery(client_id, seq);
        if fresh {
            batch.create(key, value(&stored));
        } else {
            batch.put(key, value(&stored));
        }
    }

    /// Removes a delivery; 1 if there was one.
    fn delete_delivery(&mut self, client_id: &str, seq: u64, batch: &mut Batch) -> i64 {
        batch.put(keys::delivery(client_id, seq), None);
        match self.deliveries.remove(&(client_id.to_string(), seq)) {
            Some(old) => {
                self.unref_message(old.message_id, batch);
                1
            }
            None => 0,
        }
    }

    fn ref_message(&mut self, id: u64) {
        let node = self.node.clone();
        self.messages
            .entry(id)
            .or_insert_with(|| MessageRef {
                node,
                stored_id: id,
                refs: 0,
            })
            .refs += 1;
    }

    /// One delivery fewer refers to message `id`: this node's own message goes
    /// with the last, unless a client let go referred to it too. Another
    /// node's is left: its sessions may refer to it.
    fn unref_message(&mut self, id: u64, batch: &mut Batch) {
        let Some(message) = self.messages.get_mut(&id) else {
            return;
        };
        message.refs = message.refs.saturating_sub(1);
        if message.refs == 0 {
            if message.node == self.node && !self.shared_away.remove(&id) {
                batch.put(keys::message(&message.node, message.stored_id), None);
            }
            self.messages.remove(&id);
        }
    }
}
