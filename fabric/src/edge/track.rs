//! Following a worker's response as it is relayed: frame boundaries, token count, the
//! terminal frame. Per chunk, in place: no buffering, copying or allocation (see the
//! `relay_allocations` test and the `relay` criterion bench).

use meridian_protocol::scan::{FrameScanner, Scanned};
use meridian_protocol::{DecodeError, FrameType};

/// A worker broke the framing rules on a request stream.
#[derive(Debug, PartialEq, Eq)]
pub enum UpstreamViolation {
    /// Undecodable framing.
    Decode(DecodeError),
    /// A frame that may not appear here.
    Unexpected(&'static str),
}

impl From<DecodeError> for UpstreamViolation {
    fn from(e: DecodeError) -> Self {
        UpstreamViolation::Decode(e)
    }
}

impl std::fmt::Display for UpstreamViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamViolation::Decode(e) => write!(f, "malformed frame from worker: {e}"),
            UpstreamViolation::Unexpected(m) => f.write_str(m),
        }
    }
}

/// State of one relayed response (PROTOCOL.md §4: `TOKENS* (END | ERROR)`).
#[derive(Debug, Default)]
pub struct ResponseTracker {
    scanner: FrameScanner,
    /// END or ERROR, once seen.
    terminal: Option<FrameType>,
    forwarded: usize,
}

impl ResponseTracker {
    /// A tracker at the start of a response.
    pub fn new() -> Self {
        Self::default()
    }

    /// Accounts for one chunk about to be forwarded; returns how many TOKENS frames start
    /// in it.
    pub fn on_chunk(&mut self, chunk: &[u8]) -> Result<u64, UpstreamViolation> {
        let mut tokens = 0u64;
        let terminal = &mut self.terminal;
        self.scanner.scan(chunk, |ev| {
            if let Scanned::Start(h) = ev {
                if terminal.is_some() {
                    return Err(UpstreamViolation::Unexpected("frame after END/ERROR"));
                }
                match h.ty {
                    FrameType::TOKENS => tokens += 1,
                    FrameType::END | FrameType::ERROR => *terminal = Some(h.ty),
                    t if !t.is_known() => {}
                    _ => {
                        return Err(UpstreamViolation::Unexpected(
                            "unexpected frame type from worker",
                        ))
                    }
                }
            }
            Ok(())
        })?;
        self.forwarded += chunk.len();
        Ok(tokens)
    }

    /// Bytes accounted so far.
    pub fn forwarded(&self) -> usize {
        self.forwarded
    }

    /// Whether what was forwarded ends at a frame boundary.
    pub fn at_boundary(&self) -> bool {
        self.scanner.at_boundary()
    }

    /// Whether the response is complete: END or ERROR seen, ending at a boundary.
    pub fn complete(&self) -> bool {
        self.terminal.is_some() && self.scanner.at_boundary()
    }

    /// Whether the worker ended the response with ERROR.
    pub fn ended_with_error(&self) -> bool {
        self.terminal == Some(FrameType::ERROR)
    }
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};
    use meridian_protocol::{ErrorCode, ErrorFrame, Frame};

    use super::*;

    #[test]
    fn counts_tokens_and_finds_the_end_across_chunks() {
        let mut b = BytesMut::new();
        for _ in 0..3 {
            Frame::Tokens(Bytes::from_static(b"tok ")).encode(&mut b);
        }
        Frame::Error(ErrorFrame::new(ErrorCode::OVERLOADED, "busy")).encode(&mut b);
        let mut t = ResponseTracker::new();
        let (a, rest) = b.split_at(8); // one whole frame and the header of the next
        assert_eq!(t.on_chunk(a).unwrap(), 2);
        assert!(!t.complete());
        assert_eq!(t.on_chunk(rest).unwrap(), 1);
        assert!(t.complete());
        assert_eq!(t.forwarded(), b.len());
        let more = Frame::Tokens(Bytes::from_static(b"x")).to_bytes();
        assert!(matches!(
            t.on_chunk(&more),
            Err(UpstreamViolation::Unexpected(_))
        ));
    }

    #[test]
    fn request_frames_from_a_worker_are_violations() {
        let mut t = ResponseTracker::new();
        let f = Frame::Body(Bytes::from_static(b"x")).to_bytes();
        assert!(t.on_chunk(&f).is_err());
    }
}
