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

/// Bytes kept of the terminal frame's payload: END's first three varints (finish reason,
/// prompt and completion tokens) or ERROR's code fit in 24.
const TAIL: usize = 24;

/// State of one relayed response (PROTOCOL.md §4: `TOKENS* (END | ERROR)`).
#[derive(Debug, Default)]
pub struct ResponseTracker {
    scanner: FrameScanner,
    /// END or ERROR, once seen.
    terminal: Option<FrameType>,
    /// The terminal frame's last byte was seen.
    terminal_ended: bool,
    forwarded: usize,
    /// The start of the terminal frame's payload (fixed size: no allocation).
    tail: [u8; TAIL],
    tail_len: usize,
}

impl ResponseTracker {
    /// A tracker at the start of a response.
    pub fn new() -> Self {
        Self::default()
    }

    /// Accounts for one chunk about to be forwarded; returns how many TOKENS frames start
    /// in it.
    pub fn on_chunk(&mut self, chunk: &[u8]) -> Result<u64, UpstreamViolation> {
        self.track::<false>(chunk, None)
    }

    /// [`ResponseTracker::on_chunk`], also appending TOKENS text to `transcript` (a
    /// resumable stream).
    pub fn on_chunk_into(
        &mut self,
        chunk: &[u8],
        transcript: &mut super::resume::Transcript,
    ) -> Result<u64, UpstreamViolation> {
        self.track::<true>(chunk, Some(transcript))
    }

    /// Within the chunk last accounted: where its last frame start and last frame end are
    /// ([`meridian_protocol::scan::FrameScanner::last_frame`]).
    pub fn last_frame(&self) -> (Option<usize>, Option<usize>) {
        self.scanner.last_frame()
    }

    /// One instantiation per kind of stream: a non-resumable one pays for nothing here.
    #[inline(always)]
    fn track<const RESUMABLE: bool>(
        &mut self,
        chunk: &[u8],
        mut transcript: Option<&mut super::resume::Transcript>,
    ) -> Result<u64, UpstreamViolation> {
        let mut tokens = 0u64;
        let terminal = &mut self.terminal;
        let terminal_ended = &mut self.terminal_ended;
        let (tail, tail_len) = (&mut self.tail, &mut self.tail_len);
        let visit = |ev: Scanned<'_>| {
            if let Some(t) = transcript.as_deref_mut().filter(|_| RESUMABLE) {
                match ev {
                    Scanned::Payload(FrameType::TOKENS, p) => {
                        t.payload(p);
                    }
                    Scanned::End(FrameType::TOKENS) => t.frame_end(),
                    _ => {}
                }
            }
            if let Scanned::End(FrameType::END | FrameType::ERROR) = ev {
                *terminal_ended = true;
            }
            if let Scanned::Payload(FrameType::END | FrameType::ERROR, p) = ev {
                let take = (TAIL - *tail_len).min(p.len());
                tail[*tail_len..*tail_len + take].copy_from_slice(&p[..take]);
                *tail_len += take;
            }
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
        };
        if RESUMABLE {
            self.scanner.scan_positions(chunk, visit)?;
        } else {
            self.scanner.scan(chunk, visit)?;
        }
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

    /// Whether the whole terminal frame (END or ERROR) was seen, even if bytes followed it.
    pub fn terminal_ended(&self) -> bool {
        self.terminal_ended
    }

    /// Whether the worker ended the response with ERROR.
    pub fn ended_with_error(&self) -> bool {
        self.terminal == Some(FrameType::ERROR)
    }

    /// The worker's ERROR code, once the frame's first payload bytes were seen.
    pub fn error_code(&self) -> Option<meridian_protocol::ErrorCode> {
        if !self.ended_with_error() {
            return None;
        }
        let (code, _) = meridian_protocol::varint::peek(&self.tail[..self.tail_len])?;
        Some(meridian_protocol::ErrorCode(code))
    }

    /// Whether the worker's ERROR has its retryable flag set (PROTOCOL.md §4.6).
    pub fn error_retryable(&self) -> bool {
        if !self.ended_with_error() {
            return false;
        }
        let tail = &self.tail[..self.tail_len];
        let Some((_, n)) = meridian_protocol::varint::peek(tail) else {
            return false;
        };
        meridian_protocol::varint::peek(&tail[n..]).is_some_and(|(flags, _)| flags & 1 == 1)
    }

    /// END's completion token count (PROTOCOL.md §4.5), once seen: the real number of tokens
    /// generated, which TOKENS frames (one or more tokens each) only bound from below.
    pub fn completion_tokens(&self) -> Option<u64> {
        self.end_field(2)
    }

    /// END's prompt token count, once seen.
    pub fn prompt_tokens(&self) -> Option<u64> {
        self.end_field(1)
    }

    /// END's finish reason, once seen.
    pub fn finish_reason(&self) -> Option<meridian_protocol::FinishReason> {
        self.end_field(0)
            .map(meridian_protocol::FinishReason::from_wire)
    }

    /// END's `i`-th varint field (finish reason, prompt tokens, completion tokens).
    fn end_field(&self, i: usize) -> Option<u64> {
        if self.terminal != Some(FrameType::END) {
            return None;
        }
        let mut rest = &self.tail[..self.tail_len];
        let mut field = 0;
        for _ in 0..=i {
            let (v, n) = meridian_protocol::varint::peek(rest)?;
            field = v;
            rest = &rest[n..];
        }
        Some(field)
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
    fn reads_the_end_token_count_and_the_error_code_at_any_split() {
        let end = Frame::End(meridian_protocol::End {
            finish_reason: meridian_protocol::FinishReason::Stop,
            prompt_tokens: 300,
            completion_tokens: 70_000,
            ttft_us: 5,
            total_us: 9,
        })
        .to_bytes();
        let err = Frame::Error(ErrorFrame::new(ErrorCode::UNAVAILABLE, "draining")).to_bytes();
        for split in 0..=end.len() {
            let mut t = ResponseTracker::new();
            t.on_chunk(&end[..split]).unwrap();
            t.on_chunk(&end[split..]).unwrap();
            assert_eq!(t.completion_tokens(), Some(70_000), "split {split}");
            assert_eq!(t.error_code(), None);
        }
        let mut t = ResponseTracker::new();
        t.on_chunk(&err).unwrap();
        assert_eq!(t.error_code(), Some(ErrorCode::UNAVAILABLE));
        assert!(t.error_retryable());
        let mut final_err = ErrorFrame::new(ErrorCode::UNAVAILABLE, "no");
        final_err.retryable = false;
        let mut t = ResponseTracker::new();
        t.on_chunk(&Frame::Error(final_err).to_bytes()).unwrap();
        assert!(!t.error_retryable());
        assert_eq!(t.completion_tokens(), None);
    }

    #[test]
    fn request_frames_from_a_worker_are_violations() {
        let mut t = ResponseTracker::new();
        let f = Frame::Body(Bytes::from_static(b"x")).to_bytes();
        assert!(t.on_chunk(&f).is_err());
    }
}
