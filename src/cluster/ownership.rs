//! Client id ownership: one MQTT client id is one session in the whole cluster.
//!
//! KV bucket `tern_clients`: key = the client id ([`crate::store::nats::kv_key`]), value =
//! [`OwnerValue`] (`owner_value.rs`: the node holding the session, a random
//! epoch for that claim, the node's run that claimed, whether it started
//! clean, and the session's subscriptions). Every
//! write is a compare-and-set on the key's revision (create, or update with
//! the last revision seen), so of two nodes claiming at once exactly one
//! wins and the other retries against the winner's value; a node that lost
//! the id can no longer write it. No node asks another to let go (no RPC that
//! could time out and leave two owners): each node watches the bucket and,
//! when a newer claim names another node, ends its own connection (session
//! taken over) and drops its copy of the session.
//!
//! Per client id, a claim (until its connection is bound), the watch's
//! reaction and this node's writes take one lock stripe in turn, so a claim
//! is never undone by an older change seen late.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

pub(crate) use super::owner_value::OwnerValue;
use async_nats::jetstream::kv;
use futures_util::StreamExt;
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::release;
use crate::core::cluster_state::{ClaimFailed, ClaimGuard, Claimed};
use crate::core::router::persist::subscription_record;
use crate::core::router::Router;
use crate::core::session::SubscriptionOptions;
use crate::core::topic::Filter;
use crate::store::nats::kv_key;
use crate::store::record::SubscriptionRecord;

/// The bucket of client id owners.
pub(crate) const BUCKET: &str = "tern_clients";
/// Compare-and-set attempts of one claim before it gives up (each lost
/// attempt means another node wrote in between).
const CLAIM_ATTEMPTS: usize = 8;
/// Lock stripes per node; client ids hash onto them.
const STRIPES: usize = 64;

/// A client id of a dead node taken over here (`Ownership::adopt`).
pub(crate) struct Adopted {
    /// The id's lock: held until the session is restored, a CONNECT of
    /// that client here waits for it and resumes the restored session.
    pub(crate) _stripe: tokio::sync::OwnedMutexGuard<()>,
    /// The node (and its run) whose journal may hold the session's records
    /// unread: the dead node, or the one it had adopted the id from
    /// without reading ([`OwnerValue::unread_from`]).
    pub(crate) unread_from: (String, u64),
}

/// This node's claim of one client id.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    pub(crate) epoch: u64,
    pub(crate) revision: u64,
    /// Written in the claim until the session's stored state is read
    /// ([`OwnerValue::unread_from`]).
    pub(crate) unread_from: Option<(String, u64)>,
}

/// What this node still has to write for a client id it holds.
#[derive(Debug)]
enum Pending {
    Subscriptions(Vec<SubscriptionRecord>),
    /// The session's stored state is read: the claim says so.
    Read,
    Release,
}

#[derive(Debug)]
pub(crate) struct Ownership {
    kv: kv::Store,
    /// Core NATS, for the word that a session was let go ([`released_subject`]).
    pub(super) client: async_nats::Client,
    pub(super) node: String,
    /// This node's run (`Cluster::run`), written in its claims.
    run: u64,
    pub(super) held: Mutex<HashMap<String, Held>>,
    stripes: Vec<Arc<tokio::sync::Mutex<()>>>,
    /// Latest unwritten change per client id (bounded by the sessions held).
    pending: Mutex<HashMap<String, Pending>>,
    /// Client ids let go whose release word is still to be said (their
    /// writes being committed): a request for one is answered "coming".
    pub(super) words_due: Arc<Mutex<HashMap<String, usize>>>,
    wake_writer: Notify,
    /// The revision the watch goes on from (0: changes from its opening
    /// on): after the earliest claim of the start, so another node's claim
    /// made between this node's start claims and its watch opening is
    /// seen; then after the last change seen, so a watch opened again
    /// misses none.
    watch_from: std::sync::atomic::AtomicU64,
}

/// The node that holds `client_id` in the whole cluster, as the bucket says
/// (None: no node does); read afresh (the admin API asks).
pub(crate) async fn owner_of(
    jetstream: &async_nats::jetstream::Context,
    client_id: &str,
) -> Result<Option<String>, String> {
    let kv = jetstream
        .get_key_value(BUCKET)
        .await
        .map_err(|e| e.to_string())?;
    let value = kv
        .get(kv_key::encode(client_id))
        .await
        .map_err(|e| e.to_string())?;
    Ok(value
        .as_deref()
        .and_then(OwnerValue::decode)
        .map(|owner| owner.node))
}

impl Ownership {
    /// Ownership for node `node`, holding the client ids it claimed at start.
    pub(crate) fn new(
        kv: kv::Store,
        client: async_nats::Client,
        node: &str,
        run: u64,
        held: HashMap<String, Held>,
    ) -> Ownership {
        let watch_from = held.values().map(|h| h.revision + 1).min().unwrap_or(0);
        Ownership {
            watch_from: std::sync::atomic::AtomicU64::new(watch_from),
            kv,
            client,
            node: node.to_string(),
            run,
            held: Mutex::new(held),
            stripes: (0..STRIPES)
                .map(|_| Arc::new(tokio::sync::Mutex::new(())))
                .collect(),
            pending: Mutex::new(HashMap::new()),
            words_due: Arc::default(),
            wake_writer: Notify::new(),
        }
    }

    /// The lock of `client_id`'s stripe: claims, the watch's reaction and
    /// this node's writes of the id wait while it is held.
    pub(crate) async fn lock_id(&self, client_id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        self.stripe(client_id).lock_owned().await
    }

    pub(super) fn stripe(&self, client_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(client_id);
        Arc::clone(&self.stripes[(hash % STRIPES as u64) as usize])
    }

    /// Takes `client_id` for this node (see `ClusterState::claim`).
    pub(crate) async fn claim(
        &self,
        client_id: &str,
        clean_start: bool,
    ) -> Result<Claimed, ClaimFailed> {
        let guard = self.stripe(client_id).lock_owned().await;
        let key = kv_key::encode(client_id);
        let failed = |what: &str, e: &dyn std::fmt::Display| ClaimFailed(format!("{what}: {e}"));
        let mut released: Option<async_nats::Subscriber> = None;
        for _ in 0..CLAIM_ATTEMPTS {
            let entry = self
                .kv
                .entry(key.as_str())
                .await
                .map_err(|e| failed("read", &e))?;
            let previous = entry
                .as_ref()
                .filter(|e| e.operation == kv::Operation::Put)
                .and_then(|e| OwnerValue::decode(&e.value));
            let subscriptions = match (&previous, clean_start) {
                (Some(previous), false) => previous.subscriptions.clone(),
                _ => Vec::new(),
            };
            let value = OwnerValue {
                node: self.node.clone(),
                epoch: rand::random(),
                clean_start,
                subscriptions,
                run: self.run,
                unread_from: self.unread_after_claim(client_id, previous.as_ref()),
            };
            // Subscribed before the claim is written: the other node's word
            // comes after it sees the claim, so it cannot be missed.
            if released.is_none() && previous.as_ref().is_some_and(|p| p.node != self.node) {
                released = self
                    .client
                    .subscribe(release::word_subject(client_id))
                    .await
                    .ok();
            }
            let written = match &entry {
                Some(entry) => self
                    .kv
                    .update(key.as_str(), value.encode(), entry.revision)
                    .await
                    .map_err(|e| e.to_string()),
                None => self
                    .kv
                    .create(key.as_str(), value.encode())
                    .await
                    .map_err(|e| e.to_string()),
            };
            let revision = match written {
                Ok(revision) => revision,
                Err(e) => {
                    // Most likely another node wrote first: read again and retry.
                    tracing::debug!(client_id, error = %e, "client id claim lost a race; retrying");
                    continue;
                }
            };
            self.held.lock().insert(
                client_id.to_string(),
                Held {
                    epoch: value.epoch,
                    revision,
                    unread_from: value.unread_from.clone(),
                },
            );
            let previous = previous.filter(|p| p.node != self.node);
            let previous_run = previous.as_ref().and_then(OwnerValue::run);
            let previous = previous.map(|p| p.node);
            let held_elsewhere = previous.is_some();
            let mut marks = None;
            if let (Some(holder), Some(mut released)) = (&previous, released) {
                // Fencing: its writes in flight land before this node reads
                // the session's records. The word says the marks the
                // session had there (`marks.rs`).
                let request = release::Request {
                    client_id: client_id.to_string(),
                    revision,
                    clean_start,
                };
                let wait = release::ask(&self.client, holder, &request).await;
                let word = release::word_for(&mut released, revision);
                match tokio::time::timeout(wait, word).await {
                    Ok(Some(word)) => marks = Some(super::marks::decode(&word.payload)),
                    _ => tracing::debug!(
                        client_id,
                        wait_ms = wait.as_millis() as u64,
                        "previous holder did not confirm the release"
                    ),
                }
            }
            return Ok(Claimed {
                unread_from: value.unread_from,
                carried: value.subscriptions,
                held_elsewhere,
                previous,
                previous_run,
                marks,
                guard: Some(ClaimGuard(Box::new(guard))),
            });
        }
        Err(ClaimFailed(format!(
            "{CLAIM_ATTEMPTS} compare-and-set attempts lost to other writers"
        )))
    }

    /// What a claim of `client_id` over `previous` says is unread: from
    /// another node, that node's session until this node's read is done
    /// (or the one it had adopted without reading); from this node, what
    /// it knows (a read done here may not be written yet).
    fn unread_after_claim(
        &self,
        client_id: &str,
        previous: Option<&OwnerValue>,
    ) -> Option<(String, u64)> {
        let previous = previous?;
        if previous.node != self.node {
            return Some(
                previous
                    .unread_from
                    .clone()
                    .unwrap_or_else(|| (previous.node.clone(), previous.run)),
            );
        }
        match self.held.lock().get(client_id) {
            Some(held) => held.unread_from.clone(),
            None => previous.unread_from.clone(),
        }
    }

    /// The node holding `client_id` when it is another node, with the
    /// session's subscriptions (see `ClusterState::holder`).
    pub(crate) async fn holder(
        &self,
        client_id: &str,
    ) -> Option<(String, Vec<SubscriptionRecord>)> {
        let entry = self.kv.entry(kv_key::encode(client_id)).await.ok()??;
        if entry.operation != kv::Operation::Put {
            return None;
        }
        OwnerValue::decode(&entry.value)
            .filter(|owner| owner.node != self.node)
            .map(|owner| (owner.node, owner.subscriptions))
    }

    /// Takes `client_id` over from node `dead` (taken for dead), keeping its
    /// subscriptions; None when the id is no longer `dead`'s (another node
    /// took it first, or its client came back): of all survivors trying,
    /// the compare-and-set lets exactly one win. A win comes back with the
    /// id's lock and where its records are ([`Adopted`]).
    /// `alive_run`: the run of `dead` that beats now, when one does (it
    /// restarted): the ids it claimed again are left alone. Ids of a run
    /// that never beat are adopted (it may have died during its start).
    pub(crate) async fn adopt(
        &self,
        client_id: &str,
        dead: &str,
        alive_run: Option<u64>,
    ) -> Result<Option<Adopted>, String> {
        let stripe = self.stripe(client_id).lock_owned().await;
        let key = kv_key::encode(client_id);
        let entry = self
            .kv
            .entry(key.as_str())
            .await
            .map_err(|e| e.to_string())?;
        let Some((entry, previous)) = entry
            .filter(|e| e.operation == kv::Operation::Put)
            .and_then(|e| OwnerValue::decode(&e.value).map(|v| (e, v)))
        else {
            return Ok(None);
        };
        if previous.node != dead {
            return Ok(None);
        }
        if alive_run.is_some() && previous.run() == alive_run {
            return Ok(None);
        }
        // Marked unread until this node's read is done: if it dies first,
        // the next holder reads that journal too.
        let unread_from = previous
            .unread_from
            .clone()
            .unwrap_or_else(|| (dead.to_string(), previous.run));
        let value = OwnerValue {
            node: self.node.clone(),
            epoch: rand::random(),
            clean_start: false,
            subscriptions: previous.subscriptions,
            run: self.run,
            unread_from: Some(unread_from.clone()),
        };
        let Ok(revision) = self
            .kv
            .update(key.as_str(), value.encode(), entry.revision)
            .await
        else {
            return Ok(None); // another survivor, or the client, came first
        };
        self.held.lock().insert(
            client_id.to_string(),
            Held {
                epoch: value.epoch,
                revision,
                unread_from: value.unread_from,
            },
        );
        Ok(Some(Adopted {
            _stripe: stripe,
            unread_from,
        }))
    }

    /// Records the subscriptions of a session this node holds, to be written.
    pub(crate) fn subscriptions_changed(
        &self,
        client_id: &str,
        subscriptions: &[(Filter, SubscriptionOptions)],
    ) {
        if !self.held.lock().contains_key(client_id) {
            return; // not claimed here (a STOMP session, or the claim failed)
        }
        let records = subscriptions
            .iter()
            .map(|(filter, options)| subscription_record(filter.as_str(), options))
            .collect();
        self.pending
            .lock()
            .insert(client_id.to_string(), Pending::Subscriptions(records));
        self.wake_writer.notify_one();
    }

    /// The stored state of `client_id`, held here, is read (its records are
    /// in this node's journal now): its claim no longer says unread.
    pub(crate) fn stored_state_read(&self, client_id: &str) {
        match self.held.lock().get_mut(client_id) {
            Some(held) if held.unread_from.is_some() => held.unread_from = None,
            _ => return,
        }
        // A pending change writes the claim without it as well.
        self.pending
            .lock()
            .entry(client_id.to_string())
            .or_insert(Pending::Read);
        self.wake_writer.notify_one();
    }

    /// The session of `client_id` ended here: the id is freed in the bucket.
    pub(crate) fn session_ended(&self, client_id: &str) {
        if !self.held.lock().contains_key(client_id) {
            return;
        }
        self.pending
            .lock()
            .insert(client_id.to_string(), Pending::Release);
        self.wake_writer.notify_one();
    }

    /// Writes what `subscriptions_changed` and `session_ended` recorded, each
    /// fenced by this node's revision; runs until the node stops.
    pub(crate) async fn run_writer(self: Arc<Self>) {
        loop {
            self.wake_writer.notified().await;
            let batch: Vec<(String, Pending)> = self.pending.lock().drain().collect();
            for (client_id, change) in batch {
                self.write(&client_id, change).await;
            }
        }
    }

    async fn write(&self, client_id: &str, change: Pending) {
        let _stripe = self.stripe(client_id).lock_owned().await;
        let Some(held) = self.held.lock().get(client_id).cloned() else {
            return; // taken over meanwhile: the id is no longer ours to write
        };
        let key = kv_key::encode(client_id);
        let result = match change {
            Pending::Subscriptions(subscriptions) => {
                let value = OwnerValue {
                    node: self.node.clone(),
                    epoch: held.epoch,
                    clean_start: false,
                    subscriptions,
                    run: self.run,
                    unread_from: held.unread_from.clone(),
                };
                self.kv
                    .update(key.as_str(), value.encode(), held.revision)
                    .await
                    .map(Some)
                    .map_err(|e| e.to_string())
            }
            Pending::Read => self.write_read(&key, &held).await,
            Pending::Release => self
                .kv
                .delete_expect_revision(key.as_str(), Some(held.revision))
                .await
                .map(|()| None)
                .map_err(|e| e.to_string()),
        };
        let mut map = self.held.lock();
        match result {
            Ok(Some(revision)) => {
                if let Some(h) = map.get_mut(client_id).filter(|h| h.epoch == held.epoch) {
                    h.revision = revision;
                }
            }
            Ok(None) => {
                map.remove(client_id);
            }
            Err(e) => {
                // The revision moved: another node claimed the id (its watch
                // event ends the session here), or NATS is unreachable.
                tracing::debug!(client_id, error = %e, "client id record not written");
                if map.get(client_id).is_some_and(|h| h.epoch == held.epoch) {
                    map.remove(client_id);
                }
            }
        }
    }

    /// The claim as it stands, without its unread holder (its
    /// subscriptions are kept as written); fenced by this node's revision.
    async fn write_read(&self, key: &str, held: &Held) -> Result<Option<u64>, String> {
        let entry = self.kv.entry(key).await.map_err(|e| e.to_string())?;
        let Some(mut value) = entry
            .filter(|e| e.revision == held.revision && e.operation == kv::Operation::Put)
            .and_then(|e| OwnerValue::decode(&e.value))
        else {
            return Err("claim changed".into());
        };
        value.unread_from = None;
        self.kv
            .update(key, value.encode(), held.revision)
            .await
            .map(Some)
            .map_err(|e| e.to_string())
    }

    /// Watches the bucket and ends sessions here that another node claimed
    /// later than this node did; runs until the router is gone.
    pub(crate) async fn run_watch(self: Arc<Self>, router: Weak<Router>) {
        use std::sync::atomic::Ordering;
        loop {
            if self.watch_from.load(Ordering::Relaxed) == 0 {
                // Nothing seen yet: from now on, and the same after a reopening.
                if let Ok(status) = self.kv.status().await {
                    let next = status.info.state.last_sequence + 1;
                    self.watch_from.fetch_max(next, Ordering::Relaxed);
                }
            }
            let watch = match self.watch_from.load(Ordering::Relaxed) {
                0 => self.kv.watch_all().await,
                from => self.kv.watch_all_from_revision(from).await,
            };
            match watch {
                Ok(mut watch) => {
                    while let Some(entry) = watch.next().await {
                        let entry = match entry {
                            Ok(entry) => entry,
                            // Its consumer lost (a NATS server gone): it
                            // may deliver nothing more. Opened again after
                            // the last change seen.
                            Err(e) => {
                                tracing::debug!(bucket = BUCKET, error = %e, "client id watch failed; opened again");
                                break;
                            }
                        };
                        let Some(router) = router.upgrade() else {
                            return;
                        };
                        self.watch_from
                            .fetch_max(entry.revision + 1, Ordering::Relaxed);
                        // A task each: a claim here holding an id's lock
                        // (waiting for a word, reading records) delays no
                        // other id's change; an older change handled late
                        // is one a newer claim of ours stands against.
                        let ownership = Arc::clone(&self);
                        tokio::spawn(async move { ownership.on_change(&router, entry).await });
                    }
                    tracing::warn!(bucket = BUCKET, "client id watch ended; watching again");
                }
                Err(e) => {
                    tracing::warn!(bucket = BUCKET, error = %e, "client id watch failed; retrying");
                }
            }
            if router.strong_count() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn on_change(&self, router: &Arc<Router>, entry: kv::Entry) {
        if entry.operation != kv::Operation::Put {
            return;
        }
        let Some(value) = OwnerValue::decode(&entry.value) else {
            return;
        };
        if value.node == self.node {
            return;
        }
        let Some(client_id) = kv_key::decode(&entry.key) else {
            return;
        };
        let only_held = false;
        self.let_go(
            router,
            client_id,
            (entry.revision, value.clean_start),
            only_held,
        )
        .await;
    }

    /// Whether this node holds `client_id` (for tests and the admin side).
    pub(crate) fn holds(&self, client_id: &str) -> bool {
        self.held.lock().contains_key(client_id)
    }
}
