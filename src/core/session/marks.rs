//! Other nodes' messages that a session taken over from another node had
//! there already (`core::peer_marks`): not routed to it again here.

use std::sync::atomic::Ordering;

use super::{Session, HAS_MARKS};
use crate::core::peer_marks::{PeerPosition, SessionMarks};

impl Session {
    /// The session comes from another node that had routed it `marks`: set
    /// before its subscriptions are, so no message they cover gets through.
    pub fn set_peer_marks(&self, marks: SessionMarks) {
        if marks.is_empty() {
            return;
        }
        self.state.lock().rare().marks = marks;
        self.cluster_flags.fetch_or(HAS_MARKS, Ordering::Release);
    }

    /// What the session still skips (a copy).
    pub fn peer_marks(&self) -> SessionMarks {
        if self.cluster_flags.load(Ordering::Acquire) & HAS_MARKS == 0 {
            return SessionMarks::default();
        }
        let state = self.state.lock();
        state
            .rare
            .as_ref()
            .map(|rare| rare.marks.clone())
            .unwrap_or_default()
    }

    /// Whether the session had the message of another node at `at` already
    /// (it is not routed to it). One atomic load for a session without marks.
    pub fn had_peer_message(&self, at: &PeerPosition<'_>) -> bool {
        if self.cluster_flags.load(Ordering::Acquire) & HAS_MARKS == 0 {
            return false;
        }
        let mut state = self.state.lock();
        let Some(rare) = state.rare.as_mut() else {
            return false;
        };
        let covered = rare.marks.covers(at);
        if rare.marks.is_empty() {
            self.cluster_flags.fetch_and(!HAS_MARKS, Ordering::Release);
        }
        covered
    }
}
