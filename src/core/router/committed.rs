//! What a client's ack waits for: the store's commit of what the operation
//! stored, in cluster mode the other nodes' confirm of a forwarded QoS ≥ 1
//! message, and the handover of a capture that held it (`capture.rs`).

use crate::core::commit::{Commit, CoreError};

use super::Router;

impl Router {
    /// Resolves once what `commit` stands for is committed (at once for
    /// [`Commit::NONE`] or without a store); an error when the store failed
    /// or is shut down, so the ack that depended on it must not be sent.
    /// A QoS ≥ 1 message forwarded to other nodes waits for their confirm
    /// too (cluster mode), and one captured for a session moving here waits
    /// until that capture was handed over (`capture.rs`): an error when it
    /// failed.
    pub async fn wait_committed(&self, commit: Commit) -> Result<(), CoreError> {
        let commit = self.routing.local_captures_ended(commit).await?;
        self.persistence.wait(commit).await?;
        if let Some(fabric) = self.routing.fabric().filter(|_| commit.fabric() != 0) {
            fabric.wait_confirmed(commit.fabric()).await;
            if fabric.timed_out(commit.fabric()) {
                return Err(CoreError::NotConfirmed);
            }
        }
        Ok(())
    }

    /// Whether what `commit` stands for is committed now (true for
    /// [`Commit::NONE`] or without a store); an error when the store failed.
    pub fn is_committed(&self, commit: Commit) -> Result<bool, CoreError> {
        let Some(commit) = self.routing.local_captures_ended_now(commit)? else {
            return Ok(false);
        };
        let fabric = self.routing.fabric().filter(|_| commit.fabric() != 0);
        let confirmed = fabric.is_none_or(|fabric| fabric.confirmed() >= commit.fabric());
        if confirmed && fabric.is_some_and(|fabric| fabric.timed_out(commit.fabric())) {
            return Err(CoreError::NotConfirmed);
        }
        Ok(confirmed && self.persistence.is_committed(commit)?)
    }

    /// The commit of everything stored so far, for an ack whose record was
    /// submitted earlier by an operation whose commit is not at hand (a resent
    /// QoS 2 PUBLISH whose id a previous connection recorded).
    pub fn latest_commit(&self) -> Commit {
        self.persistence.latest()
    }

    /// Resolves once the store applied everything submitted so far, with
    /// any durability (`Durability::None` acknowledges before that): the
    /// word that a session was let go waits for it, as the new holder then
    /// reads what was submitted for the session before (`StoreOp::ReleaseClient`).
    pub async fn wait_store_applied(&self) -> Result<(), CoreError> {
        if let Some(store) = self.persistence.store() {
            store.wait_applied(store.last_ticket()).await?;
        }
        Ok(())
    }
}
