//! Taking over what a node held, with a shared store (`[storage] backend =
//! "nats"`):
//!
//! - at start, the client ids this node owned before its restart are claimed
//!   again (compare-and-set on their revision) and so are the stored
//!   sessions no node owns (create), before any is loaded: a session that
//!   moved meanwhile, or that another starting node claimed first, is not
//!   loaded here ([`claim_at_start`]); an id its last run adopted and
//!   never read (the claim says from where) is read after the start as an
//!   adoption reads it ([`read_unread`]);
//! - when a node dies (`liveness.rs`), each of its client ids is adopted by
//!   exactly one survivor (compare-and-set from the dead node's revision),
//!   which restores the session from the store with its will: the will goes
//!   out once, after its delay, unless the client resumes somewhere first
//!   ([`take_over_node`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};

use async_nats::jetstream::{self, kv};
use rand::seq::SliceRandom;

use super::ownership::{Held, OwnerValue, Ownership, BUCKET};
use crate::core::router::{MoveCapture, Router};
use crate::store::nats::kv_key;
use crate::store::record::SubscriptionRecord;

/// What a start claimed: the client ids this node holds, and those it must
/// leave alone (held by other nodes).
#[derive(Debug, Default)]
pub struct StartClaims {
    pub foreign: HashSet<String>,
    pub(super) held: HashMap<String, Held>,
}

impl StartClaims {
    /// The held ids whose stored state this node's last run adopted and
    /// never read: not restored by the store's start ([`read_unread`]).
    pub fn unread(&self) -> HashSet<String> {
        self.held
            .iter()
            .filter(|(_, held)| held.unread_from.is_some())
            .map(|(client, _)| client.clone())
            .collect()
    }
}

/// Claims, for node `node`, the client ids it owned and the stored sessions
/// no node owns (in the bucket or in its own journal); every other owned id
/// is foreign.
pub async fn claim_at_start(
    jetstream: &jetstream::Context,
    node: &str,
    run: u64,
    replicas: usize,
) -> Result<StartClaims, String> {
    let owners = crate::store::nats::open_bucket(jetstream, BUCKET, replicas).await?;
    crate::store::nats::open_bucket(jetstream, crate::store::nats::BUCKET, replicas).await?;
    let mut claims = StartClaims::default();
    let mut owned = HashSet::new();
    let started = std::time::Instant::now();
    let entries = crate::store::nats::load::read_entries(jetstream, BUCKET).await?;
    tracing::debug!(
        client_ids = entries.len(),
        read_ms = started.elapsed().as_millis() as u64,
        "start: client ids read"
    );
    for entry in entries {
        let Some(client) = kv_key::decode(&entry.key) else {
            continue;
        };
        owned.insert(client.clone());
        match OwnerValue::decode(&entry.value) {
            Some(value) if value.node == node => {
                let carried = (value.subscriptions, value.unread_from);
                match claim(&owners, (node, run), &client, Some(entry.revision), carried).await {
                    Some(held) => {
                        claims.held.insert(client, held);
                    }
                    None => {
                        claims.foreign.insert(client);
                    }
                }
            }
            _ => {
                claims.foreign.insert(client);
            }
        }
    }
    let mut stored = crate::store::nats::load::stored_clients(jetstream).await?;
    stored.extend(crate::store::nats::journal_clients(jetstream, node, replicas).await?);
    tracing::debug!(
        held = claims.held.len(),
        stored = stored.len(),
        read_ms = started.elapsed().as_millis() as u64,
        "start: claims made, stored client ids read"
    );
    for client in stored.into_iter().filter(|c| !owned.contains(c)) {
        match claim(&owners, (node, run), &client, None, (Vec::new(), None)).await {
            Some(held) => {
                claims.held.insert(client, held);
            }
            None => {
                claims.foreign.insert(client);
            }
        }
    }
    Ok(claims)
}

/// One compare-and-set of `client` for `node`'s run `run`: an update from
/// `revision`, or a create without one, carrying the subscriptions and the
/// unread holder. None when another writer came first.
async fn claim(
    owners: &kv::Store,
    (node, run): (&str, u64),
    client: &str,
    revision: Option<u64>,
    (subscriptions, unread_from): (
        Vec<crate::store::record::SubscriptionRecord>,
        Option<(String, u64)>,
    ),
) -> Option<Held> {
    let value = OwnerValue {
        node: node.to_string(),
        epoch: rand::random(),
        clean_start: false,
        subscriptions,
        run,
        unread_from,
    };
    let key = kv_key::encode(client);
    let written = match revision {
        Some(revision) => owners
            .update(key.as_str(), value.encode(), revision)
            .await
            .ok(),
        None => owners.create(key.as_str(), value.encode()).await.ok(),
    };
    written.map(|revision| Held {
        epoch: value.epoch,
        revision,
        unread_from: value.unread_from,
    })
}

/// The nodes holding client ids now (the liveness check of nodes that died
/// while no node watched).
pub async fn owner_nodes(jetstream: &jetstream::Context) -> Vec<String> {
    let entries = match crate::store::nats::load::read_entries(jetstream, BUCKET).await {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(bucket = BUCKET, error = %e, "cluster: owners of client ids not read");
            return Vec::new();
        }
    };
    let nodes: HashSet<String> = entries
        .iter()
        .filter_map(|e| OwnerValue::decode(&e.value).map(|v| v.node))
        .collect();
    nodes.into_iter().collect()
}

/// Node `dead` is dead: this node adopts each of its client ids that no
/// other survivor adopts first (those a restarted run of it, beating again
/// as `status` tells, claimed again are left alone), restores the session
/// with its will, and frees the id again when there was no session to keep
/// (a clean session's will goes out at once). True when every id was gone
/// through and every session adopted here restored (the node is settled
/// for this survivor).
pub async fn take_over_node(
    jetstream: jetstream::Context,
    ownership: Arc<Ownership>,
    router: Weak<Router>,
    (dead, status): (String, Arc<super::status::ClusterStatus>),
) -> bool {
    let entries = match crate::store::nats::load::read_entries(&jetstream, BUCKET).await {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(dead_node = %dead, error = %e, "cluster: client ids of a dead node not read");
            return false;
        }
    };
    let mut clients: Vec<(String, Vec<SubscriptionRecord>)> = entries
        .iter()
        .filter_map(|e| {
            let value = OwnerValue::decode(&e.value).filter(|v| v.node == dead)?;
            Some((kv_key::decode(&e.key)?, value.subscriptions))
        })
        .collect();
    // Each survivor in its own order: the work spreads over them.
    clients.shuffle(&mut rand::rng());
    let (mut tally, mut failed) = (Tally::default(), 0usize);
    for (client, subscriptions) in &clients {
        let Some(router) = router.upgrade() else {
            return false;
        };
        // Before the claim: what is routed until the restore is kept for
        // the session (see `Router::capture_adoption`).
        let mut capture = router.capture_adoption(client, subscriptions).await;
        // Held while the session is restored (see `Ownership::adopt`).
        let alive_run = status.liveness.lock().alive_run(&dead);
        let adopted = match ownership.adopt(client, &dead, alive_run).await {
            Ok(Some(adopted)) => adopted,
            // Another survivor's (its capture has it), or its client's.
            Ok(None) => {
                if let Some(capture) = capture {
                    capture.no_session();
                }
                continue;
            }
            Err(e) => {
                tracing::debug!(client_id = %client, error = %e, "client id of a dead node not adopted");
                if let Some(capture) = capture {
                    capture.lost();
                }
                failed += 1;
                continue;
            }
        };
        // The first read with the id held (see `Ownership::adopt`); tries
        // after a failed one let the client's CONNECT in meanwhile. The
        // dead node's journal, and that of the node it had adopted the id
        // from when it never read it; the marks of the one that had it.
        let from = adopted.unread_from.clone();
        let marks = marks_of(&from);
        let journals = [marks.0, dead.as_str()];
        // Kept when its claim lists subscriptions.
        let holders = (&journals[..], !subscriptions.is_empty());
        let first = router
            .adopt_session(client, holders, marks, &mut capture)
            .await;
        drop(adopted);
        let adopted = adopt_patiently(
            &router,
            &ownership,
            client,
            holders,
            marks,
            &mut capture,
            first,
        )
        .await;
        // Not restored here: what it held reached no store.
        if let Some(capture) = capture {
            capture.lost();
        }
        tally.count(adopted, &ownership, client);
    }
    tracing::info!(
        dead_node = %dead,
        client_ids = clients.len(),
        sessions = tally.sessions,
        freed = tally.freed,
        unread = tally.unread,
        "cluster: client ids of a dead node taken over"
    );
    // Its journal goes when no record in it is needed any more (the last
    // survivor to finish finds so; an unread session's records are there).
    let complete = failed == 0 && tally.unread == 0;
    if complete {
        match crate::store::nats::purge_dead_journal(&jetstream, &dead).await {
            Ok(purged) => tracing::debug!(dead_node = %dead, purged, "journal of a dead node"),
            Err(e) => {
                tracing::debug!(dead_node = %dead, error = %e, "journal of a dead node not purged")
            }
        }
    }
    complete
}

/// The node and run whose stored marks say what an unread session had (run
/// 0: not said).
fn marks_of((node, run): &(String, u64)) -> (&str, Option<u64>) {
    (node.as_str(), (*run != 0).then_some(*run))
}

/// What became of the ids a node adopted.
#[derive(Default)]
struct Tally {
    sessions: usize,
    freed: usize,
    unread: usize,
}

impl Tally {
    /// Counts one adoption's outcome; an id with no session to keep is
    /// freed (a clean session's will went out on restore).
    fn count(&mut self, adopted: Result<bool, String>, ownership: &Ownership, client: &str) {
        match adopted {
            Ok(true) => self.sessions += 1,
            Ok(false) => {
                tracing::debug!(
                    client_id = client,
                    "adopted client id had no session to keep: freed"
                );
                ownership.session_ended(client);
                self.freed += 1;
            }
            // Kept, unread: read at the client's next attach (logged there).
            Err(_) => self.unread += 1,
        }
    }
}

/// Reads of an adopted session's stored state tried before it is left for
/// its client's next attach (JetStream electing a leader: about 10 s).
const ADOPT_TRIES: usize = 8;
/// Between two of them.
const ADOPT_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// [`Router::adopt_session`], tried again while the stored state cannot be
/// read and this node still holds the id: a session left unread is on no
/// node, and what is published for it meanwhile reaches no store.
async fn adopt_patiently<'a>(
    router: &'a Arc<Router>,
    ownership: &Ownership,
    client: &str,
    holders: (&[&str], bool),
    marks: (&str, Option<u64>),
    capture: &mut Option<MoveCapture<'a>>,
    first: Result<bool, String>,
) -> Result<bool, String> {
    let (mut tries, mut adopted) = (1, first);
    loop {
        if adopted.is_ok() || tries == ADOPT_TRIES || !ownership.holds(client) {
            return adopted;
        }
        tries += 1;
        tokio::time::sleep(ADOPT_RETRY).await;
        // Under the id's lock, as the first try: a claim by another node
        // seen meanwhile is handled before or after the restore, never
        // during it (a session restored here after its watch event would
        // be served by two nodes).
        let _id = ownership.lock_id(client).await;
        if !ownership.holds(client) {
            return adopted;
        }
        adopted = router.adopt_session(client, holders, marks, capture).await;
    }
}

/// After a start: the ids this node holds whose stored state its last run
/// adopted and never read (`StartClaims::unread`, not restored by the
/// store's start) are read as an adoption reads them: the journal of the
/// node they were adopted from (and this node's), under the id's lock, while
/// this node still holds the id. Their client's attach reads them first
/// if it comes before (`Router::mark_unread`).
pub async fn read_unread(
    ownership: Arc<Ownership>,
    router: Weak<Router>,
    unread: Vec<(String, (String, u64))>,
) {
    let mut tally = Tally::default();
    for (client, from) in &unread {
        let marks = marks_of(from);
        let journals = [marks.0];
        // Expected kept: what its claim said is not known here, and a read
        // that missed a journal would free a stored session (rare: ids a
        // run adopted and never read).
        let holders = (&journals[..], true);
        let Some(router) = router.upgrade() else {
            return;
        };
        let first = {
            let _id = ownership.lock_id(client).await;
            if !ownership.holds(client) {
                continue; // claimed elsewhere meanwhile: read there
            }
            router
                .adopt_session(client, holders, marks, &mut None)
                .await
        };
        let adopted = adopt_patiently(
            &router, &ownership, client, holders, marks, &mut None, first,
        )
        .await;
        tally.count(adopted, &ownership, client);
    }
    tracing::info!(
        client_ids = unread.len(),
        sessions = tally.sessions,
        freed = tally.freed,
        unread = tally.unread,
        "cluster: client ids adopted and left unread by this node's last run read"
    );
}
