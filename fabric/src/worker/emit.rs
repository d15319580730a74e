//! Writing a response on a worker's request stream: TOKENS frames as the backend produces
//! text, then END with counts and timings. Shared by every backend.

use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use meridian_protocol::frame::encode_header;
use meridian_protocol::{End, ErrorFrame, FinishReason, Frame, FrameType};
use quinn::SendStream;

use super::stats::{Event, WorkerStats};

/// Why generation stopped early.
#[derive(Debug)]
pub(crate) enum GenError {
    /// The edge stopped the stream (the client went away).
    Cancelled,
    /// The backend failed: answer with this ERROR.
    Failed(ErrorFrame),
}

/// Frames one response onto `send`.
pub(crate) struct Emitter<'a> {
    send: &'a mut SendStream,
    stats: &'a WorkerStats,
    buf: BytesMut,
    received: Instant,
    first: Option<Duration>,
    pub tokens: u64,
}

impl<'a> Emitter<'a> {
    pub(crate) fn new(send: &'a mut SendStream, stats: &'a WorkerStats, received: Instant) -> Self {
        Emitter {
            send,
            stats,
            buf: BytesMut::with_capacity(4096),
            received,
            first: None,
            tokens: 0,
        }
    }

    /// Sends one TOKENS frame carrying `text` (one or more tokens).
    pub(crate) async fn token(&mut self, text: &[u8]) -> Result<(), GenError> {
        encode_header(FrameType::TOKENS, text.len(), &mut self.buf);
        self.buf.put_slice(text);
        self.send
            .write_chunk(self.buf.split().freeze())
            .await
            .map_err(|_| GenError::Cancelled)?;
        self.stats.record(Event::Token);
        self.tokens += 1;
        self.first.get_or_insert_with(|| self.received.elapsed());
        Ok(())
    }

    /// Sends END.
    pub(crate) async fn end(
        mut self,
        finish_reason: FinishReason,
        prompt_tokens: u64,
        completion_tokens: u64,
    ) -> Result<(), GenError> {
        // Counts may come from the backend's JSON (any u64): clamp to what a varint carries.
        let end = End {
            finish_reason,
            prompt_tokens: prompt_tokens.min(meridian_protocol::varint::MAX),
            completion_tokens: completion_tokens.min(meridian_protocol::varint::MAX),
            ttft_us: self.first.unwrap_or_default().as_micros() as u64,
            total_us: self.received.elapsed().as_micros() as u64,
        };
        Frame::End(end).encode(&mut self.buf);
        self.send
            .write_chunk(self.buf.split().freeze())
            .await
            .map_err(|_| GenError::Cancelled)
    }
}
