//! END: successful completion (PROTOCOL.md §4.5).

use bytes::{BufMut, Bytes};

use super::wire::get_varint;
use super::DecodeError;
use crate::varint;

const FRAME: &str = "END";

/// Why generation stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// The model finished (stop sequence or end of text).
    Stop,
    /// `max_tokens` was reached.
    Length,
    /// A value this version does not know.
    Other(u64),
}

impl FinishReason {
    fn to_wire(self) -> u64 {
        match self {
            FinishReason::Stop => 0,
            FinishReason::Length => 1,
            FinishReason::Other(v) => v,
        }
    }

    /// The reason a wire value (END's first field) stands for.
    pub fn from_wire(v: u64) -> Self {
        match v {
            0 => FinishReason::Stop,
            1 => FinishReason::Length,
            v => FinishReason::Other(v),
        }
    }

    /// OpenAI-style name: `stop`, `length`, or `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Other(_) => "other",
        }
    }
}

/// Completion summary, the last frame of a successful request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct End {
    /// Why generation stopped.
    pub finish_reason: FinishReason,
    /// Prompt tokens the backend counted.
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub completion_tokens: u64,
    /// Worker-measured time to first token, microseconds.
    pub ttft_us: u64,
    /// Worker-measured total generation time, microseconds.
    pub total_us: u64,
}

impl End {
    pub(super) fn decode_payload(p: &mut Bytes) -> Result<Self, DecodeError> {
        Ok(End {
            finish_reason: FinishReason::from_wire(get_varint(p, FRAME)?),
            prompt_tokens: get_varint(p, FRAME)?,
            completion_tokens: get_varint(p, FRAME)?,
            ttft_us: get_varint(p, FRAME)?,
            total_us: get_varint(p, FRAME)?,
        })
    }

    fn values(&self) -> [u64; 5] {
        [
            self.finish_reason.to_wire(),
            self.prompt_tokens,
            self.completion_tokens,
            self.ttft_us,
            self.total_us,
        ]
    }

    pub(super) fn payload_len(&self) -> usize {
        self.values().iter().map(|v| varint::size(*v)).sum()
    }

    pub(super) fn encode_payload<B: BufMut>(&self, buf: &mut B) {
        for v in self.values() {
            varint::encode(v, buf);
        }
    }
}
