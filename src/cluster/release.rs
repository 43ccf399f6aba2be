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
//!   for the session). A node that does not answer is waited for 1 s.
//! - The old node, once what it wrote for the session is committed, says
//!   so with its marks (`marks.rs`) on `tern.rel.<client>` ([`word_subject`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::store::nats::{kv_key, kv_value};

/// Longest wait for the release word from a node that answered it is
/// letting the session go (its writes being committed).
pub(crate) const LIVE_WAIT: Duration = Duration::from_secs(10);
/// Longest wait for the release word when the old node did not answer the
/// request (cut off, or a node that predates it).
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
    use futures_util::StreamExt;
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
        // No answer in time: as long waited as a node that does not answer
        // (below) is waited for.
        Err(_) => Duration::ZERO,
        // No node listens there (dead, or one that predates the request,
        // which still says its word from its watch), an answer not
        // understood, or the request not sent: the word as before.
        _ => SILENT_WAIT,
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
