//! What the queue registry asks of the cluster for point-to-point queues
//! (`$queue/<name>`), without knowing NATS: in cluster mode a queue is one
//! queue in the whole cluster, held by the cluster (`src/cluster/queues.rs`);
//! this node's registry only hands the messages the cluster gives it to its
//! local consumers and tells the cluster what they did with them.
//!
//! - Publish: [`ClusterQueues::enqueue`] instead of the local `ready` list.
//! - Delivery: the cluster calls `QueueRegistry::deliver_from_cluster` while
//!   this node has consumers of the queue ([`ClusterQueues::consumers_changed`])
//!   with room for more (`QueueRegistry::cluster_room`).
//! - Done: a message is finished once nothing on this node holds it any more
//!   (the consumer acked it: MQTT PUBACK/PUBCOMP, STOMP ACK); the cluster sees
//!   that by itself.
//! - Given back (NACK, a consumer that left with unacknowledged messages, a
//!   message no local consumer can take): [`ClusterQueues::give_back`]; the
//!   cluster hands it out again to a consumer on any node.
//!
//! - Pull consumers (HTTP): [`ClusterQueues::fetch`] takes messages for a
//!   pull, which the registry holds under leases; an acked lease finishes its
//!   message, a nacked or expired one is given back.
//!
//! Called under the registry's lock (but `fetch`): an implementation must not block.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::core::message::Message;
use crate::core::queue::QueueError;

pub trait ClusterQueues: Send + Sync + std::fmt::Debug {
    /// A message a client of this node published to queue `name`: the cluster
    /// keeps it until a consumer on some node acks it. `Full` when the queue
    /// is known to hold `queue_max_messages` in the whole cluster.
    fn enqueue(&self, name: &str, message: &Arc<Message>) -> Result<(), QueueError>;

    /// Queue `name` has `count` consumers on this node now (0: none left).
    fn consumers_changed(&self, name: &str, count: usize);

    /// Messages of queue `name` the cluster handed to this node that its
    /// consumers did not finish: the cluster hands them out again.
    fn give_back(&self, name: &str, messages: Vec<Arc<Message>>);

    /// Takes up to `max` messages of queue `name` for a pull consumer of this
    /// node: those waiting now, or else the first that comes within `wait`
    /// (empty after `wait` without any). Settled as consumers' deliveries are
    /// (finished once nothing here holds them; `give_back` otherwise). Not
    /// called under the registry's lock.
    fn fetch(
        &self,
        name: &str,
        max: usize,
        wait: Duration,
    ) -> Pin<Box<dyn Future<Output = Vec<Arc<Message>>> + Send + '_>>;
}
