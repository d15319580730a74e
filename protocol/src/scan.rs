//! Frame-boundary scanning without buffering or copying (PROTOCOL.md §3.1).
//!
//! A relay forwards the bytes it receives unchanged but must still know where frames start
//! and end (to count tokens, find END/ERROR, enforce limits, and to stop cleanly between
//! frames). [`FrameScanner`] follows the framing across arbitrary chunk boundaries; it keeps
//! at most one partial frame header ([`MAX_FRAME_HEADER_LEN`] bytes) and never the payload.

use crate::frame::{DecodeError, FrameHead, FrameType};
use crate::limits::MAX_FRAME_HEADER_LEN;

/// What the scanner saw in a chunk, in stream order.
#[derive(Debug, PartialEq, Eq)]
pub enum Scanned<'a> {
    /// A frame header completed; its payload follows.
    Start(FrameHead),
    /// Part (or all) of the current frame's payload.
    Payload(FrameType, &'a [u8]),
    /// The current frame's last payload byte was seen.
    End(FrameType),
}

/// Tracks frame boundaries across chunks. See the module docs.
#[derive(Debug, Default)]
pub struct FrameScanner {
    head: [u8; MAX_FRAME_HEADER_LEN],
    head_len: usize,
    current: Option<FrameType>,
    remaining: usize,
    /// Within the chunk last scanned: where the last frame that started in it started.
    last_start: Option<usize>,
    /// Within the chunk last scanned: where the last frame that ended in it ended.
    last_end: Option<usize>,
}

impl FrameScanner {
    /// A scanner at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the bytes scanned so far end exactly at a frame boundary.
    pub fn at_boundary(&self) -> bool {
        self.current.is_none() && self.head_len == 0
    }

    /// Offsets within the chunk last scanned with [`FrameScanner::scan_positions`]: where
    /// the last frame whose header began in it began, and where the last frame that ended in
    /// it ended. A relay that forwards whole frames only splits the chunk there (zero-copy
    /// slices).
    pub fn last_frame(&self) -> (Option<usize>, Option<usize>) {
        (self.last_start, self.last_end)
    }

    /// Scans `data`, calling `visit` for each event. Stops at the first error from the
    /// framing (`TooLarge`, `UnknownFrameType`) or from `visit`.
    pub fn scan<'a, E: From<DecodeError>>(
        &mut self,
        data: &'a [u8],
        visit: impl FnMut(Scanned<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.scan_inner::<false, E>(data, visit)
    }

    /// [`FrameScanner::scan`], also recording where frames start and end in `data`
    /// ([`FrameScanner::last_frame`]). A separate instantiation, so `scan` pays nothing.
    pub fn scan_positions<'a, E: From<DecodeError>>(
        &mut self,
        data: &'a [u8],
        visit: impl FnMut(Scanned<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.scan_inner::<true, E>(data, visit)
    }

    fn scan_inner<'a, const POS: bool, E: From<DecodeError>>(
        &mut self,
        mut data: &'a [u8],
        mut visit: impl FnMut(Scanned<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        let len = data.len();
        if POS {
            self.last_start = None;
            self.last_end = None;
        }
        while !data.is_empty() {
            if let Some(ty) = self.current {
                let take = self.remaining.min(data.len());
                let (payload, rest) = data.split_at(take);
                data = rest;
                self.remaining -= take;
                if take > 0 {
                    visit(Scanned::Payload(ty, payload))?;
                }
                if self.remaining == 0 {
                    self.current = None;
                    if POS {
                        self.last_end = Some(len - data.len());
                    }
                    visit(Scanned::End(ty))?;
                }
                continue;
            }
            if POS && self.head_len == 0 {
                self.last_start = Some(len - data.len());
            }
            // Accumulate header bytes (at most 16) until the header parses.
            let take = (MAX_FRAME_HEADER_LEN - self.head_len).min(data.len());
            self.head[self.head_len..self.head_len + take].copy_from_slice(&data[..take]);
            let buffered = self.head_len + take;
            match FrameHead::peek(&self.head[..buffered]) {
                Ok(head) => {
                    // Bytes of `data` that belonged to the header.
                    let used = head.header_len - self.head_len;
                    data = &data[used..];
                    self.head_len = 0;
                    self.current = Some(head.ty);
                    self.remaining = head.payload_len;
                    visit(Scanned::Start(head))?;
                    if head.payload_len == 0 {
                        self.current = None;
                        if POS {
                            self.last_end = Some(len - data.len());
                        }
                        visit(Scanned::End(head.ty))?;
                    }
                }
                Err(DecodeError::Incomplete) => {
                    self.head_len = buffered;
                    data = &data[take..];
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;
    use crate::frame::{End, FinishReason, Frame};

    fn stream() -> Vec<u8> {
        let mut out = Vec::new();
        Frame::Tokens(Bytes::from_static(b"hello ")).encode(&mut out);
        Frame::Unknown(FrameType(0x33)).encode(&mut out);
        Frame::Tokens(Bytes::from(vec![b'x'; 300])).encode(&mut out);
        Frame::End(End {
            finish_reason: FinishReason::Stop,
            prompt_tokens: 3,
            completion_tokens: 2,
            ttft_us: 10,
            total_us: 20,
        })
        .encode(&mut out);
        out
    }

    fn scan_in_pieces(data: &[u8], cuts: &[usize]) -> (Vec<(FrameType, Vec<u8>)>, bool) {
        let mut s = FrameScanner::new();
        let mut frames: Vec<(FrameType, Vec<u8>)> = Vec::new();
        let mut start = 0;
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        points.sort();
        points.push(data.len());
        for end in points {
            if end < start {
                continue;
            }
            s.scan::<DecodeError>(&data[start..end], |ev| {
                match ev {
                    Scanned::Start(h) => frames.push((h.ty, Vec::new())),
                    Scanned::Payload(_, p) => frames.last_mut().unwrap().1.extend_from_slice(p),
                    Scanned::End(_) => {}
                }
                Ok(())
            })
            .unwrap();
            start = end;
        }
        (frames, s.at_boundary())
    }

    proptest! {
        #[test]
        fn any_chunking_sees_the_same_frames(cuts in proptest::collection::vec(any::<usize>(), 0..12)) {
            let data = stream();
            let (whole, _) = scan_in_pieces(&data, &[]);
            let (pieces, boundary) = scan_in_pieces(&data, &cuts);
            prop_assert_eq!(whole.len(), 4);
            prop_assert_eq!(&whole, &pieces);
            prop_assert!(boundary);
            prop_assert_eq!(&pieces[2].1, &vec![b'x'; 300]);
        }
    }

    proptest! {
        /// What a whole-frames relay does: forward each chunk up to its last frame end, hold
        /// the rest back. Everything forwarded ends at a boundary and the bytes are the same.
        #[test]
        fn splitting_at_the_last_frame_end_forwards_whole_frames(cuts in proptest::collection::vec(any::<usize>(), 0..12)) {
            let data = stream();
            let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
            points.sort();
            points.push(data.len());
            let (mut s, mut start, mut sent, mut held) = (FrameScanner::new(), 0, Vec::new(), Vec::new());
            for end in points {
                let chunk = &data[start..end];
                start = end;
                s.scan_positions::<DecodeError>(chunk, |_| Ok(())).unwrap();
                let (first, last) = s.last_frame();
                if let Some(f) = first {
                    prop_assert!(f <= chunk.len());
                }
                match last {
                    Some(e) => {
                        sent.append(&mut held);
                        sent.extend_from_slice(&chunk[..e]);
                        held.extend_from_slice(&chunk[e..]);
                        let mut check = FrameScanner::new();
                        check.scan::<DecodeError>(&sent, |_| Ok(())).unwrap();
                        prop_assert!(check.at_boundary());
                    }
                    None => held.extend_from_slice(chunk),
                }
            }
            prop_assert!(held.is_empty());
            prop_assert_eq!(sent, data);
        }
    }

    #[test]
    fn mid_frame_is_not_a_boundary() {
        let data = stream();
        let mut s = FrameScanner::new();
        s.scan::<DecodeError>(&data[..3], |_| Ok(())).unwrap();
        assert!(!s.at_boundary());
    }

    #[test]
    fn oversized_header_is_rejected_mid_stream() {
        let mut data = Vec::new();
        crate::frame::encode_header(FrameType::TOKENS, 1 << 20, &mut data);
        let mut s = FrameScanner::new();
        let err = s.scan::<DecodeError>(&data, |_| Ok(())).unwrap_err();
        assert!(matches!(err, DecodeError::TooLarge { .. }));
    }
}
