//! Resource limits the decoder enforces while bytes arrive.

/// Bounds on what one frame may make the decoder buffer, so that a hostile peer
/// cannot grow memory without limit.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Whole frame: command line, headers, body and the terminating NUL.
    pub max_frame_size: usize,
    /// Number of header lines in one frame.
    pub max_headers: usize,
    /// Bytes of one header line, excluding its EOL, before unescaping.
    pub max_header_len: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_frame_size: 4 * 1024 * 1024,
            max_headers: 64,
            max_header_len: 8 * 1024,
        }
    }
}
