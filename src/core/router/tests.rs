//! How the router tells connections to end, and what becomes of their sessions.

use std::sync::Arc;

use super::Router;
use crate::core::session::{KickReason, OverflowPolicy, QueueLimits, SessionOwner};

fn anon() -> SessionOwner {
    SessionOwner::Anonymous
}

fn user(name: &str) -> SessionOwner {
    SessionOwner::User(Arc::from(name))
}

fn router() -> Arc<Router> {
    Arc::new(Router::new(QueueLimits {
        max_queued: 10,
        max_queued_bytes: 0,
        overflow: OverflowPolicy::DropNew,
        max_queued_age_ms: 0,
    }))
}

#[tokio::test]
async fn shutting_down_tells_live_connections_and_any_that_attach_later() {
    let router = router();
    let early = router
        .attach(&Arc::from("early"), &anon(), true, 0)
        .expect("attach");
    router.end_all_connections();
    assert_eq!(early.kicked.await.ok(), Some(KickReason::ShuttingDown));
    let late = router
        .attach(&Arc::from("late"), &anon(), true, 0)
        .expect("attach");
    assert_eq!(late.kicked.await.ok(), Some(KickReason::ShuttingDown));
}

#[tokio::test]
async fn an_administrative_kick_ends_a_clean_session_with_its_connection() {
    let router = router();
    let attached = router
        .attach(&Arc::from("device"), &anon(), true, 0)
        .expect("attach");
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
    let old = router
        .attach(&client_id, &anon(), false, 60)
        .expect("attach");
    let new = router
        .attach(&client_id, &anon(), false, 60)
        .expect("attach");
    assert_eq!(old.kicked.await.ok(), Some(KickReason::TakenOver));
    // The old connection ending does not detach the new one.
    router.detach(&old.session, old.connection_id);
    assert!(new.session.is_connected());
    assert!(Arc::ptr_eq(&old.session, &new.session));
}

#[tokio::test]
async fn another_user_may_neither_resume_take_over_nor_discard_a_session() {
    let router = router();
    let client_id: Arc<str> = Arc::from("victim");
    let owner = router
        .attach(&client_id, &user("dev2"), false, 60)
        .expect("the owner creates it");
    for (login, clean) in [(user("dev1"), false), (user("dev1"), true), (anon(), false)] {
        let refused = router.attach(&client_id, &login, clean, 60);
        let err = refused.expect_err("another user is refused");
        assert_eq!(err.owner, user("dev2"));
        assert_eq!(err.login, login);
    }
    assert!(owner.session.is_connected(), "the owner's connection stays");
    let current = router.session("victim").expect("the session stays");
    assert!(Arc::ptr_eq(&current, &owner.session));
    // The owner itself takes over its own connection.
    let again = router
        .attach(&client_id, &user("dev2"), false, 60)
        .expect("the owner resumes");
    assert!(again.session_present);
}

#[tokio::test]
async fn an_anonymous_session_is_resumed_by_anonymous_only_and_the_check_can_be_off() {
    let router = router();
    let client_id: Arc<str> = Arc::from("shared");
    router
        .attach(&client_id, &anon(), false, 60)
        .expect("anonymous creates it");
    assert!(router
        .attach(&client_id, &user("alice"), false, 60)
        .is_err());
    router.set_session_owner_check(false);
    let taken = router
        .attach(&client_id, &user("alice"), false, 60)
        .expect("no owner check");
    assert!(taken.session_present);
    assert_eq!(taken.session.owner(), user("alice"));
}

#[tokio::test]
async fn a_session_of_unknown_owner_is_claimed_by_its_first_login() {
    let router = router();
    router
        .sessions
        .insert_restored("old", 60, SessionOwner::Unknown);
    let claimed = router
        .attach(&Arc::from("old"), &user("bob"), false, 60)
        .expect("claimed");
    assert!(claimed.session_present);
    assert_eq!(claimed.session.owner(), user("bob"));
    assert!(router
        .attach(&Arc::from("old"), &user("eve"), false, 60)
        .is_err());
}
