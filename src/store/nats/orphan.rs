//! A dead node's journal once survivors adopted its client ids: purged when
//! nothing in it is needed any more, so that it does not wait for the node
//! to start again.
//!
//! Needed is any entry a `Forget` does not void, other than the dead node's
//! own messages: every session's records were read by the survivor that
//! adopted its id (which wrote a `Forget` after them), and so were the
//! messages its deliveries refer to; a message no delivery refers to is
//! garbage. Its marks were read by those survivors too. A retained message, queued message, schema or delete still in
//! the journal keeps it whole (only the node itself may write them).

use async_nats::jetstream;

use super::keys::{self, Key};
use super::{journal, replay};

/// Purges node `dead`'s journal up to its last message when nothing in it
/// is needed (see above); true when it did. Messages appended after the
/// read (the node started again) stay.
pub async fn purge_dead_journal(
    jetstream: &jetstream::Context,
    dead: &str,
) -> Result<bool, String> {
    let entries = journal::read(jetstream, &journal::subject(dead)).await?;
    if entries.is_empty() {
        return Ok(false);
    }
    let mut sequences: Vec<u64> = entries.iter().map(|e| e.0).collect();
    sequences.dedup();
    let last_read = sequences.last().copied().unwrap_or(0);
    let entries = super::floor::above(jetstream, entries).await?;
    let (left, _) = replay::fold(entries, |_| true);
    let unneeded = |key: &str, put: bool| {
        put && matches!(keys::parse(key),
            Some(Key::Message(node, _) | Key::PeerMarks(node)) if node == dead)
    };
    if !left
        .iter()
        .all(|(key, value)| unneeded(key, value.is_some()))
    {
        return Ok(false);
    }
    super::prune::remove(jetstream, dead, last_read + 1, &sequences).await?;
    Ok(true)
}
