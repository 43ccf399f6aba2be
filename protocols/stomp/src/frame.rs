//! The decoded frame model.

use bytes::Bytes;

use crate::Command;

/// One STOMP frame: command, headers in wire order, and an opaque body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub command: Command,
    /// Headers in wire order. Repeats are kept because the spec says only the
    /// first one counts, yet a relaying broker should not silently drop the rest.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Frame {
    /// A frame with no headers and an empty body.
    pub fn new(command: Command) -> Frame {
        Frame {
            command,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// The value of the first header called `name` (spec: first occurrence wins).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Appends a header (builder style); does not replace an existing one.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Frame {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Replaces the body (builder style).
    pub fn with_body(mut self, body: Bytes) -> Frame {
        self.body = body;
        self
    }
}

/// What the decoder yields: a frame, or one heart-beat EOL seen between frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Frame(Frame),
    /// One bare `\n` or `\r\n` outside a frame (not coalesced: one item per EOL).
    HeartBeat,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_header_wins() {
        let f = Frame::new(Command::Send)
            .with_header("destination", "/a")
            .with_header("destination", "/b");
        assert_eq!(f.header("destination"), Some("/a"));
        assert_eq!(f.headers.len(), 2);
        assert_eq!(f.header("missing"), None);
    }

    #[test]
    fn builder_sets_body() {
        let f = Frame::new(Command::Send).with_body(Bytes::from_static(b"x"));
        assert_eq!(&f.body[..], b"x");
    }
}
