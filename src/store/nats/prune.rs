//! Removing a node's journal messages that are no longer needed (compacted
//! into the bucket, or a dead node's journal adopted), one message delete
//! each rather than a purge.
//!
//! Why not a purge: nats-server before 2.9.18 replays a purge from its raft
//! log at a restart as "every message up to the stream's last sequence when
//! the purge was made", whatever its subject filter and sequence
//! (nats-io/nats-server#4196). A NATS server killed and restarted then lacks
//! the other nodes' journal messages below that point; once it leads the
//! stream, a takeover or a start reads a journal without acknowledged
//! writes (deliveries lost) or without acknowledged deletes (completed
//! deliveries sent again). Message deletes are replayed one by one, exactly
//! (`tests/nats_election.rs`).
//!
//! The journal's floor is raised to the point removed below first
//! (`floor.rs`): the deletes land in any order, and a reader must not take
//! what is left of them for the journal.
//!
//! A journal stream made by an older Tern denies deletes (a stream's
//! `deny_delete` cannot be lifted): there the purge stays, with one WARN.

use std::sync::atomic::{AtomicBool, Ordering};

use async_nats::jetstream::{self, response::Response, stream::Stream, ErrorCode};
use futures_util::{stream, StreamExt};
use serde::Deserialize;

use super::journal;

/// Deletes in flight at once.
const IN_FLIGHT: usize = 64;

/// The answer to a message delete.
#[derive(Deserialize)]
struct Deleted {
    #[serde(default)]
    success: bool,
}

/// Removes node `node`'s journal messages below sequence `below`: those of
/// `known` (its messages this node knows of) and any other on its subject
/// (a `Forget` another node wrote there, one written before a restart).
pub(super) async fn remove(
    jetstream: &jetstream::Context,
    node: &str,
    below: u64,
    known: &[u64],
) -> Result<(), String> {
    let stream = jetstream
        .get_stream(journal::STREAM)
        .await
        .map_err(|e| format!("opening {}: {e}", journal::STREAM))?;
    let subject = journal::subject(node);
    // Before any delete: a reader then leaves what is below to the bucket.
    super::floor::raise(jetstream, node, below).await?;
    if stream.cached_info().config.deny_delete {
        return purge(&stream, &subject, below).await;
    }
    let due: Vec<u64> = known.iter().copied().filter(|seq| *seq < below).collect();
    let deletes = due.into_iter().map(|seq| {
        let jetstream = jetstream.clone();
        async move { delete(&jetstream, seq).await }
    });
    let mut deletes = stream::iter(deletes).buffer_unordered(IN_FLIGHT);
    while let Some(deleted) = deletes.next().await {
        deleted?;
    }
    // The others, oldest first, until the first one at or above `below`.
    loop {
        let first = stream
            .raw_message_builder()
            .sequence(1)
            .next_by_subject(&subject)
            .send()
            .await;
        match first {
            Ok(message) if message.sequence < below => delete(jetstream, message.sequence).await?,
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => {
                return Ok(())
            }
            Err(e) => return Err(format!("reading {}: {e}", journal::STREAM)),
        }
    }
}

/// Deletes journal message `seq` (without erasing its bytes); one already
/// gone counts as deleted.
pub(super) async fn delete(jetstream: &jetstream::Context, seq: u64) -> Result<(), String> {
    delete_message(jetstream, journal::STREAM, seq).await
}

/// Deletes message `seq` of stream `stream` (without erasing its bytes); one
/// already gone counts as deleted. Replayed exactly by a restarted server,
/// unlike a purge (see above).
pub(super) async fn delete_message(
    jetstream: &jetstream::Context,
    stream: &str,
    seq: u64,
) -> Result<(), String> {
    let subject = format!("STREAM.MSG.DELETE.{stream}");
    let request = serde_json::json!({ "seq": seq, "no_erase": true });
    let answer: Response<Deleted> = jetstream
        .request(subject, &request)
        .await
        .map_err(|e| format!("deleting {stream} message {seq}: {e}"))?;
    match answer {
        Response::Ok(Deleted { success: true }) => Ok(()),
        Response::Err { error } if gone(&error) => Ok(()),
        Response::Ok(_) => Err(format!("deleting {stream} message {seq}: not done")),
        Response::Err { error } => Err(format!("deleting {stream} message {seq}: {error}")),
    }
}

/// Whether `error` says the message was gone already (a standalone server
/// says so in a general "delete failed" error).
fn gone(error: &jetstream::Error) -> bool {
    let code = error.error_code();
    [ErrorCode::SEQUENCE_NOT_FOUND, ErrorCode::NO_MESSAGE_FOUND].contains(&code)
        || (code == ErrorCode::STREAM_MESSAGE_DELETE_FAILED
            && error.to_string().contains("no message found"))
}

/// The journal stream denies deletes: the purge of older Terns.
async fn purge(stream: &Stream, subject: &str, below: u64) -> Result<(), String> {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            stream = journal::STREAM,
            "the journal stream denies message deletes (made by an older Tern): it is purged, \
             and nats-server before 2.9.18 loses other nodes' journal messages when it \
             replays a purge after a restart; delete the stream after a clean stop of every node \
             (which leaves it empty)"
        );
    }
    stream
        .purge()
        .filter(subject)
        .sequence(below)
        .await
        .map(drop)
        .map_err(|e| format!("purging {}: {e}", journal::STREAM))
}
