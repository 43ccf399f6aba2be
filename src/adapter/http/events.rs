//! `GET /v1/events?topic={filter}&topic=…`: live messages as server-sent events.
//!
//! Each stream is a core session of its own (not persistent, gone when the
//! stream ends), subscribed to every `topic` filter the ACL grants (403 naming
//! the first refused one; queues are pulled, not streamed: 400). The stream:
//! - `retry: 1000` first, so a browser reconnects after a second;
//! - one event per message: `event: message`, `data: <the message as one
//!   JSON object>` (see `message.rs`: topic, payload as text or base64 with
//!   `"encoding":"base64"`, properties); retained messages first, unless
//!   `retained=false` or the stream resumes from a position;
//! - only the messages `selector=` matches, when given (a JMS selector; 400
//!   with the position and what was expected when it does not parse);
//! - a comment (`: keep-alive`) after `limits.http_sse_keepalive_secs` of silence.
//!
//! When a durable stream covers the topics (or `stream=` names one), the
//! messages come from that stream's reader and each event has `id: <stream
//! offset>`, so `Last-Event-ID` and `from=` resume without a gap or a
//! duplicate (`resume.rs`). Otherwise the session subscribes to the filters
//! and events carry no `id:` (there is no position to resume from).
//!
//! A client that stops reading stops the stream being polled: its session's
//! queue fills and `limits.queue_overflow` applies, the drops counted as for
//! a slow MQTT subscriber; a stream reader then waits (it feeds the queue only
//! while it has room), so replaying millions holds bounded memory. Each
//! stream holds one of the client's `limits.http_max_open_streams`.

use std::fmt::Write as _;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Request, Response};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::message::MessageView;
use super::names::{filter_from_query, Query};
use super::reply::{Body, HttpError};
use super::resume;
use super::selector::selector_from_query;
use super::{Call, OpenSlot};
use crate::admin::Monitor;
use crate::admin::Protocol;
use crate::core::exceptions::Exceptions;
use crate::core::message::{Delivery, QoS};
use crate::core::queue::queue_name;
use crate::core::router::Router;
use crate::core::selector::Selector;
use crate::core::session::{KickReason, Session, SubscriptionOptions};
use crate::core::stream::offset_of;
use crate::core::topic::Filter;

/// Deliveries written per wake-up (one chunk).
const BATCH: usize = 64;

pub(super) fn open(call: &Call<'_>, req: &Request<Incoming>) -> Result<Response<Body>, HttpError> {
    let query = Query::parse(req.uri().query());
    query.only(&["topic", "retained", "from", "stream", "selector"], false)?;
    let selector = selector_from_query(call, &query)?;
    let limits = call.ctx.limits().topic_limits();
    let mut filters = Vec::new();
    for raw in query.all("topic") {
        let filter = filter_from_query(raw, &limits)?;
        if queue_name(filter.as_str()).is_some() {
            return Err(HttpError::bad(format!(
                "{raw:?} is a queue: pull it with POST /v1/queues/{{q}}/pull"
            )));
        }
        let exceptions = call
            .ctx
            .subscription_exceptions(
                call.caller.username(),
                &call.caller.client_id,
                filter.as_str(),
            )
            .ok_or_else(|| HttpError::Forbidden {
                action: "subscribe to",
                target: raw.chars().take(200).collect(),
            })?;
        filters.push((filter, exceptions));
    }
    if filters.is_empty() {
        return Err(HttpError::bad("at least one topic= filter is needed"));
    }
    let max = call.ctx.limits().max_subscriptions_per_client;
    if filters.len() > max {
        return Err(HttpError::bad(format!(
            "{} filters: at most {max} (limits.max_subscriptions_per_client)",
            filters.len()
        )));
    }
    let wanted: Vec<&Filter> = filters.iter().map(|(filter, _)| filter).collect();
    let resume = resume::choose(call.ctx.router.streams(), &query, req.headers(), &wanted)?;
    // Resuming from a position: the stream is the history, retained would repeat it.
    let with_retained = !matches!(query.get("retained"), Some("false" | "0"))
        && resume.as_ref().is_none_or(|r| r.position.is_none());
    let slot = call.open_slot()?;
    let router = Arc::clone(&call.ctx.router);
    let attached = call.private_session("sse")?;
    let session = attached.session;
    for (filter, exceptions) in &filters {
        let options = SubscriptionOptions {
            qos: QoS::AtMostOnce,
            no_local: false,
            retain_as_published: false,
            retain_handling: 2,
            subscription_id: None,
            exceptions: exceptions.clone(),
            selector: selector.clone(),
        };
        let mut retained = if with_retained {
            router.retained_matching(filter, &options.exceptions)
        } else {
            Vec::new()
        };
        Selector::keep_matching(selector.as_deref(), &mut retained);
        if resume.is_none() {
            router.subscribe(&session, filter.clone(), options.clone());
        }
        if !retained.is_empty() {
            router.send_retained(&session, filter, &options, retained);
        }
    }
    let from_stream = match resume {
        Some(resume) => {
            if let Err(e) = resume::start(&router, &session, resume, &filters, selector.clone()) {
                router.detach(&session, attached.connection_id);
                return Err(e);
            }
            Some(filters)
        }
        None => None,
    };
    let stream = EventStream {
        router,
        session,
        connection_id: attached.connection_id,
        kicked: attached.kicked,
        shutdown: call.ctx.shutdown.clone(),
        keepalive: Duration::from_secs(call.ctx.limits().http_sse_keepalive_secs),
        monitor: Arc::clone(&call.ctx.monitor),
        from_stream,
        started: false,
        done: false,
        batch: Vec::new(),
        _slot: slot,
    };
    let frames = futures_util::stream::unfold(stream, |mut stream| async move {
        let chunk = stream.next_chunk().await?;
        Some((Ok::<_, io::Error>(Frame::data(chunk)), stream))
    });
    let mut response = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// One open stream: its session, and what ends it.
struct EventStream {
    router: Arc<Router>,
    session: Arc<Session>,
    connection_id: u64,
    kicked: oneshot::Receiver<KickReason>,
    shutdown: CancellationToken,
    keepalive: Duration,
    monitor: Arc<Monitor>,
    /// Reading a stream: the requested filters and their ACL exceptions (a
    /// reader of several filters reads the whole stream; these decide).
    from_stream: Option<Vec<(Filter, Exceptions)>>,
    started: bool,
    done: bool,
    batch: Vec<Delivery>,
    _slot: OpenSlot,
}

impl EventStream {
    /// The next bytes of the stream; None when it ends (kicked, shutdown).
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if !self.started {
            self.started = true;
            return Some(Bytes::from_static(b"retry: 1000\n: connected\n\n"));
        }
        loop {
            if self.done {
                return None;
            }
            self.session.take_pending(BATCH, &mut self.batch);
            if !self.batch.is_empty() {
                let chunk = self.encode();
                if !chunk.is_empty() {
                    return Some(chunk);
                }
                continue;
            }
            tokio::select! {
                _ = self.session.notified() => {}
                _ = tokio::time::sleep(self.keepalive) => {
                    return Some(Bytes::from_static(b": keep-alive\n\n"));
                }
                _ = &mut self.kicked => self.done = true,
                _ = self.shutdown.cancelled() => self.done = true,
            }
        }
    }

    /// The batch's deliveries as events (expired ones left out and counted).
    fn encode(&mut self) -> Bytes {
        let now = Instant::now();
        let traffic = self.monitor.metrics.traffic(Protocol::Http);
        let mut out = BytesMut::new();
        let mut expired = 0;
        for delivery in self.batch.drain(..) {
            let message = &delivery.message;
            if message.is_expired(now) {
                expired += 1;
                continue;
            }
            let view = MessageView::new(message, delivery.retain, now);
            if let Some(filters) = &self.from_stream {
                let granted = filters
                    .iter()
                    .any(|(f, e)| f.matches(&message.topic) && !e.excludes(&message.topic));
                if !granted {
                    continue;
                }
                // Retained messages are not in the stream: no position, no id.
                if let (false, Some(offset)) = (delivery.retain, offset_of(message)) {
                    let _ = writeln!(out, "id: {offset}");
                }
            }
            out.put_slice(b"event: message\ndata: ");
            // One line: serde_json escapes every newline inside strings.
            if serde_json::to_writer((&mut out).writer(), &view).is_err() {
                continue;
            }
            out.put_slice(b"\n\n");
            traffic.sent(delivery.qos, message.payload.len());
        }
        self.monitor.metrics.dropped_expired(expired);
        out.freeze()
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.router.detach(&self.session, self.connection_id);
    }
}
