//! What the router hands the cluster's queues (`core::cluster_queue`): in
//! cluster mode queues and shared groups are consumed through the registry
//! and fed by the cluster, never by local routing.

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use super::Router;
use crate::core::cluster_queue::ClusterQueues;
use crate::core::message::{Message, QoS};
use crate::core::queue::{shared_group_key, QueueError};
use crate::core::session::{OverflowPolicy, QueueLimits, SessionOwner, SubscriptionOptions};
use crate::core::topic::Filter;

#[derive(Debug, Default)]
struct Recorder {
    enqueued: Mutex<Vec<String>>,
    consumers: Mutex<Vec<(String, usize)>>,
    given_back: Mutex<usize>,
}

impl ClusterQueues for Recorder {
    fn enqueue(&self, name: &str, _message: &Arc<Message>) -> Result<(), QueueError> {
        self.enqueued.lock().push(name.to_string());
        Ok(())
    }
    fn consumers_changed(&self, name: &str, count: usize) {
        self.consumers.lock().push((name.to_string(), count));
    }
    fn give_back(&self, _name: &str, messages: Vec<Arc<Message>>) {
        *self.given_back.lock() += messages.len();
    }
    fn fetch(
        &self,
        _name: &str,
        _max: usize,
        _wait: std::time::Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<Arc<Message>>> + Send + '_>> {
        Box::pin(async { Vec::new() })
    }
}

fn options() -> SubscriptionOptions {
    SubscriptionOptions {
        qos: QoS::AtLeastOnce,
        no_local: false,
        retain_as_published: false,
        retain_handling: 0,
        subscription_id: None,
        exceptions: Default::default(),
        selector: None,
    }
}

pub(super) fn message(topic: &str) -> Arc<Message> {
    Arc::new(Message::new(
        topic,
        Bytes::from_static(b"x"),
        QoS::AtLeastOnce,
        false,
    ))
}

#[tokio::test]
async fn shared_groups_and_queues_go_through_the_cluster() {
    let router = Arc::new(Router::new(QueueLimits {
        max_queued: 10,
        max_queued_bytes: 0,
        overflow: OverflowPolicy::DropNew,
        max_queued_age_ms: 0,
    }));
    let recorder = Arc::new(Recorder::default());
    assert!(router.queues().set_cluster(recorder.clone()));
    let member = router
        .attach(&Arc::from("m"), &SessionOwner::Anonymous, true, 0)
        .expect("attach");
    let group = "$share/g/jobs/+";
    router.subscribe(
        &member.session,
        Filter::parse(group).expect("filter"),
        options(),
    );
    router.subscribe(
        &member.session,
        Filter::parse("$queue/q").expect("filter"),
        options(),
    );
    let key = shared_group_key(group);
    assert_eq!(
        *recorder.consumers.lock(),
        [(key.clone(), 1), ("q".to_string(), 1)]
    );
    // Local routing does not reach the group: its messages come from the cluster.
    assert_eq!(router.publish(message("jobs/1")), 0);
    assert_eq!(member.session.pending_len(), 0);
    router.publish(message("$queue/q"));
    assert_eq!(*recorder.enqueued.lock(), ["q"]);
    // From the cluster, the member gets it, on its group's filter.
    assert!(router
        .queues()
        .deliver_from_cluster(&key, message("jobs/2")));
    assert_eq!(member.session.pending_len(), 1);
    // The member's session ends with it undelivered: given back to the cluster.
    router.detach(&member.session, member.connection_id);
    assert_eq!(*recorder.given_back.lock(), 1);
    assert!(recorder.consumers.lock().contains(&(key, 0)));
}
