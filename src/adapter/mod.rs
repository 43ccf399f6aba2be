//! Protocol adapters: each turns its protocol's frames into core calls and
//! core deliveries into frames. Adapters never talk to each other.

pub mod mqtt;
pub mod stomp;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::core::router::Router;

/// What every connection handler needs from the broker.
#[derive(Debug, Clone)]
pub struct Context {
    pub router: Arc<Router>,
    pub settings: Arc<Settings>,
    /// Cancelled when the broker shuts down: handlers say goodbye and close.
    pub shutdown: CancellationToken,
}

/// Who is on the other end of a connection, as the listener saw it.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: std::net::SocketAddr,
    /// Name of the listener ("mqtt", "stomp", …) for logs.
    pub listener: &'static str,
    pub anonymous_allowed: bool,
    /// False when the connection cap was reached: the handler refuses the client politely.
    pub admitted: bool,
}
