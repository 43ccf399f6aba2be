//! Incremental, limit-enforcing frame decoder.
//!
//! The decoder never consumes bytes until a whole item is available, but it
//! remembers how far it has looked (and the headers it has already parsed), so
//! each byte is examined a bounded number of times however the input is chunked.

use std::mem;

use bytes::{Buf, BytesMut};

use crate::command::MAX_COMMAND_LEN;
use crate::error::snippet;
use crate::escape::Escaping;
use crate::parse::{command_line, content_length, header_line};
use crate::{Command, Frame, Item, Limits, StompError, Version};

/// Where the frame under construction stands.
#[derive(Debug, Default)]
enum Stage {
    /// Waiting for the command line (heart-beats are only recognised here).
    #[default]
    Command,
    Headers(Command),
    /// Headers done; the body starts at this offset of the buffer.
    Body {
        command: Command,
        start: usize,
    },
}

/// Progress on the frame at the front of the caller's buffer. All offsets are
/// relative to the start of that buffer, which is also the start of the frame.
#[derive(Debug, Default)]
struct Partial {
    stage: Stage,
    /// Bytes before this offset have already been examined.
    scanned: usize,
    /// Start of the line being read.
    line_start: usize,
    headers: Vec<(String, String)>,
    /// Value of the first `content-length` header.
    content_length: Option<usize>,
}

/// Stateful, incremental decoder for one connection.
///
/// Feed it the connection's read buffer after every read; it returns items one at
/// a time from the front of the buffer. Between calls the caller may only append
/// to the buffer. After an error the connection must be closed (the decoder
/// forgets its progress so it cannot loop).
#[derive(Debug)]
pub struct Decoder {
    limits: Limits,
    version: Version,
    partial: Partial,
}

/// Outcome of looking for a heart-beat at the front of the buffer.
enum HeartBeat {
    Found(usize),
    NeedMore,
    Absent,
}

impl Decoder {
    /// A decoder using 1.2 escaping rules until told otherwise. The first frame of
    /// a connection (CONNECT/STOMP) is never unescaped, so the default only
    /// matters for frames sent before [`Decoder::set_version`] is called.
    pub fn new(limits: Limits) -> Decoder {
        Decoder {
            limits,
            version: Version::V1_2,
            partial: Partial::default(),
        }
    }

    /// Switches the header escaping rules, normally right after the handshake.
    /// Takes effect for header lines not yet parsed.
    pub fn set_version(&mut self, v: Version) {
        self.version = v;
    }

    /// The version whose escaping rules are in force.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Decodes the next item from the front of `buf`.
    ///
    /// `Ok(None)`: more bytes are needed and `buf` is untouched. `Ok(Some(_))`: that
    /// item's bytes were removed from the front of `buf`. `Err`: the stream is
    /// malformed or over a limit; send an ERROR frame and close.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Item>, StompError> {
        if buf.len() < self.partial.scanned {
            // The caller shrank the buffer behind our back; start over.
            self.partial = Partial::default();
        }
        let result = self.decode_inner(buf);
        if result.is_err() {
            self.partial = Partial::default();
        }
        result
    }

    fn decode_inner(&mut self, buf: &mut BytesMut) -> Result<Option<Item>, StompError> {
        if matches!(self.partial.stage, Stage::Command) && self.partial.scanned == 0 {
            match heart_beat(buf) {
                HeartBeat::Found(n) => {
                    buf.advance(n);
                    return Ok(Some(Item::HeartBeat));
                }
                HeartBeat::NeedMore => return Ok(None),
                HeartBeat::Absent => {}
            }
        }
        loop {
            let (command, start) = match self.partial.stage {
                Stage::Body { command, start } => (command, start),
                _ => match self.next_line(buf)? {
                    Some((from, to)) => {
                        let line = buf.get(from..to).unwrap_or_default();
                        self.on_line(line)?;
                        continue;
                    }
                    None => return Ok(None),
                },
            };
            return self.body(buf, command, start);
        }
    }

    /// Finds the end of the current line. Returns its content range (EOL
    /// stripped) and moves past it, or enforces the line and frame limits on the
    /// incomplete line and returns `None`.
    fn next_line(&mut self, buf: &[u8]) -> Result<Option<(usize, usize)>, StompError> {
        let is_command = matches!(self.partial.stage, Stage::Command);
        let max_line = if is_command {
            MAX_COMMAND_LEN
        } else {
            self.limits.max_header_len
        };
        let p = &mut self.partial;
        // A legal line ends within max_line + CR + LF bytes: never look further,
        // so a large pipelined buffer is not scanned past a hopeless line.
        let window_end = buf
            .len()
            .min(p.line_start.saturating_add(max_line).saturating_add(2));
        let window = buf.get(p.scanned..window_end).unwrap_or_default();
        let line_end = match window.iter().position(|&b| b == b'\n') {
            Some(i) => p.scanned + i,
            None => {
                p.scanned = p.scanned.max(window_end);
                let line = buf.get(p.line_start..p.scanned).unwrap_or_default();
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.len() > max_line {
                    return Err(line_too_long(is_command, line, max_line));
                }
                self.check_size(self.partial.scanned)?;
                return Ok(None);
            }
        };
        let line = buf.get(p.line_start..line_end).unwrap_or_default();
        let content_len = line.strip_suffix(b"\r").map_or(line.len(), <[u8]>::len);
        if content_len > max_line {
            return Err(line_too_long(is_command, line, max_line));
        }
        let range = (p.line_start, p.line_start + content_len);
        p.scanned = line_end + 1;
        p.line_start = p.scanned;
        self.check_size(self.partial.scanned)?;
        Ok(Some(range))
    }

    /// Handles one complete line according to the current stage.
    fn on_line(&mut self, line: &[u8]) -> Result<(), StompError> {
        let p = &mut self.partial;
        match p.stage {
            Stage::Command => {
                p.stage = Stage::Headers(command_line(line)?);
            }
            Stage::Headers(command) if line.is_empty() => {
                let start = p.scanned;
                p.stage = Stage::Body { command, start };
                if let Some(len) = p.content_length {
                    // Reject now rather than wait for bytes we will refuse anyway.
                    let size = start.saturating_add(len).saturating_add(1);
                    self.check_size(size)?;
                }
            }
            Stage::Headers(command) => {
                if p.headers.len() >= self.limits.max_headers {
                    return Err(StompError::TooManyHeaders {
                        max: self.limits.max_headers,
                    });
                }
                let mode = Escaping::for_frame(self.version, command);
                let (name, value) = header_line(line, mode)?;
                if p.content_length.is_none() && name == "content-length" {
                    p.content_length = Some(content_length(&value)?);
                }
                p.headers.push((name, value));
            }
            Stage::Body { .. } => {}
        }
        Ok(())
    }

    /// Waits for the body and its NUL, then cuts the frame out of `buf`.
    fn body(
        &mut self,
        buf: &mut BytesMut,
        command: Command,
        start: usize,
    ) -> Result<Option<Item>, StompError> {
        let nul = match self.partial.content_length {
            Some(len) => {
                let nul = start.saturating_add(len);
                match buf.get(nul) {
                    None => return Ok(None),
                    Some(0) => nul,
                    Some(_) => return Err(StompError::MissingNul),
                }
            }
            None => {
                // The NUL must sit below max_frame_size for the frame to fit.
                let max = self.limits.max_frame_size;
                let from = self.partial.scanned.max(start);
                let limit = buf.len().min(max);
                let window = buf.get(from..limit).unwrap_or_default();
                match window.iter().position(|&b| b == 0) {
                    Some(i) => from + i,
                    None => {
                        self.partial.scanned = from.max(limit);
                        if buf.len() >= max {
                            let size = buf.len().max(max.saturating_add(1));
                            return Err(StompError::FrameTooLarge { size, max });
                        }
                        return Ok(None);
                    }
                }
            }
        };
        let partial = mem::take(&mut self.partial);
        // start <= nul < buf.len(): both were checked above.
        let bytes = buf.split_to(nul + 1).freeze();
        let body = bytes.slice(start..nul);
        Ok(Some(Item::Frame(Frame {
            command,
            headers: partial.headers,
            body,
        })))
    }

    fn check_size(&self, size: usize) -> Result<(), StompError> {
        let max = self.limits.max_frame_size;
        if size > max {
            return Err(StompError::FrameTooLarge { size, max });
        }
        Ok(())
    }
}

impl Default for Decoder {
    fn default() -> Decoder {
        Decoder::new(Limits::default())
    }
}

/// A heart-beat is a bare EOL where a command line would start.
fn heart_beat(buf: &[u8]) -> HeartBeat {
    match buf {
        [] | [b'\r'] => HeartBeat::NeedMore,
        [b'\n', ..] => HeartBeat::Found(1),
        [b'\r', b'\n', ..] => HeartBeat::Found(2),
        _ => HeartBeat::Absent,
    }
}

fn line_too_long(is_command: bool, line: &[u8], max: usize) -> StompError {
    if is_command {
        // No command is this long, so it cannot be a known one.
        StompError::UnknownCommand(snippet(line))
    } else {
        StompError::HeaderTooLong { max }
    }
}

#[cfg(test)]
#[path = "decoder_tests.rs"]
mod tests;
