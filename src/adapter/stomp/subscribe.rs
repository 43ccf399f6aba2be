//! SUBSCRIBE / UNSUBSCRIBE, the connection's subscription table, and retained
//! messages on subscribe.
//!
//! A STOMP subscription id maps to a core filter; the core keeps one subscription
//! per (session, filter). Several STOMP subscriptions with the same destination
//! on one connection therefore share one core subscription, whose QoS is the
//! highest any of them needs:
//! - on a topic, every one of them gets its own MESSAGE (own message-id) for
//!   each message, as if they were separate;
//! - on a queue, the connection is one consumer and each queue message goes to
//!   one of them, taking turns.
//!
//! A `selector` header filters what a subscription gets: the core applies it
//! when all the subscriptions on a filter share it, `deliver.rs` otherwise; on
//! a queue they must share it (one consumer, one selector).
//!
//! UNSUBSCRIBE of the last one removes the core subscription (a queue then takes
//! back the consumer's unacknowledged messages); otherwise the messages the
//! removed subscription had not acknowledged go back to their queue.

use std::collections::HashMap;
use std::sync::Arc;

use tern_stomp::{Command, Frame, Version};

use super::connection::Connection;
use super::destination::{subscribe_target, DestinationError, Target};
use super::error::StompAdapterError;
use super::headers::required;
use crate::core::message::QoS;
use crate::core::selector::Selector;
use crate::core::session::SubscriptionOptions;

/// The SUBSCRIBE header with a JMS selector (ActiveMQ's and Artemis's name).
const SELECTOR_HEADER: &str = "selector";

/// How a subscription acknowledges its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AckMode {
    /// Acknowledged when written: at most once.
    Auto,
    /// ACK/NACK of a message covers the earlier ones of the subscription too.
    Client,
    /// ACK/NACK covers the one message.
    ClientIndividual,
}

impl AckMode {
    fn parse(value: &str) -> Option<AckMode> {
        match value {
            "auto" => Some(AckMode::Auto),
            "client" => Some(AckMode::Client),
            "client-individual" => Some(AckMode::ClientIndividual),
            _ => None,
        }
    }

    pub(super) fn acks(self) -> bool {
        self != AckMode::Auto
    }

    /// The core QoS: auto is at most once, the acknowledging modes at least once.
    pub(super) fn qos(self) -> QoS {
        if self.acks() {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct Subscription {
    pub(super) id: Arc<str>,
    /// The core filter (`$queue/<q>` for a queue).
    pub(super) filter: Arc<str>,
    /// The queue name when the destination is a queue (in cluster mode, the
    /// registry key of a shared group too).
    pub(super) queue: Option<Arc<str>>,
    pub(super) ack: AckMode,
    /// The `selector` header, compiled: only messages it matches are written.
    pub(super) selector: Option<Arc<Selector>>,
}

/// The connection's subscriptions, by id and by core filter.
#[derive(Debug, Default)]
pub(super) struct Subscriptions {
    by_id: HashMap<Arc<str>, Subscription>,
    /// Ids per filter, in subscription order.
    by_filter: HashMap<Arc<str>, Vec<Arc<str>>>,
    /// Turn counter for queues shared by several subscriptions.
    turn: usize,
}

impl Subscriptions {
    pub(super) fn get(&self, id: &str) -> Option<&Subscription> {
        self.by_id.get(id)
    }

    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// The subscriptions a delivery matched through `filter`.
    pub(super) fn for_filter(&self, filter: &str) -> Vec<Subscription> {
        self.by_filter
            .get(filter)
            .into_iter()
            .flatten()
            .filter_map(|id| self.by_id.get(id).cloned())
            .collect()
    }

    /// The subscription whose turn it is among those on queue filter `filter`.
    pub(super) fn next_for_queue(&mut self, filter: &str) -> Option<Subscription> {
        let ids = self.by_filter.get(filter)?;
        if ids.is_empty() {
            return None;
        }
        let id = &ids[self.turn % ids.len()];
        self.turn = self.turn.wrapping_add(1);
        self.by_id.get(id).cloned()
    }

    pub(super) fn insert(&mut self, subscription: Subscription) {
        self.by_filter
            .entry(Arc::clone(&subscription.filter))
            .or_default()
            .push(Arc::clone(&subscription.id));
        self.by_id
            .insert(Arc::clone(&subscription.id), subscription);
    }

    /// Removes a subscription; also returns how many remain on its filter.
    fn remove(&mut self, id: &str) -> Option<(Subscription, usize)> {
        let subscription = self.by_id.remove(id)?;
        let remaining = match self.by_filter.get_mut(&subscription.filter) {
            Some(ids) => {
                ids.retain(|other| **other != *id);
                ids.len()
            }
            None => 0,
        };
        if remaining == 0 {
            self.by_filter.remove(&subscription.filter);
        }
        Some((subscription, remaining))
    }

    /// The selector every subscription on `filter` has (the same `Arc`), which
    /// the core can then apply; None when one has none or they differ (the
    /// core delivers everything and `deliver.rs` applies each one).
    pub(super) fn common_selector(&self, filter: &str) -> Option<Arc<Selector>> {
        let subscriptions = self.for_filter(filter);
        let first = subscriptions.first()?.selector.clone()?;
        subscriptions
            .iter()
            .all(|s| s.selector.as_ref().is_some_and(|x| Arc::ptr_eq(x, &first)))
            .then_some(first)
    }

    /// The core subscription options of `filter`: the highest QoS its
    /// subscriptions need, and their common selector.
    fn core_options(&self, filter: &str) -> SubscriptionOptions {
        let qos = self
            .for_filter(filter)
            .iter()
            .map(|s| s.ack.qos())
            .max()
            .unwrap_or(QoS::AtMostOnce);
        SubscriptionOptions {
            qos,
            no_local: false,
            retain_as_published: false,
            // Retained messages are written by the adapter, to the new subscription only.
            retain_handling: 2,
            subscription_id: None,
            // Set by the caller from the ACL (or kept from the core subscription).
            exceptions: Default::default(),
            selector: self.common_selector(filter),
        }
    }
}

pub(super) fn handle_subscribe(
    conn: &mut Connection,
    frame: &Frame,
) -> Result<(), StompAdapterError> {
    let destination = required(frame, "destination")?;
    // STOMP 1.0 makes the id optional: the destination then names the subscription.
    let id = match frame.header("id") {
        Some(id) => id,
        None if conn.protocol.version == Version::V1_0 => destination,
        None => {
            return Err(StompAdapterError::MissingHeader {
                command: Command::Subscribe,
                header: "id",
            })
        }
    };
    let ack = match frame.header("ack") {
        None => AckMode::Auto,
        Some(value) => AckMode::parse(value).ok_or_else(|| StompAdapterError::InvalidHeader {
            header: "ack",
            value: value.chars().take(64).collect(),
            reason: "must be auto, client or client-individual",
        })?,
    };
    if conn.protocol.subscriptions.get(id).is_some() {
        return Err(StompAdapterError::DuplicateSubscription(id.to_string()));
    }
    let max = conn.ctx.limits().max_subscriptions_per_client;
    if conn.protocol.subscriptions.len() >= max {
        return Err(StompAdapterError::TooManySubscriptions(max));
    }
    let selector = match frame.header(SELECTOR_HEADER) {
        Some(text) => Some(conn.ctx.router.compile_selector(text)?),
        None => None,
    };
    if let Some(rest) = destination.strip_prefix(super::stream::STREAM_DEST_PREFIX) {
        return super::stream::subscribe(conn, frame, id, ack, destination, rest, selector);
    }
    let target = subscribe_target(destination)?;
    let filter = target.filter().clone();
    let limits = conn.ctx.limits().topic_limits();
    limits
        .check_filter(&filter)
        .map_err(|reason| DestinationError::over_limit(destination, reason))?;
    let username = conn.username.as_deref();
    let Some(exceptions) =
        conn.ctx
            .subscription_exceptions(username, &conn.session.client_id, filter.as_str())
    else {
        if let Some(suppressed) = conn.log_limit.admit(std::time::Instant::now()) {
            tracing::warn!(
                client_id = %conn.session.client_id,
                username = username.unwrap_or(""),
                filter = %filter.as_str(),
                suppressed,
                "subscription denied by ACL"
            );
        }
        return Err(StompAdapterError::Denied {
            action: "subscribe to",
            destination: destination.chars().take(256).collect(),
        });
    };
    let queue = match &target {
        Target::Queue { name, .. } => Some(Arc::clone(name)),
        // In cluster mode a shared group is consumed as a queue is.
        Target::Topic(_) => conn
            .ctx
            .router
            .queues()
            .consumed_by(filter.as_str())
            .map(|key| Arc::from(&*key)),
    };
    // The connection is one consumer of a queue: the core picks messages for
    // it with one selector, so its subscriptions there must agree on it.
    let others = conn.protocol.subscriptions.for_filter(filter.as_str());
    if queue.is_some()
        && others
            .iter()
            .any(|other| match (&other.selector, &selector) {
                (Some(a), Some(b)) => !Arc::ptr_eq(a, b),
                (None, None) => false,
                _ => true,
            })
    {
        return Err(StompAdapterError::QueueSelectorMismatch(
            destination.chars().take(256).collect(),
        ));
    }
    let subscription = Subscription {
        id: Arc::from(id),
        filter: filter.shared_str(),
        queue,
        ack,
        selector: selector.clone(),
    };
    conn.protocol.subscriptions.insert(subscription);
    let mut options = conn.protocol.subscriptions.core_options(filter.as_str());
    options.exceptions = exceptions;
    let subscribed = conn
        .ctx
        .router
        .subscribe(&conn.session, filter, options.clone());
    conn.stored(subscribed.commit);
    tracing::debug!(client_id = %conn.session.client_id, id, destination, ack = ?ack, "subscribed");
    // The RECEIPT goes before the retained messages it made available.
    conn.write_receipt();
    if let Target::Topic(filter) = &target {
        if filter.share_group().is_none() {
            // The core leaves out the topics the subscription's exceptions name.
            let mut retained = conn
                .ctx
                .router
                .retained_matching(filter, &options.exceptions);
            // They go to this subscription: its own selector decides.
            Selector::keep_matching(selector.as_deref(), &mut retained);
            // Sent as the connection takes from its queue, to this subscription
            // (a retained delivery goes to the newest subscription on its filter).
            let expired = conn
                .ctx
                .router
                .send_retained(&conn.session, filter, &options, retained);
            conn.ctx.monitor.metrics.dropped_expired(expired);
        }
    }
    Ok(())
}

pub(super) fn handle_unsubscribe(
    conn: &mut Connection,
    frame: &Frame,
) -> Result<(), StompAdapterError> {
    // STOMP 1.0 may name the subscription by its destination instead.
    let id = match (frame.header("id"), conn.protocol.version) {
        (Some(id), _) => id,
        (None, Version::V1_0) => {
            frame
                .header("destination")
                .ok_or(StompAdapterError::MissingHeader {
                    command: Command::Unsubscribe,
                    header: "id",
                })?
        }
        (None, _) => required(frame, "id")?,
    };
    let Some((subscription, remaining)) = conn.protocol.subscriptions.remove(id) else {
        return Err(StompAdapterError::UnknownSubscription(id.to_string()));
    };
    let outstanding = conn.protocol.unacked.remove_subscription(&subscription.id);
    let router = Arc::clone(&conn.ctx.router);
    if remaining == 0 {
        // The queue takes back this consumer's unacknowledged messages itself.
        let removed = router.unsubscribe(&conn.session, &subscription.filter);
        conn.stored(removed.unwrap_or_default());
    } else {
        let stream = crate::core::stream::is_stream_filter(&subscription.filter);
        // A stream's reader stays for the remaining subscriptions as it is.
        if let Ok(filter) = crate::core::topic::Filter::parse(&subscription.filter)
            .map_err(|_| ())
            .and_then(|f| if stream { Err(()) } else { Ok(f) })
        {
            let mut options = conn
                .protocol
                .subscriptions
                .core_options(&subscription.filter);
            // The remaining subscriptions keep the exceptions the ACL gave the filter.
            options.exceptions = conn.session.exceptions_of(&subscription.filter);
            let subscribed = router.subscribe(&conn.session, filter, options);
            conn.stored(subscribed.commit);
        }
        for entry in outstanding {
            if let Some((queue, message)) = entry.queue {
                let requeued = router.queues().nack(&queue, &conn.session, &message);
                conn.stored(requeued.unwrap_or_default());
            }
        }
    }
    tracing::debug!(client_id = %conn.session.client_id, id, "unsubscribed");
    Ok(())
}
