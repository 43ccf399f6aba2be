//! The `selector=` query parameter of `/v1/events` and `/v1/queues/{q}/pull`:
//! a JMS selector, compiled through the router's cache; 400 naming the
//! position and what was expected when it does not parse.

use std::sync::Arc;

use super::names::Query;
use super::reply::HttpError;
use super::Call;
use crate::core::selector::Selector;

pub(super) fn selector_from_query(
    call: &Call<'_>,
    query: &Query,
) -> Result<Option<Arc<Selector>>, HttpError> {
    match query.get("selector") {
        None => Ok(None),
        Some(text) => call
            .ctx
            .router
            .compile_selector(text)
            .map(Some)
            .map_err(|e| HttpError::bad(format!("selector=: {e}"))),
    }
}
