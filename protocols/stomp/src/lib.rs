//! STOMP 1.0 / 1.1 / 1.2 frame codec for the Tern broker.
//!
//! Sans-IO: the [`Decoder`] turns bytes from a connection's read buffer into
//! [`Item`]s, and [`encode`] appends a [`Frame`] to a write buffer. There is no
//! runtime and no broker logic here.
//!
//! # Wire rules
//!
//! - A frame is a command line, `name:value` header lines, a blank line, the body
//!   and a NUL. Lines end with `\n` or `\r\n` (the `\r` is stripped, whatever the
//!   version); the encoder always writes `\n`.
//! - A bare EOL where a command is expected is a heart-beat. The decoder yields
//!   one [`Item::HeartBeat`] per EOL (no coalescing).
//! - With a `content-length` header (the first one counts), exactly that many body
//!   bytes are read, NULs included, and a NUL must follow. Without it the body
//!   runs to the first NUL.
//! - Header escaping (`\r` `\n` `\c` `\\`) applies in 1.1 and 1.2 (the decoder
//!   accepts `\r` in 1.1 too; the 1.1 encoder writes a raw CR as the 1.1 spec
//!   has no `\r` escape). STOMP 1.0 and the handshake frames CONNECT, STOMP and
//!   CONNECTED are never escaped. An undefined escape is an error.
//! - Repeated headers are all kept in order; [`Frame::header`] returns the first.
//!   Names and values are not trimmed.
//! - [`Limits`] are enforced while bytes arrive, so a peer cannot make the decoder
//!   buffer an unbounded frame, header line or header count.
//!
//! # Round trips
//!
//! `decode(encode(f)) == f` holds for frames with non-empty header names, once a
//! `content-length` header is appended to `f` when its body is non-empty (the
//! encoder adds it). Unescaped frames (1.0 and handshakes) cannot carry a line
//! feed, nor a ':' in a name: the encoder replaces those by a space so a relayed
//! value can never inject header lines. A value ending in CR does not survive 1.0,
//! 1.1 or handshake frames because that CR reads as part of the EOL.
//!
//! # Layout
//!
//! - `version.rs`: [`Version`] and `accept-version` negotiation.
//! - `command.rs`: [`Command`].
//! - `frame.rs`: [`Frame`] and [`Item`].
//! - `limits.rs`: [`Limits`].
//! - `error.rs`: [`StompError`].
//! - `escape.rs`: header escaping rules per version and command.
//! - `parse.rs`: nom parsers for complete command and header lines.
//! - `decoder.rs` (+ `decoder_tests.rs`): the incremental [`Decoder`].
//! - `encoder.rs`: [`encode`] and [`encode_heartbeat`].
//! - `tests/roundtrip.rs`: encode/decode property tests (whole, split at every
//!   point, byte by byte); `tests/reencode.rs`: the fuzz oracle as a property
//!   test; `fuzz/`: cargo-fuzz target (`cargo fuzz run decode`).

mod command;
mod decoder;
mod encoder;
mod error;
mod escape;
mod frame;
mod limits;
mod parse;
mod version;

pub use command::Command;
pub use decoder::Decoder;
pub use encoder::{encode, encode_heartbeat};
pub use error::StompError;
pub use frame::{Frame, Item};
pub use limits::Limits;
pub use version::Version;
