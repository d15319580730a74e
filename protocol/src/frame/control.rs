//! Control stream frames: SETTINGS, LOAD, GOAWAY (PROTOCOL.md §5).

use bytes::{Buf, BufMut, Bytes};

use super::wire::get_varint;
use super::DecodeError;
use crate::varint;

/// Setting ids (PROTOCOL.md §5.2).
mod id {
    pub const MAX_CONCURRENT_REQUESTS: u64 = 0x1;
    pub const MAX_PROMPT_BYTES: u64 = 0x2;
}

/// An endpoint's advertised limits; the first frame on its control stream. Absent settings
/// take their defaults; unknown ids are ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    /// Most requests the sender serves at once (a worker's capacity; used for load bounds).
    pub max_concurrent_requests: Option<u64>,
    /// Largest prompt the sender accepts, in bytes.
    pub max_prompt_bytes: Option<u64>,
}

impl Settings {
    pub(super) fn decode_payload(p: &mut Bytes) -> Result<Self, DecodeError> {
        let mut s = Settings::default();
        while p.has_remaining() {
            let key = get_varint(p, "SETTINGS")?;
            let value = get_varint(p, "SETTINGS")?;
            let slot = match key {
                id::MAX_CONCURRENT_REQUESTS => &mut s.max_concurrent_requests,
                id::MAX_PROMPT_BYTES => &mut s.max_prompt_bytes,
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(DecodeError::Malformed {
                    frame: "SETTINGS",
                    reason: "repeated setting",
                });
            }
        }
        Ok(s)
    }

    fn pairs(&self) -> impl Iterator<Item = (u64, u64)> {
        [
            self.max_concurrent_requests
                .map(|v| (id::MAX_CONCURRENT_REQUESTS, v)),
            self.max_prompt_bytes.map(|v| (id::MAX_PROMPT_BYTES, v)),
        ]
        .into_iter()
        .flatten()
    }

    pub(super) fn payload_len(&self) -> usize {
        self.pairs()
            .map(|(k, v)| varint::size(k) + varint::size(v))
            .sum()
    }

    pub(super) fn encode_payload<B: BufMut>(&self, buf: &mut B) {
        for (k, v) in self.pairs() {
            varint::encode(k, buf);
            varint::encode(v, buf);
        }
    }
}

/// A worker's load report, sent on its control stream whenever its load changes (at most
/// every report interval).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Load {
    /// Requests being generated now, across all connected edges.
    pub in_flight: u64,
    /// Requests accepted but waiting for a generation slot.
    pub queue_depth: u64,
    /// Tokens generated per second over the last interval.
    pub tokens_per_s: u64,
}

impl Load {
    pub(super) fn decode_payload(p: &mut Bytes) -> Result<Self, DecodeError> {
        Ok(Load {
            in_flight: get_varint(p, "LOAD")?,
            queue_depth: get_varint(p, "LOAD")?,
            tokens_per_s: get_varint(p, "LOAD")?,
        })
    }

    pub(super) fn payload_len(&self) -> usize {
        varint::size(self.in_flight)
            + varint::size(self.queue_depth)
            + varint::size(self.tokens_per_s)
    }

    pub(super) fn encode_payload<B: BufMut>(&self, buf: &mut B) {
        varint::encode(self.in_flight, buf);
        varint::encode(self.queue_depth, buf);
        varint::encode(self.tokens_per_s, buf);
    }
}

/// The sender is draining: open no new request streams on this connection; requests
/// already in progress complete.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoAway;

impl GoAway {
    pub(super) fn decode_payload(_p: &mut Bytes) -> Result<Self, DecodeError> {
        Ok(GoAway)
    }

    pub(super) fn payload_len(&self) -> usize {
        0
    }

    pub(super) fn encode_payload<B: BufMut>(&self, _buf: &mut B) {}
}
