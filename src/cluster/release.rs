//! The word between the node that claimed a client id and the node that
//! held it (`ownership.rs`), over core NATS, which works while JetStream
//! elects a leader.
//!
//! - The new holder, right after its claim, asks the old one to let the
//!   session go ([`ask`], subject `tern.relreq.<node>`). The claim in
//!   `tern_clients` is what decides (the old node's watch sees it too);
//!   the request only tells the old node sooner, and tells the new one
//!   whether to wait for the release word: a live node whose writes of the
//!   session are still being committed (JetStream slow) answers at once,
//!   and the new holder waits for them up to [`LIVE_WAIT`] instead of
//!   reading the records without them (they landed after its read: lost
//!   for the session). A node that listens but does not answer within
//!   1 s (slowed, or its answer lost while it reconnected) is waited for
//!   as a live one; a node that does not listen (dead, or one that
//!   predates the request) 1 s.
//! - The old node, once what it wrote for the session is committed, says
//!   so with its marks (`marks.rs`) on `tern.rel.<client>` ([`word_subject`]).
//!
//! Both sides are here: [`ask`] and [`word_for`] for the claiming node,
//! `Ownership::run_release_requests` and `Ownership::let_go` (also what the
//! watch of `tern_clients` calls) for the old holder.

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::ownership::Ownership;
use crate::core::router::Router;
use crate::store::nats::{kv_key, kv_value};

/// Longest wait for the release word from a node that answered it is
/// letting the session go (its writes being committed).
pub(crate) const LIVE_WAIT: Duration = Duration::from_secs(10);
/// Longest wait for the release word when nobody listens for the request
/// (the old node is gone, or predates it); also how long an answer to the
/// request is waited for.
pub(crate) const SILENT_WAIT: Duration = Duration::from_secs(1);
/// First byte of a request: its layout.
const REQUEST_VERSION: u8 = 1;

/// Where the node that held `client_id` says it let the session go and
/// will write none of its records any more, with its marks.
pub(crate) fn word_subject(client_id: &str) -> String {
    format!("tern.rel.{}", kv_key::encode(client_id))
}

/// Where node `node` takes requests to let sessions go.
pub(crate) fn request_subject(node: &str) -> String {
    format!("tern.relreq.{}", kv_key::encode(node))
}

/// A request to let a session go: the client id, the revision of the
/// claim that took it, and whether that connection started clean.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Request {
    pub client_id: String,
    pub revision: u64,
    pub clean_start: bool,
}

impl Request {
    pub(crate) fn encode(&self) -> bytes::Bytes {
        kv_value::encode(REQUEST_VERSION, self)
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Request> {
        kv_value::decode(REQUEST_VERSION, bytes)
    }
}

/// The old node's answer: a release word will follow (it let the session
/// go, its writes are being committed), or none will (it held nothing).
pub(crate) const WORD_COMING: &[u8] = b"coming";
pub(crate) const NO_WORD: &[u8] = b"none";

/// The header of a release word naming the claim (its revision) it
/// answers: two claims of one id close together each take their own.
const CLAIM_HEADER: &str = "Tern-Claim-Revision";

/// The headers of the word answering the claim at `revision`.
pub(crate) fn word_headers(revision: u64) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(CLAIM_HEADER, revision.to_string().as_str());
    headers
}

/// The next word on `words` that answers the claim at `revision` (a word
/// naming no claim, from a node that predates the header, answers any).
pub(crate) async fn word_for(
    words: &mut async_nats::Subscriber,
    revision: u64,
) -> Option<async_nats::Message> {
    loop {
        let word = words.next().await?;
        let named = word
            .headers
            .as_ref()
            .and_then(|h| h.get(CLAIM_HEADER))
            .map(|v| v.as_str().parse::<u64>().ok());
        match named {
            None => return Some(word),
            Some(Some(named)) if named == revision => return Some(word),
            // Another claim's word, or a header not understood.
            Some(_) => continue,
        }
    }
}

/// How long the new holder waits for the release word, as the old node
/// `holder` answered the request.
pub(crate) async fn ask(client: &async_nats::Client, holder: &str, request: &Request) -> Duration {
    let asked = client.request(request_subject(holder), request.encode());
    match tokio::time::timeout(SILENT_WAIT, asked).await {
        Ok(Ok(answer)) if answer.payload.as_ref() == WORD_COMING => LIVE_WAIT,
        Ok(Ok(answer)) if answer.payload.as_ref() == NO_WORD => Duration::ZERO,
        // No answer in time, though the node listens (a dead one has no
        // responders): alive, slowed, or its answer lost while it
        // reconnected. It still serves the session until its watch sees
        // the claim, and what it writes for it meanwhile would land after
        // this node's read (the clustered crash test: 310 QoS 2 repeats
        // when such writes came back at a later read). Its word comes once
        // it let go: waited for as a live node's, 10 s in all.
        Err(_) => LIVE_WAIT.saturating_sub(SILENT_WAIT),
        // No node listens there (dead, or one that predates the request,
        // which still says its word from its watch), an answer not
        // understood, or the request not sent: the word as before.
        _ => SILENT_WAIT,
    }
}

/// The old holder's side: requests taken, sessions let go, words said.
impl Ownership {
    /// Takes requests of other nodes to let sessions go they claimed
    /// (`release.rs`), answering whether a release word follows; runs
    /// until the router is gone.
    pub(crate) async fn run_release_requests(self: Arc<Self>, router: Weak<Router>) {
        let subject = request_subject(&self.node);
        let mut requests = match self.client.subscribe(subject).await {
            Ok(requests) => requests,
            Err(e) => {
                tracing::warn!(error = %e, "cluster: release requests not taken; nodes claiming this node's sessions wait for its watch");
                return;
            }
        };
        while let Some(message) = requests.next().await {
            let (Some(reply), Some(request)) = (message.reply, Request::decode(&message.payload))
            else {
                continue;
            };
            let Some(router) = router.upgrade() else {
                return;
            };
            let Request {
                client_id,
                revision,
                clean_start,
            } = request;
            // Answered before the id's lock is taken (a claim or a restore
            // may hold it for long): a word follows when this node holds
            // the id from before that claim, or still owes one for it.
            let held_before = self
                .held
                .lock()
                .get(&client_id)
                .is_some_and(|h| h.revision < revision);
            let coming = held_before || self.words_due.lock().contains_key(&client_id);
            let answer = if coming { WORD_COMING } else { NO_WORD };
            let _ = self.client.publish(reply, answer.into()).await;
            if held_before {
                // Only what is held at an older revision: a request can come
                // late, and nothing held here is left to the watch.
                let ownership = Arc::clone(&self);
                tokio::spawn(async move {
                    let only_held = true;
                    ownership
                        .let_go(&router, client_id, (revision, clean_start), only_held)
                        .await;
                });
            }
        }
    }

    /// Another node claimed `client_id` at `revision`: the session here
    /// ends (see `Router::session_moved`) unless this node claimed it
    /// later, and once what it wrote for the session is committed the
    /// release word goes to the new holder. `only_held`: nothing is done
    /// unless this node holds the id (a request, which may come late).
    pub(super) async fn let_go(
        &self,
        router: &Arc<Router>,
        client_id: String,
        (revision, clean_start): (u64, bool),
        only_held: bool,
    ) {
        let _stripe = self.stripe(&client_id).lock_owned().await;
        let was_held = {
            let mut held = self.held.lock();
            // A claim of ours newer than this change stands.
            if held.get(&client_id).is_some_and(|h| h.revision >= revision) {
                return;
            }
            held.remove(&client_id)
        };
        if was_held.is_none() && only_held {
            return;
        }
        let marks = router.session_moved(&client_id, clean_start);
        if was_held.is_none() {
            return;
        }
        // What the session had here, for the node it went to.
        let marks = super::marks::encode(&marks);
        // Once what it wrote for the session is committed (later writes
        // are refused by the store), the new holder may read it. Not
        // committed in time (JetStream electing a leader): no word, so
        // the new holder goes by the marks it reads with the records;
        // these marks would cover deliveries it cannot read yet, and
        // it would drop those messages from its capture.
        let (router, client) = (Arc::clone(router), self.client.clone());
        *self.words_due.lock().entry(client_id.clone()).or_insert(0) += 1;
        let committed = async move {
            router.wait_committed(router.latest_commit()).await?;
            router.wait_store_applied().await
        };
        let said = async move {
            match tokio::time::timeout(LIVE_WAIT, committed).await {
                Ok(Ok(())) => {
                    let subject = word_subject(&client_id);
                    let headers = word_headers(revision);
                    let _ = client.publish_with_headers(subject, headers, marks).await;
                }
                _ => tracing::debug!(
                    client_id,
                    "session let go before its writes were committed: no release word"
                ),
            }
            client_id
        };
        let words_due = Arc::clone(&self.words_due);
        tokio::spawn(async move {
            let client_id = said.await;
            let mut due = words_due.lock();
            if let Some(count) = due.get_mut(&client_id) {
                *count -= 1;
                if *count == 0 {
                    due.remove(&client_id);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_garbage_is_refused() {
        let request = Request {
            client_id: "sensor/7 ü".into(),
            revision: 42,
            clean_start: true,
        };
        assert_eq!(Request::decode(&request.encode()), Some(request));
        assert_eq!(Request::decode(b""), None);
        assert_eq!(Request::decode(&[9, 1, 2]), None);
    }

    #[test]
    fn subjects_are_single_tokens_per_client_and_node() {
        assert_eq!(word_subject("a.b").matches('.').count(), 2);
        assert_eq!(request_subject("tern.1").matches('.').count(), 2);
    }
}
