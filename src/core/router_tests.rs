//! How the router tells connections to end, and what becomes of their sessions.

use std::sync::Arc;

use super::Router;
use crate::core::session::{KickReason, OverflowPolicy, QueueLimits};

fn router() -> Arc<Router> {
    Arc::new(Router::new(QueueLimits {
        max_queued: 10,
        max_queued_bytes: 0,
        overflow: OverflowPolicy::DropNew,
    }))
}

#[tokio::test]
async fn shutting_down_tells_live_connections_and_any_that_attach_later() {
    let router = router();
    let early = router.attach(&Arc::from("early"), true, 0);
    router.end_all_connections();
    assert_eq!(early.kicked.await.ok(), Some(KickReason::ShuttingDown));
    let late = router.attach(&Arc::from("late"), true, 0);
    assert_eq!(late.kicked.await.ok(), Some(KickReason::ShuttingDown));
}

#[tokio::test]
async fn an_administrative_kick_ends_a_clean_session_with_its_connection() {
    let router = router();
    let attached = router.attach(&Arc::from("device"), true, 0);
    assert!(router.kick("device", KickReason::Administrative));
    assert_eq!(attached.kicked.await.ok(), Some(KickReason::Administrative));
    assert!(
        router.session("device").is_some_and(|s| s.is_connected()),
        "bound until its connection ends"
    );
    router.detach(&attached.session, attached.connection_id);
    assert!(router.session("device").is_none(), "a clean session ends");
}

#[tokio::test]
async fn a_takeover_leaves_the_session_to_the_new_connection() {
    let router = router();
    let client_id: Arc<str> = Arc::from("device");
    let old = router.attach(&client_id, false, 60);
    let new = router.attach(&client_id, false, 60);
    assert_eq!(old.kicked.await.ok(), Some(KickReason::TakenOver));
    // The old connection ending does not detach the new one.
    router.detach(&old.session, old.connection_id);
    assert!(new.session.is_connected());
    assert!(Arc::ptr_eq(&old.session, &new.session));
}
