//! Resumable streams (PROTOCOL.md §4.10): what the edge keeps of an answer so another worker
//! can finish it, and the bounds on that.
//!
//! Only a stream whose HEADERS asked for it pays anything. Its relay forwards whole frames
//! only (a frame split across chunks is held back as zero-copy slices until it is complete),
//! so a worker failing mid-frame leaves the client at a frame boundary; and the text of every
//! TOKENS frame forwarded is appended to a [`Transcript`], bounded per stream and across the
//! edge. Past either bound the stream is no longer resumable and a failure ends it with
//! UPSTREAM_FAILED, as for any other stream.

use std::fmt::Write;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::sync::{ByteBudget, Reservation};

/// The transcript grows its reservation of the edge-wide budget in steps of this many bytes
/// (one atomic update per step, not per token).
const STEP: u64 = 4096;

/// The edge-wide resumption budget and counters (`meridian_resume*` metrics).
#[derive(Debug)]
pub struct ResumeStats {
    /// Answer text held across every resumable stream (`[edge] resume_buffer_total_bytes`).
    pub budget: Arc<ByteBudget>,
    /// Continuations dispatched to another worker.
    pub resumed: AtomicU64,
    /// Resumptions that found no allowed worker, or whose attempts ran out.
    pub exhausted: AtomicU64,
    /// Continuations a worker refused (it cannot continue the request faithfully).
    pub refused: AtomicU64,
    /// Streams that outgrew a bound and stopped being resumable.
    pub over_bound: AtomicU64,
}

impl ResumeStats {
    /// Counters at zero and a budget of `max` bytes.
    pub fn new(max: u64) -> Self {
        ResumeStats {
            budget: ByteBudget::new(max),
            resumed: AtomicU64::new(0),
            exhausted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            over_bound: AtomicU64::new(0),
        }
    }

    /// Appends the families to `out` (Prometheus text format).
    pub(crate) fn render(&self, out: &mut String) {
        let name = "meridian_resumes_total";
        let _ = writeln!(
            out,
            "# HELP {name} Resumable streams whose worker failed after tokens, by what happened.\n# TYPE {name} counter"
        );
        for (result, c) in [
            ("resumed", &self.resumed),
            ("exhausted", &self.exhausted),
            ("refused", &self.refused),
            ("over_bound", &self.over_bound),
        ] {
            let _ = writeln!(out, "{name}{{result=\"{result}\"}} {}", c.load(Relaxed));
        }
        let name = "meridian_resume_buffer_bytes";
        let _ = writeln!(
            out,
            "# HELP {name} Answer text held to resume streams, bytes (reserved in 4 KiB steps).\n# TYPE {name} gauge\n{name} {}",
            self.budget.used()
        );
    }
}

/// The answer text forwarded so far on one resumable stream, in whole TOKENS frames.
#[derive(Debug)]
pub struct Transcript {
    text: BytesMut,
    /// Bytes of `text` from frames that ended; the rest is the frame in flight.
    committed: usize,
    /// TOKENS frames that ended: the token offset a continuation starts at.
    frames: u64,
    max: usize,
    held: Reservation,
    /// A bound was passed: the text is dropped and the stream is no longer resumable.
    over: bool,
}

impl Transcript {
    /// An empty transcript of at most `max` bytes, charged to `stats.budget`. Allocates
    /// nothing until text arrives.
    pub fn new(max: usize, stats: &ResumeStats) -> Self {
        Transcript {
            text: BytesMut::new(),
            committed: 0,
            frames: 0,
            max,
            held: ByteBudget::reservation(&stats.budget),
            over: false,
        }
    }

    /// Appends part of a TOKENS payload; returns false the first time a bound is passed.
    pub fn payload(&mut self, p: &[u8]) -> bool {
        if self.over {
            return true;
        }
        let need = self.text.len() + p.len();
        if need > self.max {
            return self.give_up();
        }
        while self.held.held() < need as u64 {
            let step = STEP.min(self.max as u64 - self.held.held()).max(1);
            if !self.held.grow(step) {
                return self.give_up();
            }
        }
        self.text.extend_from_slice(p);
        true
    }

    fn give_up(&mut self) -> bool {
        self.over = true;
        self.text = BytesMut::new();
        self.committed = 0;
        self.held.release();
        false
    }

    /// A TOKENS frame ended.
    pub fn frame_end(&mut self) {
        self.committed = self.text.len();
        self.frames += 1;
    }

    /// The frame in flight will never be forwarded (its worker failed): forget its text.
    pub fn abandon_partial(&mut self) {
        self.text.truncate(self.committed);
    }

    /// Whether the stream can still be resumed.
    pub fn usable(&self) -> bool {
        !self.over
    }

    /// TOKENS frames forwarded: where a continuation takes over.
    pub fn offset(&self) -> u64 {
        self.frames
    }

    /// The forwarded text, copied once for a continuation request.
    pub fn text(&self) -> Bytes {
        Bytes::copy_from_slice(&self.text[..self.committed])
    }
}

/// Lets only whole frames through to the client: a frame split across chunks is held back
/// (as zero-copy slices of the chunks) until its last byte arrives.
#[derive(Debug, Default)]
pub struct FrameGate {
    /// Pieces of the frame in flight.
    pending: Vec<Bytes>,
}

impl FrameGate {
    /// A gate holding nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Splits `chunk`, just accounted by `tracker`, into what may go out now: pushes the held
    /// pieces and then the chunk's whole frames onto `out` (in order) and holds the rest.
    /// With `drop_terminal`, the response's last frame (a complete END or ERROR) is withheld
    /// and discarded instead. No copy; no allocation once `out` and the gate have capacity.
    pub fn admit(
        &mut self,
        tracker: &super::ResponseTracker,
        mut chunk: Bytes,
        drop_terminal: bool,
        out: &mut Vec<Bytes>,
    ) {
        let (start, end) = tracker.last_frame();
        if drop_terminal {
            // The terminal frame is the last one: what precedes its start goes out.
            if let Some(s) = start {
                out.append(&mut self.pending);
                if s > 0 {
                    out.push(chunk.split_to(s));
                }
            }
            self.pending.clear();
            return;
        }
        match end {
            Some(e) => {
                out.append(&mut self.pending);
                let head = chunk.split_to(e);
                if !head.is_empty() {
                    out.push(head);
                }
                if !chunk.is_empty() {
                    self.pending.push(chunk);
                }
            }
            None if !chunk.is_empty() => self.pending.push(chunk),
            None => {}
        }
    }

    /// Forgets the frame in flight (its worker failed; it never reaches the client).
    pub fn abandon(&mut self) {
        self.pending.clear();
    }
}

/// Per-stream state of a resumable request across its attempts.
#[derive(Debug)]
pub(crate) struct Resume {
    pub transcript: Transcript,
    pub gate: FrameGate,
    /// Pieces ready to go out (reused, so forwarding allocates nothing per chunk).
    pub ready: Vec<Bytes>,
    /// Whether any worker byte reached the client (then a failure resumes, not retries).
    pub started: bool,
}

impl Resume {
    pub(crate) fn new(max: usize, stats: &ResumeStats) -> Self {
        Resume {
            transcript: Transcript::new(max, stats),
            gate: FrameGate::new(),
            ready: Vec::new(),
            started: false,
        }
    }

    /// The worker failed: the frame in flight and its text are dropped.
    pub(crate) fn abandon(&mut self) {
        self.gate.abandon();
        self.transcript.abandon_partial();
    }
}

#[cfg(test)]
mod tests {
    use meridian_protocol::{ErrorCode, ErrorFrame, Frame};

    use super::*;
    use crate::edge::ResponseTracker;

    /// Feeds `stream` cut at `cuts` through a tracker and a gate; returns what went out.
    fn gate_through(stream: &Bytes, cuts: &[usize], drop_terminal: bool) -> Vec<u8> {
        let (mut t, mut gate, mut out) = (ResponseTracker::new(), FrameGate::new(), Vec::new());
        let stats = ResumeStats::new(1 << 20);
        let mut transcript = Transcript::new(1 << 16, &stats);
        let mut at = 0;
        for &cut in cuts.iter().chain([&stream.len()]) {
            let chunk = stream.slice(at..cut);
            at = cut;
            t.on_chunk_into(&chunk, &mut transcript).unwrap();
            let last = at == stream.len();
            gate.admit(&t, chunk, drop_terminal && last, &mut out);
        }
        out.iter().flat_map(|b| b.to_vec()).collect()
    }

    #[test]
    fn the_gate_lets_whole_frames_through_at_any_split() {
        let mut s = bytes::BytesMut::new();
        Frame::Tokens(Bytes::from_static(b"one ")).encode(&mut s);
        Frame::Unknown(meridian_protocol::FrameType(0x21)).encode(&mut s);
        Frame::Tokens(Bytes::from(vec![b'x'; 300])).encode(&mut s);
        let before_error = s.len();
        Frame::Error(ErrorFrame::new(ErrorCode::UPSTREAM_FAILED, "backend broke")).encode(&mut s);
        let stream = s.freeze();
        for a in 0..stream.len() {
            for b in [a, a + 1, a + 7, stream.len() - 1] {
                let cuts = [a, b.clamp(a, stream.len())];
                assert_eq!(
                    gate_through(&stream, &cuts, false),
                    stream.to_vec(),
                    "cuts {cuts:?}"
                );
                // A retryable ERROR to be resumed past: everything before it, nothing of it.
                let kept = gate_through(&stream, &cuts, true);
                assert_eq!(kept, stream[..before_error].to_vec(), "cuts {cuts:?}");
            }
        }
    }

    #[test]
    fn keeps_whole_frames_within_both_bounds() {
        let stats = ResumeStats::new(64 << 10);
        let mut t = Transcript::new(10_000, &stats);
        assert!(t.payload(b"hello "));
        t.frame_end();
        assert!(t.payload(b"wor"));
        t.abandon_partial();
        assert_eq!((&t.text()[..], t.offset()), (&b"hello "[..], 1));
        assert_eq!(stats.budget.used(), STEP, "reserved in steps");
        // Past the per-stream bound: dropped, budget returned, no longer resumable.
        assert!(!t.payload(&[b'x'; 10_000]));
        assert!(!t.usable() && t.text().is_empty());
        assert_eq!(stats.budget.used(), 0);
        assert!(t.payload(b"ignored"), "reported once");
        // Past the edge-wide bound.
        let small = ResumeStats::new(STEP);
        let mut a = Transcript::new(1 << 20, &small);
        assert!(a.payload(&[b'a'; 4000]));
        let mut b = Transcript::new(1 << 20, &small);
        assert!(!b.payload(b"b"), "the budget is spent by a");
        assert!(a.usable() && !b.usable());
        drop(a);
        assert_eq!(small.budget.used(), 0);
    }
}
