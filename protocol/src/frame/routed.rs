//! ROUTED: where the edge sent the request (PROTOCOL.md §4.3).

use bytes::{BufMut, Bytes};

use super::wire::{bytes_len, get_string, get_varint, put_bytes};
use super::DecodeError;
use crate::limits::MAX_NAME_LEN;
use crate::varint;

const FRAME: &str = "ROUTED";

/// The region and worker serving a request. Sent by the edge before any TOKENS; sent again
/// with a higher `attempt` if the edge retried on another worker before the first token, or
/// — for a resumable request (PROTOCOL.md §4.10) — with `resumed_at` set when another worker
/// continues the answer after TOKENS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routed {
    /// Region name.
    pub region: String,
    /// Worker name.
    pub worker: String,
    /// 1 for the first attempt, incremented on each retry.
    pub attempt: u64,
    /// Set on a resumption: how many TOKENS frames the client had received when this worker
    /// took over the answer (an optional trailing field).
    pub resumed_at: Option<u64>,
}

impl Routed {
    pub(super) fn decode_payload(p: &mut Bytes) -> Result<Self, DecodeError> {
        let region = get_string(p, FRAME, "region", MAX_NAME_LEN)?;
        let worker = get_string(p, FRAME, "worker", MAX_NAME_LEN)?;
        let attempt = get_varint(p, FRAME)?;
        // An optional trailing field; bytes after it stay reserved and are ignored (and
        // bytes that are not a varint are ignored as before the field existed).
        let resumed_at = crate::varint::peek(p).map(|(v, _)| v);
        Ok(Routed {
            region,
            worker,
            attempt,
            resumed_at,
        })
    }

    pub(super) fn payload_len(&self) -> usize {
        bytes_len(self.region.as_bytes())
            + bytes_len(self.worker.as_bytes())
            + varint::size(self.attempt)
            + self
                .resumed_at
                .map_or(0, |v| varint::size(v.min(varint::MAX)))
    }

    pub(super) fn encode_payload<B: BufMut>(&self, buf: &mut B) {
        put_bytes(buf, self.region.as_bytes());
        put_bytes(buf, self.worker.as_bytes());
        varint::encode(self.attempt, buf);
        if let Some(v) = self.resumed_at {
            varint::encode(v.min(varint::MAX), buf);
        }
    }
}
