//! The senders the inbound task reads from (`inbound.rs`): per run of a
//! node, what was routed and which of its syncs this node vouches for.
//!
//! A confirm of sync `seq` naming `first` counts, at the sender, for that
//! sync and every one after `first` (`window.rs`). So when messages routed
//! here were lost before any store took them (a session moving here whose
//! attach failed dropped what was captured for it: `core/router/capture.rs`),
//! no sync covering them may be confirmed, neither by name nor by a later
//! confirm: the origin's `first` starts again after them, with a sync whose
//! range begins past the last message routed when the loss was seen.

/// One sender (a run of a node) and the last sequence number routed from it.
pub(super) struct OriginState {
    pub(super) node: std::sync::Arc<str>,
    pub(super) epoch: u64,
    pub(super) last_routed: u64,
    /// The first sync of this origin seen here: this node vouches only for
    /// the syncs after it (it may have missed messages the first covered,
    /// sent before it subscribed: a node just started).
    first_sync: Option<u64>,
    /// The last sync of this origin seen here.
    last_sync: u64,
    /// Messages up to this one may have been lost here: no sync whose range
    /// reaches back to them is confirmed.
    lost_upto: u64,
    /// This node's name (a message from it is dropped).
    pub(super) own: bool,
}

impl OriginState {
    /// Sync `seq` came, every earlier message of the origin routed: the
    /// `first` to confirm it with, or None when this node cannot vouch for it.
    pub(super) fn vouch(&mut self, seq: u64) -> Option<u64> {
        let previous = std::mem::replace(&mut self.last_sync, seq);
        if self.first_sync.is_none() && previous < self.lost_upto {
            return None; // its range may hold what was lost
        }
        Some(*self.first_sync.get_or_insert(seq))
    }

    /// What was routed so far may have been lost here.
    fn lost(&mut self) {
        self.lost_upto = self.last_routed;
        self.first_sync = None;
    }
}

/// Messages routed here were lost before any store took them: no origin's
/// sync covering them is confirmed (see the module's doc).
pub(super) fn lost_here(origins: &mut [OriginState]) {
    origins.iter_mut().for_each(OriginState::lost);
}

/// The index of `(node, epoch)` in `origins`, added when new (`own` is
/// this node's name: compared once per origin, not per message).
pub(super) fn origin_index(
    origins: &mut Vec<OriginState>,
    own: &str,
    node: &str,
    epoch: u64,
) -> usize {
    match origins
        .iter()
        .position(|o| o.epoch == epoch && *o.node == *node)
    {
        Some(index) => index,
        None => {
            origins.push(OriginState {
                node: node.into(),
                epoch,
                last_routed: 0,
                first_sync: None,
                last_sync: 0,
                lost_upto: 0,
                own: node == own,
            });
            origins.len() - 1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn after_a_loss_no_sync_reaching_back_to_it_is_vouched_for() {
        let mut origins = Vec::new();
        let a = origin_index(&mut origins, "me", "a", 7);
        assert_eq!(origins[a].vouch(10), Some(10), "the first sync seen");
        origins[a].last_routed = 25;
        assert_eq!(origins[a].vouch(20), Some(10));
        lost_here(&mut origins);
        // Sync 30 covers 21..=30, the lost 21..=25 among them.
        assert_eq!(origins[a].vouch(30), None);
        origins[a].last_routed = 40;
        assert_eq!(
            origins[a].vouch(40),
            Some(40),
            "31..=40 came after the loss"
        );
        assert_eq!(origins[a].vouch(50), Some(40));
    }
}
