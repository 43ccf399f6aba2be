//! Handing a queue's ready messages to its push consumers: round-robin, and
//! with selectors, past the messages nobody can take yet.

use std::sync::Arc;
use std::time::Instant;

use super::{Consumer, Entry, Queue, Unacked};
use crate::core::commit::Commit;
use crate::core::content::MessageView;
use crate::core::message::Delivery;
use crate::core::router::persist::MessageSlot;
use crate::core::session::PushOutcome;

impl Queue {
    /// Hands ready messages to consumers, taking turns, until one side runs out;
    /// returns the commit of what that stored.
    pub(super) fn dispatch(&mut self) -> Commit {
        if self.consumers.iter().any(Consumer::is_selective) {
            return self.dispatch_selective();
        }
        let mut commit = Commit::NONE;
        let now = Instant::now();
        // Consumers whose session refused a delivery in this round.
        let mut refused = vec![false; self.consumers.len()];
        while let Some(front) = self.ready.front() {
            if front.message.is_expired(now) {
                if let Some(entry) = self.ready.pop_front() {
                    commit.include(self.forget(entry.seq));
                }
                tracing::debug!(queue = %self.filter, "expired queue message discarded");
                continue;
            }
            let count = self.consumers.len();
            let Some(index) = (0..count)
                .map(|i| (self.next + i) % count)
                .find(|&i| !refused[i] && self.consumers[i].can_take())
            else {
                return commit;
            };
            let Some(entry) = self.ready.pop_front() else {
                return commit;
            };
            if let Err(entry) = self.hand_over(index, entry, &mut commit) {
                refused[index] = true;
                self.ready.push_front(entry);
            }
        }
        commit
    }

    /// [`Queue::dispatch`] when some consumer has a selector: each waiting
    /// message, oldest first, goes to the next consumer that can take it and
    /// matches it; a message no such consumer matches stays where it is and
    /// the later ones are tried (so this walks `ready`, bounded by the queue's cap).
    fn dispatch_selective(&mut self) -> Commit {
        let mut commit = Commit::NONE;
        let now = Instant::now();
        let count = self.consumers.len();
        let mut refused = vec![false; count];
        let mut at = 0;
        while at < self.ready.len() {
            if !(0..count).any(|i| !refused[i] && self.consumers[i].can_take()) {
                break;
            }
            let Some(entry) = self.ready.get(at) else {
                break;
            };
            if entry.message.is_expired(now) {
                if let Some(entry) = self.ready.remove(at) {
                    commit.include(self.forget(entry.seq));
                }
                tracing::debug!(queue = %self.filter, "expired queue message discarded");
                continue;
            }
            let view = MessageView::new(&entry.message);
            let found = (0..count).map(|i| (self.next + i) % count).find(|&i| {
                !refused[i]
                    && self.consumers[i].can_take()
                    && self.consumers[i].wants(&entry.message, &view)
            });
            let Some(index) = found else {
                at += 1;
                continue;
            };
            let Some(entry) = self.ready.remove(at) else {
                break;
            };
            if let Err(entry) = self.hand_over(index, entry, &mut commit) {
                refused[index] = true;
                self.ready.insert(at, entry);
            }
        }
        commit
    }

    /// Pushes one message to consumer `index`; gives it back if the session refused it.
    fn hand_over(&mut self, index: usize, entry: Entry, commit: &mut Commit) -> Result<(), Entry> {
        let count = self.consumers.len();
        let Entry { seq, message } = entry;
        let consumer = &mut self.consumers[index];
        let delivery = Delivery {
            qos: consumer.qos.min(message.qos),
            message: Arc::clone(&message),
            retain: false,
            subscription_ids: consumer.subscription_id.into_iter().collect(),
            filter: Some(Arc::clone(&self.filter)),
            seq: 0,
        };
        let (outcome, pushed) = consumer
            .session
            .push_stored(delivery, &MessageSlot::default());
        commit.include(pushed);
        match outcome {
            PushOutcome::Dropped => return Err(Entry { seq, message }),
            PushOutcome::QueuedDroppedOldest => {
                tracing::warn!(
                    queue = %self.filter,
                    client_id = %consumer.session.client_id,
                    "consumer session full: its oldest pending delivery was dropped"
                );
            }
            PushOutcome::Queued => {}
        }
        if consumer.window.is_some() {
            consumer.unacked.push_back(Unacked {
                seq,
                message,
                claimed: false,
            });
        } else {
            // The consumer's session carries it from here (and stores it if persistent).
            commit.include(self.forget(seq));
        }
        self.next = (index + 1) % count;
        Ok(())
    }
}
