//! Consumer groups: every subscription naming the same consumer on the same
//! stream (any protocol) is a member of one group, which shares the stream's
//! messages like a shared subscription.
//!
//! - **Assignment by topic hash**: a message goes to the member at
//!   `hash(topic) % members` (members in join order), so each topic's
//!   messages reach one member, in offset order. Every member's reader walks
//!   the whole stream and takes only the offsets assigned to it (`take`).
//! - **At-least-once commit**: an offset is done when acknowledged, or when
//!   the member it is assigned to may not receive it (stream filter, ACL).
//!   The committed offset is the end of the dense run of done offsets, so it
//!   never passes a message that is delivered but not acknowledged.
//! - **Membership changes** (a member joins or leaves): the group's epoch
//!   moves on, its readers restart from the first offset not done, skipping
//!   what is done or still outstanding at a present member; what a leaving
//!   member had not acknowledged goes to whoever its topics now hash to.
//!   Readers of an older epoch take nothing more. A persistent MQTT session
//!   that is disconnected stays a member (its messages wait for it) until it
//!   ends or unsubscribes.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use parking_lot::Mutex;

use super::log::StreamLog;
use super::reader::{self, Reader};
use super::{ConsumerKey, ReaderKey, Streams};
use crate::store::StoreOp;

/// One consumer name's readers of one stream.
#[derive(Debug)]
pub(crate) struct Group {
    state: Mutex<GroupState>,
}

#[derive(Debug)]
struct GroupState {
    /// Moves on at each membership change; readers of an older one take nothing.
    epoch: u64,
    /// Member ids and their subscriptions, in join order.
    members: Vec<(u64, ReaderKey)>,
    next_member: u64,
    /// Every offset below is done.
    next_undone: u64,
    /// Done offsets above `next_undone` (acknowledged out of order).
    done: BTreeSet<u64>,
    /// Delivered and not acknowledged yet: offset → member id.
    outstanding: HashMap<u64, u64>,
    /// The committed offset last handed out for storing.
    reported: Option<u64>,
}

/// A reader's place in its group.
#[derive(Debug, Clone)]
pub(crate) struct Seat {
    pub group: Arc<Group>,
    pub member: u64,
    pub epoch: u64,
}

fn topic_hash(topic: &str) -> u64 {
    // Fixed keys: the same topic maps to the same member on every run.
    let mut hasher = DefaultHasher::new();
    topic.hash(&mut hasher);
    hasher.finish()
}

impl GroupState {
    fn assigned(&self, topic: &str) -> Option<u64> {
        let n = self.members.len() as u64;
        (n > 0).then(|| self.members[(topic_hash(topic) % n) as usize].0)
    }

    fn is_settled(&self, offset: u64) -> bool {
        offset < self.next_undone
            || self.done.contains(&offset)
            || self.outstanding.contains_key(&offset)
    }

    fn mark_done(&mut self, offset: u64) {
        if offset < self.next_undone {
            return;
        }
        self.done.insert(offset);
        while self.done.remove(&self.next_undone) {
            self.next_undone += 1;
        }
    }
}

impl Group {
    fn new(next_undone: u64) -> Group {
        Group {
            state: Mutex::new(GroupState {
                epoch: 0,
                members: Vec::new(),
                next_member: 0,
                next_undone,
                done: BTreeSet::new(),
                outstanding: HashMap::new(),
                reported: None,
            }),
        }
    }

    /// Whether the seat's reader delivers `offset` (of `topic`); if so it is
    /// outstanding at that member from now on. An offset assigned to the seat
    /// that its reader may not deliver (`wanted` false) is done at once.
    pub fn take(&self, seat: &Seat, offset: u64, topic: &str, wanted: bool) -> bool {
        let mut s = self.state.lock();
        if s.epoch != seat.epoch || s.assigned(topic) != Some(seat.member) || s.is_settled(offset) {
            return false;
        }
        if !wanted {
            s.mark_done(offset);
            return false;
        }
        s.outstanding.insert(offset, seat.member);
        true
    }

    /// A taken offset did not reach the member after all (its queue refused it).
    pub fn release(&self, offset: u64) {
        self.state.lock().outstanding.remove(&offset);
    }

    /// Every offset below `first` is gone from the stream (retention, purge).
    pub fn skip_below(&self, first: u64) {
        let mut guard = self.state.lock();
        let s = &mut *guard;
        if first > s.next_undone {
            s.next_undone = first;
            s.done = s.done.split_off(&first);
            s.outstanding.retain(|offset, _| *offset >= first);
            while s.done.remove(&s.next_undone) {
                s.next_undone += 1;
            }
        }
    }

    /// `offset` was acknowledged; the committed offset when it moved on.
    pub fn ack(&self, offset: u64) -> Option<u64> {
        let mut s = self.state.lock();
        s.outstanding.remove(&offset);
        s.mark_done(offset);
        let committed = s.next_undone.checked_sub(1)?;
        if s.reported == Some(committed) {
            return None;
        }
        s.reported = Some(committed);
        Some(committed)
    }
}

impl Streams {
    /// Adds `key`'s reader (already in the readers map) to the group of
    /// `consumer`, which starts at `start` if it is new, and restarts every
    /// member's reader.
    pub(super) fn join_group(
        self: &Arc<Self>,
        log: &Arc<StreamLog>,
        consumer: Arc<str>,
        key: ReaderKey,
        start: u64,
    ) {
        let _serial = self.group_changes.lock();
        let group_key: ConsumerKey = (Arc::clone(&log.name), consumer);
        let group = Arc::clone(
            self.groups
                .lock()
                .entry(group_key)
                .or_insert_with(|| Arc::new(Group::new(start))),
        );
        {
            let mut s = group.state.lock();
            let id = s.next_member;
            s.next_member += 1;
            s.members.push((id, key));
            s.epoch += 1;
        }
        self.restart_group(&group);
    }

    /// Takes the reader `seat` belongs to out of its group (it has left the
    /// readers map): what it had not acknowledged goes to the others.
    pub(super) fn leave_group(self: &Arc<Self>, log: &StreamLog, reader: &Reader) {
        let Some(seat) = reader.seat.as_ref() else {
            return;
        };
        let consumer = match &reader.consumer {
            Some(c) => Arc::clone(c),
            None => return,
        };
        let _serial = self.group_changes.lock();
        let empty = {
            let mut s = seat.group.state.lock();
            s.members.retain(|(id, _)| *id != seat.member);
            s.outstanding.retain(|_, member| *member != seat.member);
            s.epoch += 1;
            s.members.is_empty()
        };
        if empty {
            let key: ConsumerKey = (Arc::clone(&log.name), consumer);
            let mut groups = self.groups.lock();
            if groups
                .get(&key)
                .is_some_and(|g| Arc::ptr_eq(g, &seat.group))
            {
                groups.remove(&key);
            }
        } else {
            self.restart_group(&seat.group);
        }
    }

    /// Replaces every member's reader by one of the group's current epoch,
    /// reading from the group's first offset not done.
    fn restart_group(self: &Arc<Self>, group: &Arc<Group>) {
        let (epoch, members, from) = {
            let readers = self.readers.lock();
            let mut s = group.state.lock();
            // A member whose subscription ended before it had a seat (its
            // session went between subscribe and join) leaves here.
            let before = s.members.len();
            s.members.retain(|(_, key)| readers.contains_key(key));
            if s.members.len() != before {
                s.epoch += 1;
            }
            (s.epoch, s.members.clone(), s.next_undone)
        };
        for (member, key) in members {
            let seat = Seat {
                group: Arc::clone(group),
                member,
                epoch,
            };
            let replaced = {
                let mut readers = self.readers.lock();
                match readers.get_mut(&key) {
                    Some((log, old)) => {
                        let fresh = Arc::new(old.renewed(seat));
                        let old = std::mem::replace(old, Arc::clone(&fresh));
                        Some((Arc::clone(log), old, fresh))
                    }
                    None => None,
                }
            };
            let Some((log, old, fresh)) = replaced else {
                continue;
            };
            old.cancel();
            log.state.lock().remove_live(&old);
            tokio::spawn(reader::run(Arc::clone(self), log, fresh, from));
        }
    }

    /// A named consumer's committed offset moved on: kept for the next
    /// subscriber of that name, across restarts.
    pub(super) fn commit_consumer(&self, stream: &Arc<str>, consumer: &Arc<str>, offset: u64) {
        self.consumers
            .lock()
            .insert((Arc::clone(stream), Arc::clone(consumer)), offset);
        if let Some(store) = &self.store {
            store.submit([StoreOp::PutStreamConsumer {
                stream: stream.to_string(),
                consumer: consumer.to_string(),
                offset,
            }]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seat(group: &Arc<Group>, member: u64) -> Seat {
        let epoch = group.state.lock().epoch;
        Seat {
            group: Arc::clone(group),
            member,
            epoch,
        }
    }

    fn group_of(members: u64) -> Arc<Group> {
        let group = Arc::new(Group::new(0));
        {
            let mut s = group.state.lock();
            for id in 0..members {
                s.members.push((id, (0, Arc::from("f"))));
            }
            s.next_member = members;
            s.epoch = 1;
        }
        group
    }

    #[test]
    fn each_offset_goes_to_exactly_one_member_by_topic() {
        let group = group_of(3);
        let seats: Vec<Seat> = (0..3).map(|m| seat(&group, m)).collect();
        for offset in 0..60u64 {
            let topic = format!("t/{}", offset % 7);
            let takers: Vec<u64> = seats
                .iter()
                .filter(|s| group.take(s, offset, &topic, true))
                .map(|s| s.member)
                .collect();
            assert_eq!(takers.len(), 1, "offset {offset}");
            assert_eq!(
                takers[0],
                group.state.lock().assigned(&topic).unwrap_or(u64::MAX)
            );
        }
    }

    #[test]
    fn the_commit_stops_at_the_first_unacknowledged_offset() {
        let group = group_of(1);
        let s = seat(&group, 0);
        for offset in 0..4 {
            assert!(group.take(&s, offset, "t", true));
        }
        assert_eq!(group.ack(1), None);
        assert_eq!(group.ack(0), Some(1));
        assert_eq!(group.ack(3), None);
        assert_eq!(group.ack(2), Some(3));
        // Taken once: a second reader pass does not deliver it again.
        assert!(!group.take(&s, 3, "t", true));
        assert!(group.take(&s, 4, "t", true));
    }

    #[test]
    fn unwanted_offsets_are_done_and_a_stale_epoch_takes_nothing() {
        let group = group_of(1);
        let s = seat(&group, 0);
        assert!(!group.take(&s, 0, "t", false));
        group.state.lock().epoch += 1;
        assert!(!group.take(&s, 1, "t", true));
        assert!(group.take(&seat(&group, 0), 1, "t", true));
        assert_eq!(group.ack(1), Some(1));
    }

    #[test]
    fn offsets_removed_by_retention_count_as_done() {
        let group = group_of(1);
        let s = seat(&group, 0);
        assert!(group.take(&s, 0, "t", true));
        group.skip_below(5);
        assert!(group.take(&s, 5, "t", true));
        assert_eq!(group.ack(5), Some(5));
    }
}
