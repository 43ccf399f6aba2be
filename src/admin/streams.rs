//! The admin API's streams calls (admin token required, like every call):
//!
//! | call | does |
//! |---|---|
//! | `GET /api/streams` | every stream: first/last offset, messages, bytes, readers, named consumers and their lag |
//! | `GET /api/streams/<name>` | one stream |
//! | `POST /api/streams` | creates a stream from a JSON `[[stream]]` table (`{"name":…,"topics":[…],"max_age":…}`), kept over restarts |
//! | `DELETE /api/streams/<name>` | deletes a stream created here, with its messages and consumers (409 for a config file's) |
//! | `DELETE /api/streams/<name>/messages` | purges its messages (offsets go on from where they were) |

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::json;

use super::http::{error, json_ok, read_body, respond, HttpResponse, HttpState};
use crate::core::stream::{StreamError, StreamSettings, Streams};
use crate::store::Ticket;

/// Largest `POST /api/streams` body read.
const MAX_BODY: usize = 64 * 1024;

pub(super) async fn handle(
    method: &Method,
    segments: &[&str],
    request: Request<Incoming>,
    state: &HttpState,
) -> HttpResponse {
    let streams = state.router.streams();
    match (method, segments) {
        (&Method::GET, []) => json_ok(json!(streams.info())),
        (&Method::GET, [name]) => match streams.info().into_iter().find(|s| s.name == *name) {
            Some(info) => json_ok(json!(info)),
            None => stream_error(&StreamError::UnknownStream((*name).to_string())),
        },
        (&Method::POST, []) => {
            let body = match read_body(request, MAX_BODY).await {
                Ok(body) => body,
                Err(why) => return error(StatusCode::BAD_REQUEST, &why),
            };
            let settings: StreamSettings = match serde_json::from_slice(&body) {
                Ok(settings) => settings,
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        &format!("the body is not a [[stream]] table as JSON: {e}"),
                    )
                }
            };
            let created = match streams.create(&settings) {
                Ok(ticket) => kept(streams, ticket).await,
                Err(e) => Err(e),
            };
            match created {
                Ok(()) => {
                    tracing::info!(stream = %settings.name, "stream created through the admin API");
                    respond(
                        StatusCode::CREATED,
                        "application/json",
                        json!({ "created": settings.name }).to_string(),
                    )
                }
                Err(e) => stream_error(&e),
            }
        }
        (&Method::DELETE, [name]) => {
            let deleted = match streams.delete(name) {
                Ok(ticket) => kept(streams, ticket).await,
                Err(e) => Err(e),
            };
            match deleted {
                Ok(()) => {
                    tracing::info!(stream = %name, "stream deleted through the admin API");
                    json_ok(json!({ "deleted": name }))
                }
                Err(e) => stream_error(&e),
            }
        }
        (&Method::DELETE, [name, "messages"]) => match streams.purge(name) {
            Ok(removed) => {
                tracing::info!(stream = %name, removed, "stream purged through the admin API");
                json_ok(json!({ "purged": removed }))
            }
            Err(e) => stream_error(&e),
        },
        _ => error(
            StatusCode::NOT_FOUND,
            "no such streams call (see README: Streams)",
        ),
    }
}

/// Waits until the store committed `ticket` (the answer says it is kept).
async fn kept(streams: &Streams, ticket: Ticket) -> Result<(), StreamError> {
    match streams.store() {
        Some(store) => store
            .wait(ticket)
            .await
            .map_err(|e| StreamError::Invalid(format!("the store failed: {e}"))),
        None => Ok(()),
    }
}

fn stream_error(e: &StreamError) -> HttpResponse {
    let status = match e {
        StreamError::UnknownStream(_) => StatusCode::NOT_FOUND,
        StreamError::Exists(_) | StreamError::Declared(_) => StatusCode::CONFLICT,
        _ => StatusCode::BAD_REQUEST,
    };
    error(status, &e.to_string())
}
