//! ERROR: failure, the last frame of a failed request (PROTOCOL.md §4.6).

use bytes::{BufMut, Bytes};

use super::wire::{bytes_len, get_string, get_varint, put_bytes};
use super::DecodeError;
use crate::limits::MAX_ERROR_MESSAGE_LEN;
use crate::{varint, ErrorCode};

const FRAME: &str = "ERROR";
const FLAG_RETRYABLE: u64 = 0x1;

/// A request's failure: stable code, whether retrying may help, human-readable message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorFrame {
    /// The stable error code.
    pub code: ErrorCode,
    /// Whether sending the same request again may succeed.
    pub retryable: bool,
    /// Human-readable detail, at most 1024 bytes of UTF-8.
    pub message: String,
    /// How long the client should wait before retrying, in milliseconds (RATE_LIMITED,
    /// OVERLOADED); `None` when the sender gives no hint. PROTOCOL.md §4.6.
    pub retry_after_ms: Option<u64>,
}

impl ErrorFrame {
    /// An error with the code's default retryability. Long messages are cut at a UTF-8
    /// boundary to fit the limit.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > MAX_ERROR_MESSAGE_LEN {
            let mut cut = MAX_ERROR_MESSAGE_LEN;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        ErrorFrame {
            code,
            retryable: code.default_retryable(),
            message,
            retry_after_ms: None,
        }
    }

    /// The same error with a retry-after hint (capped at 2^62 − 1 ms).
    pub fn retry_after(mut self, ms: u64) -> Self {
        self.retry_after_ms = Some(ms.min(varint::MAX));
        self
    }

    pub(super) fn decode_payload(p: &mut Bytes) -> Result<Self, DecodeError> {
        let code = ErrorCode(get_varint(p, FRAME)?);
        let flags = get_varint(p, FRAME)?;
        let message = get_string(p, FRAME, "message", MAX_ERROR_MESSAGE_LEN)?;
        // An optional trailing field; bytes after it stay reserved and are ignored.
        let retry_after_ms = if p.is_empty() {
            None
        } else {
            Some(get_varint(p, FRAME)?)
        };
        Ok(ErrorFrame {
            code,
            retryable: flags & FLAG_RETRYABLE != 0,
            message,
            retry_after_ms,
        })
    }

    fn flags(&self) -> u64 {
        if self.retryable {
            FLAG_RETRYABLE
        } else {
            0
        }
    }

    pub(super) fn payload_len(&self) -> usize {
        varint::size(self.code.0)
            + varint::size(self.flags())
            + bytes_len(self.message.as_bytes())
            + self
                .retry_after_ms
                .map_or(0, |v| varint::size(v.min(varint::MAX)))
    }

    pub(super) fn encode_payload<B: BufMut>(&self, buf: &mut B) {
        varint::encode(self.code.0, buf);
        varint::encode(self.flags(), buf);
        put_bytes(buf, self.message.as_bytes());
        if let Some(v) = self.retry_after_ms {
            varint::encode(v.min(varint::MAX), buf);
        }
    }
}
