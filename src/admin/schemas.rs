//! The admin API's schema calls (admin token required, like every call):
//!
//! | call | does |
//! |---|---|
//! | `GET /api/schemas` | every schema in force: name, source (`config` / `api`), kind, topics, on_invalid, version, counts |
//! | `GET /api/schemas/<name>` | one schema in force, with its versions (admin API schemas) |
//! | `GET /api/schemas/<name>/versions/<n>` | one version, with its definition |
//! | `POST /api/schemas/<name>/versions` | adds a version (`{"kind":…,"topics":[…],"on_invalid":…,"definition":…}`), in force at once, kept in the store |
//! | `DELETE /api/schemas/<name>` | removes an admin API schema with all its versions |
//!
//! Schemas of the config file are changed there (SIGHUP reloads them); the
//! admin API refuses their names (409).

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};

use super::http::{error, json_ok, read_body, respond, HttpResponse, HttpState};
use crate::core::schema::{BoundSchema, ManagedSchemaError, NewVersion, Schemas};

/// Largest `POST` body read (a schema document).
const MAX_BODY: usize = 1024 * 1024;

pub(super) async fn handle(
    method: &Method,
    segments: &[&str],
    request: Request<Incoming>,
    state: &HttpState,
) -> HttpResponse {
    let schemas = state.router.schemas();
    match (method, segments) {
        (&Method::GET, []) => {
            let all: Vec<Value> = schemas
                .bound()
                .iter()
                .map(|b| summary(schemas, b))
                .collect();
            json_ok(json!(all))
        }
        (&Method::GET, [name]) => {
            let bound = schemas.bound();
            let Some(schema) = bound.iter().find(|b| b.name == *name) else {
                return schema_error(&ManagedSchemaError::Unknown((*name).to_string()));
            };
            let mut shown = summary(schemas, schema);
            if let Ok(versions) = schemas.versions(name) {
                shown["versions"] = json!(versions
                    .iter()
                    .map(|v| json!({ "version": v.version, "created_ms": v.created_ms }))
                    .collect::<Vec<_>>());
            }
            json_ok(shown)
        }
        (&Method::GET, [name, "versions", version]) => {
            let Ok(version) = version.parse::<u32>() else {
                return error(StatusCode::BAD_REQUEST, "a version is a whole number");
            };
            match schemas.version(name, version) {
                Ok(v) => json_ok(json!(v)),
                Err(e) => schema_error(&e),
            }
        }
        (&Method::POST, [name, "versions"]) => {
            let body = match read_body(request, MAX_BODY).await {
                Ok(body) => body,
                Err(why) => return error(StatusCode::BAD_REQUEST, &why),
            };
            let new: NewVersion = match serde_json::from_slice(&body) {
                Ok(new) => new,
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        &format!("the body is not a schema version as JSON: {e}"),
                    )
                }
            };
            match schemas.add_version(name, new) {
                Ok((version, commit)) => {
                    if let Err(e) = state.router.wait_committed(commit).await {
                        return error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
                    }
                    tracing::info!(schema = %name, version, "schema version added through the admin API");
                    respond(
                        StatusCode::CREATED,
                        "application/json",
                        json!({ "name": name, "version": version }).to_string(),
                    )
                }
                Err(e) => schema_error(&e),
            }
        }
        (&Method::DELETE, [name]) => match schemas.delete(name) {
            Ok(commit) => {
                if let Err(e) = state.router.wait_committed(commit).await {
                    return error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
                }
                tracing::info!(schema = %name, "schema deleted through the admin API");
                json_ok(json!({ "deleted": name }))
            }
            Err(e) => schema_error(&e),
        },
        _ => error(
            StatusCode::NOT_FOUND,
            "no such schemas call (see README: Schemas)",
        ),
    }
}

fn summary(schemas: &Schemas, schema: &BoundSchema) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let counts = schemas.counters(&schema.name);
    json!({
        "name": schema.name,
        "source": schema.source.as_str(),
        "kind": schema.kind.as_str(),
        "topics": schema.filters.iter().map(|f| f.as_str()).collect::<Vec<_>>(),
        "on_invalid": schema.on_invalid,
        "version": schema.version,
        "counts": {
            "valid": counts.valid.load(Relaxed),
            "rejected": counts.rejected.load(Relaxed),
            "dead_lettered": counts.dead_lettered.load(Relaxed),
            "logged": counts.logged.load(Relaxed),
        },
    })
}

fn schema_error(e: &ManagedSchemaError) -> HttpResponse {
    let status = match e {
        ManagedSchemaError::Unknown(_) | ManagedSchemaError::UnknownVersion(..) => {
            StatusCode::NOT_FOUND
        }
        ManagedSchemaError::Configured(_) => StatusCode::CONFLICT,
        ManagedSchemaError::Invalid(_) => StatusCode::BAD_REQUEST,
    };
    error(status, &e.to_string())
}
