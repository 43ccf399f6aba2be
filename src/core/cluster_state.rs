//! The state the nodes of a cluster share, seen from the core: who holds each
//! client id and the one view of retained messages. The core defines this
//! trait and calls it; the cluster (`src/cluster/`) implements it over NATS
//! (the core knows no NATS). Without a cluster the router holds no
//! implementation and none of this costs anything.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use crate::core::message::Message;
use crate::core::session::SubscriptionOptions;
use crate::core::topic::Filter;
use crate::store::record::SubscriptionRecord;

/// A future the cluster resolves later (object-safe, no lifetimes borrowed).
pub type ClusterFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a claim of a client id found.
#[derive(Debug, Default)]
pub struct Claimed {
    /// Subscriptions of the session another node held (with their
    /// selectors), to be carried over by a resuming connection (empty when
    /// this node held it, or none did).
    pub carried: Vec<SubscriptionRecord>,
    /// True when another node held a session under this client id.
    pub held_elsewhere: bool,
    /// That node's name.
    pub previous: Option<String>,
    /// Its run that held the session, when its claim said (its stored
    /// marks are used only when that run wrote them).
    pub previous_run: Option<u64>,
    /// The node and run that held the session last when it was claimed
    /// (adopted) without its stored state read since: that node's journal
    /// may hold its records, and its marks are the session's.
    pub unread_from: Option<(String, u64)>,
    /// That node's marks when it let the session go (`core::peer_marks`);
    /// None when it said none in time (dead, or cut off).
    pub marks: Option<Vec<crate::core::peer_marks::PeerMark>>,
    /// Holds off this node's handling of a takeover by another node until the
    /// connection is bound (dropped after `attach`).
    pub guard: Option<ClaimGuard>,
}

/// Whatever the cluster holds while a claimed connection binds.
pub struct ClaimGuard(pub Box<dyn std::any::Any + Send + Sync>);

impl fmt::Debug for ClaimGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClaimGuard")
    }
}

/// A claim that could not be decided (the shared state is unreachable).
#[derive(Debug, thiserror::Error)]
#[error("client id ownership could not be decided: {0}")]
pub struct ClaimFailed(pub String);

/// The cluster's side of sessions and retained messages.
pub trait ClusterState: Send + Sync + fmt::Debug {
    /// Takes `client_id` for this node before a connection binds to it; the
    /// node that held it ends its connection (session takeover). With
    /// `clean_start` the old session's subscriptions are discarded.
    fn claim(
        &self,
        client_id: &str,
        clean_start: bool,
    ) -> ClusterFuture<Result<Claimed, ClaimFailed>>;

    /// The node holding `client_id` now when it is another node, with the
    /// session's subscriptions (a resume here captures what is routed for
    /// them before it claims the id: `Router::attach_claimed`). None when
    /// none does, this node does, or it cannot be told.
    fn holder(&self, client_id: &str) -> ClusterFuture<Option<(String, Vec<SubscriptionRecord>)>> {
        let _ = client_id;
        Box::pin(std::future::ready(None))
    }

    /// The subscriptions of a persistent session this node holds changed (a
    /// takeover elsewhere resumes with them). Must not block.
    fn subscriptions_changed(
        &self,
        client_id: &str,
        subscriptions: &[(Filter, SubscriptionOptions)],
    );

    /// The stored state of `client_id`, held here, is read and this node's
    /// own now (a claim made without reading it says so until then). Must
    /// not block.
    fn stored_state_read(&self, client_id: &str) {
        let _ = client_id;
    }

    /// This node's session of `client_id` ended: the id is free. Must not block.
    fn session_ended(&self, client_id: &str);

    /// A local publisher set (`Some`) or cleared (`None`) the retained message
    /// of `topic`; every node applies it. Must not block (called under the
    /// router's locks).
    fn retained_changed(&self, topic: &str, message: Option<&Message>);
}
