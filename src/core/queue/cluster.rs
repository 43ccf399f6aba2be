//! The registry in cluster mode (see `core::cluster_queue`): the cluster
//! holds every queue's messages; this node's registry only hands the ones the
//! cluster gives it to local consumers, and gives back what they leave.
//!
//! A message from the cluster is never in this node's store (the cluster
//! keeps it until it is acked, so a restarted node must not bring it back a
//! second time): its entry carries [`FROM_CLUSTER`] instead of a stored seq.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{queue_name, Entry, Leased, Queue, QueueRegistry};
use crate::core::cluster_queue::ClusterQueues;
use crate::core::content::MessageView;
use crate::core::message::Message;
use crate::core::selector::Selector;

/// The seq of an entry the cluster handed over: not in this node's store.
pub(super) const FROM_CLUSTER: u64 = 0;

/// Pause of a cluster pull that got nothing it could lease, before it asks again.
const REFETCH_PAUSE: Duration = Duration::from_millis(100);

/// First character of a registry key that is a shared group (cluster mode):
/// NUL, which no queue name holds (a queue name is part of a topic).
const SHARED_MARK: char = '\0';

/// The registry key of shared group filter `$share/<g>/<f>` in cluster mode.
pub fn shared_group_key(filter: &str) -> String {
    format!("{SHARED_MARK}{filter}")
}

/// The shared group filter (`$share/<g>/<f>`) a registry key stands for;
/// None for a queue name.
pub fn shared_group_filter(key: &str) -> Option<&str> {
    key.strip_prefix(SHARED_MARK)
}

/// Messages a consumer without an ack window (its session's own flow carries
/// them) is offered per round; its session's queue bounds the rest.
const ROOM_WITHOUT_WINDOW: usize = 16;

impl QueueRegistry {
    /// Hands every queue to `cluster` from now on (once, before any client).
    /// False if a cluster was set already.
    pub fn set_cluster(&self, cluster: Arc<dyn ClusterQueues>) -> bool {
        self.cluster.set(cluster).is_ok()
    }

    /// Whether the cluster holds the queues (and shared groups).
    pub fn is_clustered(&self) -> bool {
        self.cluster.get().is_some()
    }

    /// The registry key of what a subscription to `filter` consumes: queue
    /// `<q>` for `$queue/<q>`, and in cluster mode a shared group for
    /// `$share/<g>/<f>` (each message to one member in the whole cluster, as a
    /// queue's to one consumer). None for any other filter.
    pub fn consumed_by<'a>(&self, filter: &'a str) -> Option<Cow<'a, str>> {
        if let Some(name) = queue_name(filter) {
            return Some(Cow::Borrowed(name));
        }
        (self.is_clustered() && filter.starts_with("$share/"))
            .then(|| Cow::Owned(shared_group_key(filter)))
    }

    /// How many more messages of queue `name` this node's consumers can take
    /// now (0: none connected, or every ack window full).
    pub fn cluster_room(&self, name: &str) -> usize {
        let queues = self.queues.lock();
        let Some(queue) = queues.get(name) else {
            return 0;
        };
        queue
            .consumers
            .iter()
            .filter(|c| c.can_take())
            .map(|c| {
                c.window.map_or(ROOM_WITHOUT_WINDOW, |max| {
                    max.saturating_sub(c.unacked.len())
                })
            })
            .sum()
    }

    /// Messages the cluster handed over that go back to it (leases that
    /// expired or were nacked): the cluster hands them out again.
    pub(super) fn give_back_to_cluster(&self, name: &str, messages: Vec<Arc<Message>>) {
        if let (false, Some(cluster)) = (messages.is_empty(), self.cluster.get()) {
            cluster.give_back(name, messages);
        }
    }

    /// A pull (HTTP) from queue `name` in cluster mode: up to `max` messages
    /// the cluster hands over, the first waited for up to `wait`, each under a
    /// lease of `visibility` here (ack, nack and extend it on this node, as on
    /// one node). Those `selector` does not match go back to the cluster at
    /// once. Without a cluster, a local pull (no wait).
    pub async fn pull_from_cluster(
        &self,
        name: &str,
        max: usize,
        visibility: Duration,
        selector: Option<&Selector>,
        wait: Duration,
    ) -> Vec<Leased> {
        let Some(cluster) = self.cluster.get() else {
            return self.pull_matching(name, max, visibility, selector);
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let fetched = cluster.fetch(name, max, left).await;
            let leased = self.lease_from_cluster(name, fetched, visibility, selector);
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if !leased.is_empty() || left.is_zero() {
                return leased;
            }
            // Only messages the selector leaves out came (or the cluster
            // failed at once): not straight back for the same ones.
            tokio::time::sleep(REFETCH_PAUSE.min(left)).await;
        }
    }

    fn lease_from_cluster(
        &self,
        name: &str,
        fetched: Vec<Arc<Message>>,
        visibility: Duration,
        selector: Option<&Selector>,
    ) -> Vec<Leased> {
        if fetched.is_empty() {
            return Vec::new();
        }
        let now = Instant::now();
        let deadline = now + visibility;
        let mut out = Vec::new();
        let mut unwanted = Vec::new();
        let mut queues = self.queues.lock();
        let queue = queues
            .entry(Arc::from(name))
            .or_insert_with(|| Queue::new(name, self.store.as_ref()));
        for message in fetched {
            // An expired one is dropped (done: the cluster forgets it), as on one node.
            if message.is_expired(now) {
                continue;
            }
            if selector.is_some_and(|s| !s.matches(&MessageView::new(&message))) {
                unwanted.push(message);
                continue;
            }
            out.push(queue.lease(&self.pulls, FROM_CLUSTER, message, deadline));
        }
        if queue.is_idle() {
            queues.remove(name);
        }
        self.pulls.leased(out.len());
        self.give_back_to_cluster(name, unwanted);
        out
    }

    /// Whether some consumer of queue `name` on this node, with room or not,
    /// would take `message` (its selector and exceptions let it through).
    /// False: nobody here ever will, only a consumer on another node may.
    pub fn cluster_wants(&self, name: &str, message: &Message) -> bool {
        let queues = self.queues.lock();
        let Some(queue) = queues.get(name) else {
            return false;
        };
        let view = MessageView::new(message);
        queue.consumers.iter().any(|c| c.wants(message, &view))
    }

    /// Hands `message`, taken from the cluster's queue `name`, to a local
    /// consumer in turn. False when none could take it (none left, all full):
    /// the caller gives it back to the cluster; it is not kept here.
    pub fn deliver_from_cluster(&self, name: &str, message: Arc<Message>) -> bool {
        let mut queues = self.queues.lock();
        let Some(queue) = queues.get_mut(name) else {
            return false;
        };
        queue.ready.push_back(Entry {
            seq: FROM_CLUSTER,
            message: Arc::clone(&message),
        });
        queue.dispatch();
        // Not kept here if no consumer took it (what `ready` held before, from
        // this node's store, stays).
        let waiting = queue.ready.len();
        queue
            .ready
            .retain(|entry| !Arc::ptr_eq(&entry.message, &message));
        queue.ready.len() == waiting
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use parking_lot::Mutex;

    use super::*;
    use crate::core::exceptions::Exceptions;
    use crate::core::message::QoS;
    use crate::core::queue::tests::{message, session};
    use crate::core::queue::QueueError;

    /// Records what the registry hands the cluster.
    #[derive(Debug, Default)]
    struct FakeCluster {
        enqueued: Mutex<Vec<String>>,
        consumers: Mutex<Vec<(String, usize)>>,
        given_back: Mutex<Vec<String>>,
        full: bool,
        /// What `fetch` hands a pull.
        waiting: Mutex<Vec<Arc<Message>>>,
    }

    impl ClusterQueues for FakeCluster {
        fn enqueue(&self, name: &str, message: &Arc<Message>) -> Result<(), QueueError> {
            if self.full {
                return Err(QueueError::Full {
                    queue: name.into(),
                    max: 1,
                });
            }
            self.enqueued.lock().push(body(message));
            Ok(())
        }
        fn consumers_changed(&self, name: &str, count: usize) {
            self.consumers.lock().push((name.into(), count));
        }
        fn give_back(&self, _name: &str, messages: Vec<Arc<Message>>) {
            self.given_back
                .lock()
                .extend(messages.iter().map(|m| body(m)));
        }
        fn fetch(
            &self,
            _name: &str,
            max: usize,
            _wait: Duration,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<Arc<Message>>> + Send + '_>>
        {
            let mut waiting = self.waiting.lock();
            let count = max.min(waiting.len());
            let taken: Vec<_> = waiting.drain(..count).collect();
            Box::pin(async move { taken })
        }
    }

    fn body(message: &Message) -> String {
        String::from_utf8_lossy(&message.payload).into_owned()
    }

    fn clustered(fake: &Arc<FakeCluster>) -> QueueRegistry {
        let queues = QueueRegistry::new(10);
        assert!(queues.set_cluster(Arc::clone(fake) as Arc<dyn ClusterQueues>));
        queues
    }

    #[test]
    fn publishes_go_to_the_cluster_not_to_the_local_queue() {
        let fake = Arc::new(FakeCluster::default());
        let queues = clustered(&fake);
        queues.enqueue("jobs", message("1")).unwrap();
        assert_eq!(*fake.enqueued.lock(), ["1"]);
        assert_eq!(queues.depth("jobs").ready, 0);
        let full = Arc::new(FakeCluster {
            full: true,
            ..FakeCluster::default()
        });
        let queues = clustered(&full);
        assert!(matches!(
            queues.enqueue("jobs", message("1")),
            Err(QueueError::Full { .. })
        ));
    }

    #[test]
    fn consumers_are_counted_for_the_cluster() {
        let fake = Arc::new(FakeCluster::default());
        let queues = clustered(&fake);
        let (a, b) = (session("a", Some(2)), session("b", None));
        queues.add_consumer("jobs", &a, QoS::AtLeastOnce, None, None, Exceptions::NONE);
        queues.add_consumer("jobs", &b, QoS::AtLeastOnce, None, None, Exceptions::NONE);
        assert_eq!(queues.cluster_room("jobs"), 2 + ROOM_WITHOUT_WINDOW);
        queues.remove_consumer("jobs", &b);
        queues.remove_consumer("jobs", &a);
        assert_eq!(
            *fake.consumers.lock(),
            [
                ("jobs".into(), 1),
                ("jobs".into(), 2),
                ("jobs".into(), 1),
                ("jobs".into(), 0)
            ]
        );
        assert_eq!(queues.cluster_room("jobs"), 0);
    }

    #[test]
    fn nack_and_a_leaving_consumer_give_messages_back_to_the_cluster() {
        let fake = Arc::new(FakeCluster::default());
        let queues = clustered(&fake);
        let a = session("a", Some(2));
        queues.add_consumer("jobs", &a, QoS::AtLeastOnce, None, None, Exceptions::NONE);
        let (one, two) = (message("1"), message("2"));
        assert!(queues.deliver_from_cluster("jobs", Arc::clone(&one)));
        assert!(queues.deliver_from_cluster("jobs", Arc::clone(&two)));
        // The window (2) is full: no room, and a third is not kept here.
        assert_eq!(queues.cluster_room("jobs"), 0);
        assert!(!queues.deliver_from_cluster("jobs", message("3")));
        assert_eq!(queues.depth("jobs").ready, 0);
        queues.nack("jobs", &a, &one).unwrap();
        assert_eq!(*fake.given_back.lock(), ["1"]);
        assert_eq!(queues.depth("jobs").ready, 0, "not redelivered locally");
        queues.remove_consumer("jobs", &a);
        assert_eq!(*fake.given_back.lock(), ["1", "2"]);
    }

    #[test]
    fn an_acked_cluster_message_is_released_and_never_stored() {
        let fake = Arc::new(FakeCluster::default());
        let queues = clustered(&fake);
        let a = session("a", Some(2));
        queues.add_consumer("jobs", &a, QoS::AtLeastOnce, None, None, Exceptions::NONE);
        let one = message("1");
        let watch = Arc::downgrade(&one);
        assert!(queues.deliver_from_cluster("jobs", Arc::clone(&one)));
        assert!(queues.ack("jobs", &a, &one).is_some());
        drop(one);
        let mut out = Vec::new();
        a.take_pending(usize::MAX, &mut out);
        drop(out);
        assert_eq!(
            watch.strong_count(),
            0,
            "nothing holds it: the cluster acks it"
        );
    }

    #[test]
    fn a_member_never_gets_what_its_acl_exceptions_name() {
        let fake = Arc::new(FakeCluster::default());
        let queues = clustered(&fake);
        let key = shared_group_key("$share/g/#");
        let (open, carved) = (session("open", Some(4)), session("carved", Some(4)));
        let denied = vec![crate::core::topic::Filter::parse("test/nosubscribe").unwrap()];
        queues.add_consumer(
            &key,
            &carved,
            QoS::AtLeastOnce,
            None,
            None,
            Exceptions::new(denied),
        );
        let secret = || {
            Arc::new(Message::new(
                "test/nosubscribe",
                Bytes::from_static(b"secret"),
                QoS::AtLeastOnce,
                false,
            ))
        };
        assert!(
            !queues.cluster_wants(&key, &secret()),
            "only its member here is carved"
        );
        assert!(!queues.deliver_from_cluster(&key, secret()));
        assert!(queues.cluster_wants(&key, &message("open")));
        assert!(queues.deliver_from_cluster(&key, message("open")));
        queues.add_consumer(&key, &open, QoS::AtLeastOnce, None, None, Exceptions::NONE);
        for _ in 0..2 {
            assert!(queues.deliver_from_cluster(&key, secret()));
        }
        let mut out = Vec::new();
        carved.take_pending(usize::MAX, &mut out);
        let topics: Vec<&str> = out.iter().map(|d| &*d.message.topic).collect();
        assert_eq!(
            topics,
            ["$queue/jobs"],
            "the carved member got only the open message"
        );
        out.clear();
        open.take_pending(usize::MAX, &mut out);
        assert_eq!(out.len(), 2, "the other member got both secrets");
    }

    #[tokio::test]
    async fn a_pull_leases_what_the_cluster_hands_over_and_gives_back_the_rest() {
        let fake = Arc::new(FakeCluster::default());
        let queues = clustered(&fake);
        let kind = |body: &'static str, kind: &str| {
            let mut m = Message::new(
                "$queue/jobs",
                Bytes::from_static(body.as_bytes()),
                QoS::AtLeastOnce,
                false,
            );
            m.properties = Some(Arc::new(crate::core::message::MessageProperties {
                user_properties: vec![("kind".into(), kind.into())],
                ..Default::default()
            }));
            Arc::new(m)
        };
        fake.waiting.lock().extend([
            kind("1", "a"),
            kind("2", "b"),
            kind("3", "a"),
            kind("4", "a"),
        ]);
        let watch = Arc::downgrade(&fake.waiting.lock()[0]);
        let selector = crate::core::selector::Selector::parse("kind = 'a'").unwrap();
        let minute = Duration::from_secs(60);
        let leased = queues
            .pull_from_cluster("jobs", 3, minute, Some(&selector), Duration::ZERO)
            .await;
        let bodies: Vec<String> = leased.iter().map(|l| body(&l.message)).collect();
        assert_eq!(bodies, ["1", "3"]);
        assert_eq!(
            *fake.given_back.lock(),
            ["2"],
            "what the selector leaves out goes back"
        );
        // Acked: nothing here holds it, so the cluster finishes it.
        queues.ack_lease("jobs", leased[0].lease_id).unwrap();
        let (first, second) = (leased[0].lease_id, leased[1].lease_id);
        drop(leased);
        assert_eq!(watch.strong_count(), 0);
        assert!(queues.ack_lease("jobs", first).is_err());
        // Nacked or expired: back to the cluster, not to a local queue.
        queues.nack_lease("jobs", second, Duration::ZERO).unwrap();
        assert_eq!(*fake.given_back.lock(), ["2", "3"]);
        let last = queues
            .pull_from_cluster("jobs", 5, minute, None, Duration::ZERO)
            .await;
        assert_eq!(body(&last[0].message), "4");
        assert_eq!(queues.expire_leases(Instant::now() + minute * 2), 1);
        assert_eq!(*fake.given_back.lock(), ["2", "3", "4"]);
        assert_eq!(queues.depth("jobs").ready, 0);
        assert_eq!(queues.lease_count(), 0);
    }

    #[test]
    fn a_session_without_window_gives_back_what_it_did_not_finish() {
        let fake = Arc::new(FakeCluster::default());
        let queues = clustered(&fake);
        queues.requeue("jobs", vec![message("1"), message("2")].into_iter());
        assert_eq!(*fake.given_back.lock(), ["1", "2"]);
        assert_eq!(queues.depth("jobs").ready, 0);
    }
}
