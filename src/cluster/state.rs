//! The core's `ClusterState` over JetStream: client id ownership
//! ([`super::ownership`]) and retained messages ([`super::retained`]), with the
//! tasks that keep them: set up once at start, before the node serves.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::liveness::{self, OnDead};
use super::ownership::{self, Ownership};
use super::retained::{self, RetainedSync};
use super::status::ClusterStatus;
use super::takeover::{self, StartClaims};
use super::Cluster;
use crate::core::cluster_state::{ClaimFailed, Claimed, ClusterFuture, ClusterState};
use crate::core::message::Message;
use crate::core::router::Router;
use crate::core::session::SubscriptionOptions;
use crate::core::topic::Filter;
use crate::store::record::SubscriptionRecord;

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

/// The longest a start waits for the read of the sessions its last run
/// adopted and never read before it confirms other nodes' syncs.
const UNREAD_READ_WAIT: Duration = Duration::from_secs(20);

#[derive(Debug)]
pub struct SharedState {
    ownership: Arc<Ownership>,
    retained: Arc<RetainedSync>,
    /// The read of the ids this node's last run adopted and never read
    /// (`takeover::read_unread`), while it runs.
    unread_read: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl SharedState {
    /// Opens (or makes) the buckets with `replicas` copies, hands the router
    /// this state and starts the tasks that write and watch the buckets.
    ///
    /// `claims` are the client ids this node claimed at start (before its
    /// store was loaded); those it loaded no session for are freed again,
    /// but for those its last run adopted and never read: they are read now
    /// (`takeover::read_unread`).
    pub async fn start(
        jetstream: &jetstream::Context,
        (node, run): (&str, u64),
        replicas: usize,
        router: &Arc<Router>,
        claims: StartClaims,
    ) -> Result<Arc<SharedState>, SharedStateError> {
        let owners = open_bucket(jetstream, ownership::BUCKET, replicas).await?;
        let retained = open_bucket(jetstream, retained::BUCKET, replicas).await?;
        let unread: Vec<(String, (String, u64))> = claims
            .held
            .iter()
            .filter_map(|(client, held)| Some((client.clone(), held.unread_from.clone()?)))
            .collect();
        let unused: Vec<String> = claims
            .held
            .iter()
            .filter(|(client, held)| held.unread_from.is_none() && router.session(client).is_none())
            .map(|(client, _)| client.clone())
            .collect();
        for (client, _) in &unread {
            router.mark_unread(client);
        }
        let state = Arc::new(SharedState {
            ownership: Arc::new(Ownership::new(
                owners,
                jetstream.client(),
                node,
                run,
                claims.held,
            )),
            retained: Arc::new(RetainedSync::new(retained, node)),
            unread_read: parking_lot::Mutex::new(None),
        });
        if !router.set_cluster_state(Arc::clone(&state) as Arc<dyn ClusterState>) {
            return Err(SharedStateError::AlreadySet);
        }
        let weak = Arc::downgrade(router);
        tokio::spawn(Arc::clone(&state.ownership).run_writer());
        tokio::spawn(Arc::clone(&state.ownership).run_watch(weak.clone()));
        tokio::spawn(Arc::clone(&state.ownership).run_release_requests(weak.clone()));
        tokio::spawn(Arc::clone(&state.retained).run_writer());
        tokio::spawn(Arc::clone(&state.retained).run_watch(weak));
        for client in unused {
            state.ownership.session_ended(&client);
        }
        if !unread.is_empty() {
            let (ownership, router) = (Arc::clone(&state.ownership), Arc::downgrade(router));
            let read = tokio::spawn(takeover::read_unread(ownership, router, unread));
            *state.unread_read.lock() = Some(read);
        }
        Ok(state)
    }

    /// Waits (at most [`UNREAD_READ_WAIT`]) until the sessions this node's
    /// last run adopted and never read are restored, so that the node
    /// confirms no sync before they get what is routed here: no store held
    /// what was routed for them meanwhile. Past the wait the read goes on;
    /// the node's start does not hang on a JetStream that cannot answer.
    pub async fn unread_restored(&self) {
        let Some(read) = self.unread_read.lock().take() else {
            return;
        };
        if tokio::time::timeout(UNREAD_READ_WAIT, read).await.is_err() {
            tracing::warn!(
                waited_ms = UNREAD_READ_WAIT.as_millis() as u64,
                "cluster: sessions adopted by this node's last run still unread; confirming other nodes' messages without waiting for them"
            );
        }
    }

    /// Beats for this node and notices dead nodes (`liveness.rs`); the
    /// sessions and wills of a dead node are taken over (`takeover.rs`).
    /// Returns once the liveness keys there are were read (bounded): the
    /// node's syncs wait for those nodes before it takes clients.
    pub async fn watch_nodes(
        self: &Arc<Self>,
        cluster: &Cluster,
        status: Arc<ClusterStatus>,
        router: &Arc<Router>,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) {
        let jetstream = cluster.jetstream().clone();
        let owners = {
            let jetstream = jetstream.clone();
            async move { takeover::owner_nodes(&jetstream).await }
        };
        let ownership = Arc::clone(&self.ownership);
        let router = Arc::downgrade(router);
        let (announcer, watched) = (cluster.clone(), Arc::clone(&status));
        // Each survivor says when it is done: acks wait for that
        // (`peers.rs`, the interest gap).
        let on_dead: OnDead = Arc::new(move |dead| {
            let taking_over = takeover::take_over_node(
                jetstream.clone(),
                Arc::clone(&ownership),
                router.clone(),
                (dead.clone(), Arc::clone(&watched)),
            );
            let (cluster, status) = (announcer.clone(), Arc::clone(&watched));
            Box::pin(async move {
                if taking_over.await {
                    status.announce_taken_over(&cluster, &dead).await;
                }
            })
        });
        let kv = match liveness::open(
            cluster.jetstream(),
            cluster.replicas(),
            cluster.timing().dead_after,
        )
        .await
        {
            Ok(kv) => kv,
            Err(e) => {
                tracing::warn!(node = %cluster.node(), bucket = liveness::BUCKET, error = %e,
                    "cluster: liveness bucket not opened; dead nodes will not be noticed");
                return;
            }
        };
        liveness::read_known(&kv, &status).await;
        tracker.spawn(super::fabric::stopped_in_time(
            "liveness",
            shutdown.clone(),
            liveness::run(
                cluster.clone(),
                kv,
                status,
                cluster.timing(),
                owners,
                on_dead,
                shutdown,
            ),
        ));
    }

    /// Whether this node holds `client_id` in the cluster.
    pub fn holds(&self, client_id: &str) -> bool {
        self.ownership.holds(client_id)
    }
}

/// Claims, before the store is loaded, the client ids this node held
/// before and the stored sessions no node holds (`takeover.rs`): the
/// sessions of every other id are other nodes' to load.
pub async fn claim_at_start(
    jetstream: &jetstream::Context,
    node: &str,
    run: u64,
    replicas: usize,
) -> Result<StartClaims, SharedStateError> {
    takeover::claim_at_start(jetstream, node, run, replicas)
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

    fn holder(&self, client_id: &str) -> ClusterFuture<Option<(String, Vec<SubscriptionRecord>)>> {
        let ownership = Arc::clone(&self.ownership);
        let client_id = client_id.to_string();
        Box::pin(async move {
            tokio::time::timeout(CLAIM_TIMEOUT, ownership.holder(&client_id))
                .await
                .ok()
                .flatten()
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

    fn stored_state_read(&self, client_id: &str) {
        self.ownership.stored_state_read(client_id);
    }

    fn session_ended(&self, client_id: &str) {
        self.ownership.session_ended(client_id);
    }

    fn retained_changed(&self, topic: &str, message: Option<&Message>) {
        self.retained.changed(topic, message);
    }
}
