//! Server-sent events from a durable stream: which stream, and where to start.
//!
//! A `GET /v1/events` reads a stream when one covers every `topic` filter
//! (one of the stream's topic filters covers each of them; the first declared
//! stream that does), or when `stream=<name>` names one (the filters then
//! narrow it). Then every event's `id:` is its stream offset, and the start is:
//! - `Last-Event-ID: N` (what a reconnecting `EventSource` sends): after N;
//!   it wins over `from=`, so a page opened with `from=first` resumes instead
//!   of starting over;
//! - `from=<position>`: `first`, `last`, `next`, `offset=N` (or `N`),
//!   `timestamp=T`, `-10m` — the same text as STOMP's `x-stream-offset` and
//!   MQTT's `stream-offset`;
//! - neither: live (`next`), retained messages first.
//!
//! Without a stream there is no position to resume from: events carry no
//! `id:`, `from=` is 400 and `Last-Event-ID` is ignored (a browser sends it on
//! every reconnect; the page gets live messages from then on).

use std::sync::Arc;

use hyper::header::HeaderMap;

use super::names::Query;
use super::reply::HttpError;
use crate::core::exceptions::Exceptions;
use crate::core::message::QoS;
use crate::core::router::Router;
use crate::core::selector::Selector;
use crate::core::session::Session;
use crate::core::stream::{
    StartPosition, StreamError, StreamFilter, StreamSubscription, Streams, STREAM_PREFIX,
};
use crate::core::topic::Filter;

/// The header a reconnecting `EventSource` sends.
const LAST_EVENT_ID: &str = "last-event-id";

/// The stream events come from, and where they start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Resume {
    pub stream: String,
    /// None: live from now, retained messages first.
    pub position: Option<StartPosition>,
}

/// The stream a request reads and its start; None when no stream applies.
pub(super) fn choose(
    streams: &Streams,
    query: &Query,
    headers: &HeaderMap,
    filters: &[&Filter],
) -> Result<Option<Resume>, HttpError> {
    let stream = match query.get("stream") {
        Some(name) if streams.exists(name) => Some(name.to_string()),
        Some(name) => {
            return Err(HttpError::bad(format!(
                "stream={:?}: unknown stream",
                name.chars().take(200).collect::<String>()
            )))
        }
        None => streams.covering(filters),
    };
    let Some(stream) = stream else {
        if query.get("from").is_some() {
            return Err(HttpError::bad(
                "from=: no durable stream covers these topics, so there is nothing to resume from \
                 (declare a [[stream]] whose topics cover them, or name one with stream=)",
            ));
        }
        return Ok(None);
    };
    let last_id = headers
        .get(LAST_EVENT_ID)
        .map(|v| v.to_str().map(str::trim).unwrap_or("?"))
        .filter(|v| !v.is_empty());
    let position = match (last_id, query.get("from")) {
        (Some(id), _) => Some(after_event_id(id)?),
        (None, Some(from)) => Some(
            from.parse()
                .map_err(|e: StreamError| HttpError::bad(format!("from=: {e}")))?,
        ),
        (None, None) => None,
    };
    Ok(Some(Resume { stream, position }))
}

/// Starts `session`'s reader of the stream: one reader, so the offsets come
/// in order whatever the number of filters. With one filter the reader
/// narrows the stream to it (and its ACL exceptions); with several it reads
/// the whole stream and the event stream keeps what one of them grants.
pub(super) fn start(
    router: &Router,
    session: &Arc<Session>,
    resume: Resume,
    filters: &[(Filter, Exceptions)],
    selector: Option<Arc<Selector>>,
) -> Result<(), HttpError> {
    let (topics, exceptions) = match filters {
        [(filter, exceptions)] => (filter.clone(), exceptions.clone()),
        _ => (
            Filter::parse("#").map_err(|e| HttpError::Unavailable(e.to_string()))?,
            Exceptions::NONE,
        ),
    };
    let sub = StreamSubscription {
        filter: Arc::from(format!(
            "{STREAM_PREFIX}{}/{}",
            resume.stream,
            topics.as_str()
        )),
        parsed: StreamFilter {
            stream: resume.stream,
            position: None,
            topics,
        },
        position: resume.position,
        consumer: None,
        qos: QoS::AtMostOnce,
        subscription_id: None,
        exceptions,
        selector,
    };
    router.subscribe_stream(session, sub).map_err(|e| match e {
        StreamError::NoStore(_) => HttpError::Unavailable(e.to_string()),
        e => HttpError::bad(e.to_string()),
    })
}

/// The position after the event `id` (a stream offset).
fn after_event_id(id: &str) -> Result<StartPosition, HttpError> {
    id.parse::<u64>()
        .ok()
        .and_then(|offset| offset.checked_add(1))
        .map(StartPosition::Offset)
        .ok_or_else(|| {
            HttpError::bad(format!(
                "Last-Event-ID {:?} is not a stream offset",
                id.chars().take(64).collect::<String>()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_event_id_resumes_after_it() {
        assert_eq!(after_event_id("41").unwrap(), StartPosition::Offset(42));
        for bad in ["x", "-1", "1.5", "18446744073709551615"] {
            assert!(after_event_id(bad).is_err(), "{bad}");
        }
    }
}
