//! Shared subscriptions cluster-wide: `$share/<g>/<f>` (and STOMP
//! `/topic/$share/...`) hands each message to exactly one member of the
//! group, wherever the members are connected.
//!
//! Design: in cluster mode the core's queue registry consumes a shared group
//! as it does a queue (`QueueRegistry::consumed_by`: members are its
//! consumers, the registry key is the filter behind a NUL mark), and
//! `queues.rs` runs it with the same machinery (pull while local members have
//! room, ack when nothing here holds the message, nak when given back,
//! redelivery after the ack wait when a node dies). What differs is where the
//! messages come from, which this file says:
//! - Stream [`STREAM`] captures what the fabric publishes anyway (every
//!   client message goes to NATS on its topic's subject, `subject.rs`): its
//!   subjects are the whole topic space, `tern.m.>` and `tern.d.>`, and the
//!   groups' redelivery subjects `ternr.>` (see below; JetStream
//!   refuses overlapping subjects, so one stream cannot list the groups'
//!   filters). Retention = interest: JetStream keeps only messages some
//!   group's consumer's filter matches, until each of those groups acked it
//!   (a message no group wants is not stored at all). Memory storage: it must
//!   outlive a Tern node, not a NATS server. Made by the first node that has a
//!   member of any group: a cluster without shared subscriptions pays nothing.
//! - Per group and per subject of its filter (one, or two for `a/#`: `a` and
//!   `a.>`) a durable pull consumer, delivering only messages published after
//!   it was made; it goes away after [`GROUP_IDLE`] without any node pulling.
//! - A message's topic is its subject's (`subject_to_topic`).
//! - A stream message may be a batch of one topic's messages (`wire.rs`):
//!   they go to the members on the node that took it, each to one member
//!   (those beyond the members' room wait on that node for room), and it is
//!   acked when all are done. Some given back (NACK, a member gone) while
//!   the rest are done: only those go again (`settle.rs`), on the group's
//!   redelivery subject `ternr.<consumer name>.<subject>` (in the stream's
//!   subjects), which one more consumer per group captures: the last source
//!   of the group's pullers ([`sources`]).
//! - A live retained publish is captured too: the fabric carries it for the
//!   groups alone (nodes route no retained message from the fabric: their
//!   subscribers get it through the retained bucket).

use std::time::Duration;

use async_nats::jetstream::{consumer, stream};

use super::queues::consumer_name;
use super::subject::{filter_to_subjects, DOLLAR_PREFIX, TOPIC_PREFIX};
use super::Cluster;
use crate::core::queue::shared_group_filter;

/// The stream every shared group's messages are captured in.
pub const STREAM: &str = "TERN_SHARED";
/// Messages the stream holds at most (the oldest go first), and for how long.
const MAX_MESSAGES: i64 = 1_000_000;
const MAX_AGE: Duration = Duration::from_secs(3600);
/// A group's consumer that no node pulled from for this long is removed.
pub const GROUP_IDLE: Duration = Duration::from_secs(3600);

/// First token of a group's redelivery subjects: `ternr.<consumer name>.`
/// and the subject the message had.
const REDELIVERY_PREFIX: &str = "ternr";

/// Pullers of queue (or shared group) `key`: one per subject of a group's
/// filter and one for its redelivery subject; one for a queue.
pub fn sources(key: &str) -> usize {
    group_subjects(key).map_or(1, |subjects| subjects.len() + 1)
}

/// Where the not-done messages of group `key`'s partly given back batch of
/// `subject` go: a subject only that group's redelivery consumer captures.
pub fn redelivery_subject(key: &str, subject: &str) -> String {
    let subject = original_subject(subject);
    format!("{REDELIVERY_PREFIX}.{}.{subject}", consumer_name(key))
}

/// The subject a stream message had when it was first published (a
/// redelivered batch's minus its redelivery prefix).
pub fn original_subject(subject: &str) -> &str {
    subject
        .strip_prefix(REDELIVERY_PREFIX)
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(|rest| rest.split_once('.'))
        .map_or(subject, |(_, original)| original)
}

/// The subjects of the filter of the shared group with registry key `key`;
/// None for a queue's key or a filter too long for NATS.
pub fn group_subjects(key: &str) -> Option<Vec<String>> {
    let filter = shared_group_filter(key)?.strip_prefix("$share/")?;
    let (_group, topic_filter) = filter.split_once('/')?;
    filter_to_subjects(topic_filter).ok()
}

/// Opens (making what is missing) the consumer of subject `index` of the
/// shared group with registry key `key`.
pub async fn open_consumer(
    cluster: &Cluster,
    key: &str,
    index: usize,
    ack_wait: Duration,
    max_ack_pending: i64,
) -> Result<consumer::Consumer<consumer::pull::Config>, String> {
    let subjects =
        group_subjects(key).ok_or("the group's filter is too long for a NATS subject")?;
    // The last consumer: the group's redelivery subject.
    let subject = match subjects.into_iter().nth(index) {
        Some(subject) => subject,
        None => format!("{REDELIVERY_PREFIX}.{}.>", consumer_name(key)),
    };
    let config = stream::Config {
        name: STREAM.to_string(),
        subjects: vec![
            format!("{TOPIC_PREFIX}>"),
            format!("{DOLLAR_PREFIX}>"),
            format!("{REDELIVERY_PREFIX}.>"),
        ],
        retention: stream::RetentionPolicy::Interest,
        storage: stream::StorageType::Memory,
        max_messages: MAX_MESSAGES,
        max_age: MAX_AGE,
        num_replicas: cluster.replicas().max(1),
        ..Default::default()
    };
    let stream =
        crate::store::nats::made::get_or_create_stream(cluster.jetstream(), config.clone())
            .await
            .map_err(|e| e.to_string())?;
    if stream.cached_info().config.subjects != config.subjects {
        // Made by a build without redelivery subjects.
        cluster
            .jetstream()
            .update_stream(config)
            .await
            .map_err(|e| e.to_string())?;
    }
    let durable = format!("{}_{index}", consumer_name(key));
    stream
        .get_or_create_consumer(
            &durable,
            consumer::pull::Config {
                durable_name: Some(durable.clone()),
                filter_subject: subject,
                deliver_policy: consumer::DeliverPolicy::New,
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait,
                max_ack_pending,
                inactive_threshold: GROUP_IDLE,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::queue::shared_group_key;

    #[test]
    fn a_group_has_the_subjects_of_its_filter() {
        let one = group_subjects(&shared_group_key("$share/g/a/+")).unwrap();
        assert_eq!(one, ["tern.m.a.*"]);
        let two = group_subjects(&shared_group_key("$share/g/a/#")).unwrap();
        assert_eq!(two, ["tern.m.a", "tern.m.a.>"]);
        assert!(group_subjects("jobs").is_none(), "a queue's key");
        assert_eq!(sources(&shared_group_key("$share/g/a/#")), 3);
        assert_eq!(sources("jobs"), 1);
    }

    #[test]
    fn a_redelivery_subject_is_the_groups_and_keeps_the_original() {
        let key = shared_group_key("$share/g/a/+");
        let other = shared_group_key("$share/h/a/+");
        let again = redelivery_subject(&key, "tern.m.a.b");
        assert!(again.starts_with(&format!("ternr.{}.", consumer_name(&key))));
        assert_ne!(again, redelivery_subject(&other, "tern.m.a.b"));
        assert_eq!(original_subject(&again), "tern.m.a.b");
        assert_eq!(redelivery_subject(&key, &again), again, "redelivered again");
        assert_eq!(original_subject("tern.m.a.b"), "tern.m.a.b");
    }

    #[test]
    fn groups_and_queues_have_distinct_consumers() {
        let group = consumer_name(&shared_group_key("$share/g/jobs"));
        assert_ne!(group, consumer_name("$share/g/jobs"));
        assert_ne!(group, consumer_name("jobs"));
    }
}
