//! Listeners: each accepts connections, applies the connection cap and hands
//! a byte stream plus peer info to a protocol adapter.

pub mod cap;
pub mod tcp;
pub mod tls;
mod web_root;
pub mod ws;
pub mod ws_stream;
