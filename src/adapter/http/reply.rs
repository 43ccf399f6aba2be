//! Errors of the HTTP adapter and the one place they become responses, plus
//! the response helpers every endpoint uses.
//!
//! | error              | status | headers            |
//! |--------------------|--------|--------------------|
//! | `BadRequest`       | 400    |                    |
//! | `Unauthorized`     | 401    | `WWW-Authenticate` |
//! | `Forbidden`        | 403    |                    |
//! | `NotFound`         | 404    |                    |
//! | `MethodNotAllowed` | 405    | `Allow`            |
//! | `TooLarge`         | 413    |                    |
//! | `TooMany`          | 429    | `Retry-After` (publish rate) |
//! | `Unavailable`      | 503    |                    |
//! | `Timeout`          | 504    |                    |
//!
//! Every error body is JSON: `{"error": "<what went wrong>", "status": N}`.

use std::io;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};

/// The body of every response on the web port.
pub type Body = BoxBody<Bytes, io::Error>;

/// Why a `/v1` request was refused.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    BadRequest(String),
    #[error("authentication required")]
    Unauthorized,
    #[error("bad username or password")]
    BadCredentials,
    #[error("not allowed to {action} {target}")]
    Forbidden {
        action: &'static str,
        target: String,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed: use {0}")]
    MethodNotAllowed(&'static str),
    #[error("request body over {limit} bytes (limits.http_max_body_size)")]
    TooLarge { limit: usize },
    #[error("{reason}")]
    TooMany {
        reason: String,
        /// Whole seconds after which the client may try again.
        retry_after: Option<u64>,
    },
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Timeout(String),
    /// The payload failed a `reject` schema (or is declared UTF-8 and is not):
    /// 422 with the schema's name and each violation (path, rule, message).
    #[error("{reason}")]
    PayloadInvalid {
        reason: String,
        schema: Option<String>,
        violations: Vec<crate::core::schema::Violation>,
    },
}

impl HttpError {
    pub fn bad(reason: impl Into<String>) -> HttpError {
        HttpError::BadRequest(reason.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            HttpError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HttpError::Unauthorized | HttpError::BadCredentials => StatusCode::UNAUTHORIZED,
            HttpError::Forbidden { .. } => StatusCode::FORBIDDEN,
            HttpError::NotFound(_) => StatusCode::NOT_FOUND,
            HttpError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            HttpError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            HttpError::TooMany { .. } => StatusCode::TOO_MANY_REQUESTS,
            HttpError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            HttpError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            HttpError::PayloadInvalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    /// The JSON object describing this error (also one line of a batch's results).
    pub fn to_json(&self) -> serde_json::Value {
        let mut value =
            serde_json::json!({ "error": self.to_string(), "status": self.status().as_u16() });
        if let HttpError::PayloadInvalid {
            schema, violations, ..
        } = self
        {
            value["schema"] = serde_json::json!(schema);
            value["violations"] = serde_json::json!(violations);
        }
        value
    }

    /// The response: the status, a JSON body and the headers the status calls for.
    pub fn into_response(self) -> Response<Body> {
        let mut response = json(self.status(), &self.to_json());
        let headers = response.headers_mut();
        match &self {
            HttpError::Unauthorized | HttpError::BadCredentials => {
                headers.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"tern\", charset=\"UTF-8\""),
                );
            }
            HttpError::MethodNotAllowed(allow) => {
                headers.insert(ALLOW, HeaderValue::from_static(allow));
            }
            HttpError::TooMany {
                retry_after: Some(secs),
                ..
            } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(*secs));
            }
            _ => {}
        }
        response
    }
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    json_of(status, value)
}

/// A JSON response of anything serializable.
pub fn json_of(status: StatusCode, value: &impl serde::Serialize) -> Response<Body> {
    let mut body = serde_json::to_vec(value).unwrap_or_default();
    body.push(b'\n');
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
