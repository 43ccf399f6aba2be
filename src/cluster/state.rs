//! The core's `ClusterState` over JetStream: client id ownership
//! ([`super::ownership`]) and retained messages ([`super::retained`]), with the
//! tasks that keep them: set up once at start, before the node serves.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};

use super::ownership::{self, Ownership};
use super::retained::{self, RetainedSync};
use crate::core::cluster_state::{ClaimFailed, Claimed, ClusterFuture, ClusterState};
use crate::core::message::Message;
use crate::core::router::Router;
use crate::core::session::SubscriptionOptions;
use crate::core::topic::Filter;

/// A claim that takes longer than this is given up (NATS unreachable):
/// the connection is then served on this node alone rather than kept waiting.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(3);

/// Why the shared state could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SharedStateError {
    #[error("JetStream KV bucket {bucket}: {reason}")]
    Bucket {
        bucket: &'static str,
        reason: String,
    },
    #[error("a cluster state was set on this router already")]
    AlreadySet,
}

#[derive(Debug)]
pub struct SharedState {
    ownership: Arc<Ownership>,
    retained: Arc<RetainedSync>,
}

impl SharedState {
    /// Opens (or makes) the buckets with `replicas` copies, hands the router
    /// this state and starts the tasks that write and watch the buckets.
    pub async fn start(
        jetstream: &jetstream::Context,
        node: &str,
        replicas: usize,
        router: &Arc<Router>,
    ) -> Result<Arc<SharedState>, SharedStateError> {
        let owners = open_bucket(jetstream, ownership::BUCKET, replicas).await?;
        let retained = open_bucket(jetstream, retained::BUCKET, replicas).await?;
        let state = Arc::new(SharedState {
            ownership: Arc::new(Ownership::new(owners, node)),
            retained: Arc::new(RetainedSync::new(retained, node)),
        });
        if !router.set_cluster_state(Arc::clone(&state) as Arc<dyn ClusterState>) {
            return Err(SharedStateError::AlreadySet);
        }
        let weak = Arc::downgrade(router);
        tokio::spawn(Arc::clone(&state.ownership).run_writer());
        tokio::spawn(Arc::clone(&state.ownership).run_watch(weak.clone()));
        tokio::spawn(Arc::clone(&state.retained).run_writer());
        tokio::spawn(Arc::clone(&state.retained).run_watch(weak));
        Ok(state)
    }

    /// Whether this node holds `client_id` in the cluster.
    pub fn holds(&self, client_id: &str) -> bool {
        self.ownership.holds(client_id)
    }
}

/// The client ids other nodes than `node` hold now: the sessions of these
/// are theirs, not this node's to load from a shared store.
pub async fn clients_held_elsewhere(
    jetstream: &jetstream::Context,
    node: &str,
    replicas: usize,
) -> Result<std::collections::HashSet<String>, SharedStateError> {
    open_bucket(jetstream, ownership::BUCKET, replicas).await?;
    ownership::held_elsewhere(jetstream, node)
        .await
        .map_err(|reason| SharedStateError::Bucket {
            bucket: ownership::BUCKET,
            reason,
        })
}

async fn open_bucket(
    jetstream: &jetstream::Context,
    bucket: &'static str,
    replicas: usize,
) -> Result<kv::Store, SharedStateError> {
    crate::store::nats::open_bucket(jetstream, bucket, replicas)
        .await
        .map_err(|reason| SharedStateError::Bucket { bucket, reason })
}

impl ClusterState for SharedState {
    fn claim(
        &self,
        client_id: &str,
        clean_start: bool,
    ) -> ClusterFuture<Result<Claimed, ClaimFailed>> {
        let ownership = Arc::clone(&self.ownership);
        let client_id = client_id.to_string();
        Box::pin(async move {
            match tokio::time::timeout(CLAIM_TIMEOUT, ownership.claim(&client_id, clean_start))
                .await
            {
                Ok(result) => result,
                Err(_) => Err(ClaimFailed(format!(
                    "no answer within {} s",
                    CLAIM_TIMEOUT.as_secs()
                ))),
            }
        })
    }

    fn subscriptions_changed(
        &self,
        client_id: &str,
        subscriptions: &[(Filter, SubscriptionOptions)],
    ) {
        self.ownership
            .subscriptions_changed(client_id, subscriptions);
    }

    fn session_ended(&self, client_id: &str) {
        self.ownership.session_ended(client_id);
    }

    fn retained_changed(&self, topic: &str, message: Option<&Message>) {
        self.retained.changed(topic, message);
    }
}
