//! Frames (PROTOCOL.md §3–§5): `type varint, length varint, payload`.
//!
//! The codec is sans-IO: bytes in through [`bytes::Buf`], frames out; frames in, bytes out
//! through [`bytes::BufMut`]. [`FrameHead::peek`] checks that a whole frame is buffered
//! before anything is allocated, so a peer cannot make the decoder buffer more than
//! [`crate::limits::MAX_FRAME_PAYLOAD`] plus a header.

mod control;
mod end;
mod error;
mod headers;
mod routed;
mod wire;

use bytes::{Buf, BufMut, Bytes};

pub use control::{GoAway, Load, Settings};
pub use end::{End, FinishReason};
pub use error::ErrorFrame;
pub use headers::{
    body_format, for_upstream, rewrite, with_trace_context, Credential, RequestHeaders, ResumeFrom,
    Rewrite,
};
pub use routed::Routed;

use crate::limits::{MAX_FRAME_HEADER_LEN, MAX_FRAME_PAYLOAD, MAX_HEADERS_LEN};
use crate::{varint, ErrorCode};

/// Frame type codes (PROTOCOL.md §3.2). Types below [`FrameType::FIRST_EXTENSION`] that this
/// version does not define are errors; types at or above it are skipped.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct FrameType(pub u64);

impl FrameType {
    /// Request headers (client → server, first on a request stream).
    pub const HEADERS: FrameType = FrameType(0x01);
    /// Opaque prompt bytes (client → server).
    pub const BODY: FrameType = FrameType(0x02);
    /// Where the edge routed the request (server → client).
    pub const ROUTED: FrameType = FrameType(0x03);
    /// Generated text (server → client).
    pub const TOKENS: FrameType = FrameType(0x04);
    /// Successful completion (server → client, last).
    pub const END: FrameType = FrameType(0x05);
    /// Failure (server → client, last).
    pub const ERROR: FrameType = FrameType(0x06);
    /// Control stream: endpoint settings (first frame).
    pub const SETTINGS: FrameType = FrameType(0x10);
    /// Control stream: worker load report.
    pub const LOAD: FrameType = FrameType(0x11);
    /// Control stream: the sender is draining.
    pub const GOAWAY: FrameType = FrameType(0x12);
    /// First type of the extension range: unknown types from here on are skipped.
    pub const FIRST_EXTENSION: u64 = 0x20;

    /// The frame type's name, for logs and errors.
    pub fn name(self) -> &'static str {
        match self {
            Self::HEADERS => "HEADERS",
            Self::BODY => "BODY",
            Self::ROUTED => "ROUTED",
            Self::TOKENS => "TOKENS",
            Self::END => "END",
            Self::ERROR => "ERROR",
            Self::SETTINGS => "SETTINGS",
            Self::LOAD => "LOAD",
            Self::GOAWAY => "GOAWAY",
            _ => "UNKNOWN",
        }
    }

    /// Whether this version defines the type.
    pub fn is_known(self) -> bool {
        self.name() != "UNKNOWN"
    }
}

/// One decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// HEADERS.
    Headers(RequestHeaders),
    /// BODY: opaque prompt bytes.
    Body(Bytes),
    /// ROUTED.
    Routed(Routed),
    /// TOKENS: UTF-8 text of one or more tokens.
    Tokens(Bytes),
    /// END.
    End(End),
    /// ERROR.
    Error(ErrorFrame),
    /// SETTINGS.
    Settings(Settings),
    /// LOAD.
    Load(Load),
    /// GOAWAY.
    GoAway(GoAway),
    /// A frame of an extension type this version does not know; its payload was skipped.
    Unknown(FrameType),
}

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The buffer ends before the frame does: read more bytes and try again.
    #[error("incomplete frame")]
    Incomplete,
    /// A frame's declared length exceeds the limit: close the stream with `TOO_LARGE`.
    #[error("{ty} frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Name of the frame type.
        ty: &'static str,
        /// Declared payload length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// A field exceeds its limit: reject the request with `TOO_LARGE`.
    #[error("field `{field}` of {len} bytes exceeds the {max}-byte limit")]
    FieldTooLong {
        /// Field name.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A frame type below the extension range that this version does not define: close the
    /// stream with `PROTOCOL_ERROR`.
    #[error("unknown frame type {0:#x} outside the extension range")]
    UnknownFrameType(u64),
    /// The payload does not hold what its type requires: close with `PROTOCOL_ERROR`.
    #[error("malformed {frame} frame: {reason}")]
    Malformed {
        /// Name of the frame type.
        frame: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// A field's value is invalid: reject the request with `BAD_REQUEST`.
    #[error("invalid field `{field}`: {reason}")]
    InvalidField {
        /// Field name.
        field: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
}

impl DecodeError {
    /// The wire code a receiver answers this error with.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::Incomplete => ErrorCode::PROTOCOL_ERROR,
            DecodeError::TooLarge { .. } | DecodeError::FieldTooLong { .. } => ErrorCode::TOO_LARGE,
            DecodeError::UnknownFrameType(_) | DecodeError::Malformed { .. } => {
                ErrorCode::PROTOCOL_ERROR
            }
            DecodeError::InvalidField { .. } => ErrorCode::BAD_REQUEST,
        }
    }
}

/// A frame's type and extent, read without consuming anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHead {
    /// The frame type.
    pub ty: FrameType,
    /// Bytes of the type and length varints.
    pub header_len: usize,
    /// Bytes of payload.
    pub payload_len: usize,
}

impl FrameHead {
    /// Reads a frame header from the front of `src` and checks the declared length against
    /// the limits. `Incomplete` means the header itself is not yet whole; whether the
    /// payload is whole is [`FrameHead::total_len`] against the bytes buffered.
    pub fn peek(src: &[u8]) -> Result<FrameHead, DecodeError> {
        let (ty, n1) = varint::peek(src).ok_or(DecodeError::Incomplete)?;
        let (len, n2) = varint::peek(&src[n1..]).ok_or(DecodeError::Incomplete)?;
        let ty = FrameType(ty);
        let max = if ty == FrameType::HEADERS {
            MAX_HEADERS_LEN
        } else {
            MAX_FRAME_PAYLOAD
        };
        if len > max as u64 {
            return Err(DecodeError::TooLarge {
                ty: ty.name(),
                len,
                max,
            });
        }
        if ty.0 < FrameType::FIRST_EXTENSION && !ty.is_known() {
            return Err(DecodeError::UnknownFrameType(ty.0));
        }
        Ok(FrameHead {
            ty,
            header_len: n1 + n2,
            payload_len: len as usize,
        })
    }

    /// Header plus payload bytes.
    pub fn total_len(&self) -> usize {
        self.header_len + self.payload_len
    }
}

impl Frame {
    /// Decodes one frame from the front of `buf`, consuming it only when it is whole.
    ///
    /// `BODY` and `TOKENS` payloads are taken with [`Buf::copy_to_bytes`], which for
    /// `Bytes`/`BytesMut` is a zero-copy slice.
    pub fn decode<B: Buf>(buf: &mut B) -> Result<Frame, DecodeError> {
        let mut head_bytes = [0u8; MAX_FRAME_HEADER_LEN];
        let n = wire::peek_prefix(buf, &mut head_bytes);
        let head = FrameHead::peek(&head_bytes[..n])?;
        if buf.remaining() < head.total_len() {
            return Err(DecodeError::Incomplete);
        }
        buf.advance(head.header_len);
        let mut payload = buf.copy_to_bytes(head.payload_len);
        let frame = match head.ty {
            FrameType::HEADERS => Frame::Headers(RequestHeaders::decode_payload(&mut payload)?),
            FrameType::BODY => Frame::Body(payload),
            FrameType::ROUTED => Frame::Routed(Routed::decode_payload(&mut payload)?),
            FrameType::TOKENS => Frame::Tokens(payload),
            FrameType::END => Frame::End(End::decode_payload(&mut payload)?),
            FrameType::ERROR => Frame::Error(ErrorFrame::decode_payload(&mut payload)?),
            FrameType::SETTINGS => Frame::Settings(Settings::decode_payload(&mut payload)?),
            FrameType::LOAD => Frame::Load(Load::decode_payload(&mut payload)?),
            FrameType::GOAWAY => Frame::GoAway(GoAway::decode_payload(&mut payload)?),
            other => Frame::Unknown(other),
        };
        Ok(frame)
    }

    /// The frame's type.
    pub fn ty(&self) -> FrameType {
        match self {
            Frame::Headers(_) => FrameType::HEADERS,
            Frame::Body(_) => FrameType::BODY,
            Frame::Routed(_) => FrameType::ROUTED,
            Frame::Tokens(_) => FrameType::TOKENS,
            Frame::End(_) => FrameType::END,
            Frame::Error(_) => FrameType::ERROR,
            Frame::Settings(_) => FrameType::SETTINGS,
            Frame::Load(_) => FrameType::LOAD,
            Frame::GoAway(_) => FrameType::GOAWAY,
            Frame::Unknown(t) => *t,
        }
    }

    fn payload_len(&self) -> usize {
        match self {
            Frame::Headers(h) => h.payload_len(),
            Frame::Body(b) | Frame::Tokens(b) => b.len(),
            Frame::Routed(r) => r.payload_len(),
            Frame::End(e) => e.payload_len(),
            Frame::Error(e) => e.payload_len(),
            Frame::Settings(s) => s.payload_len(),
            Frame::Load(l) => l.payload_len(),
            Frame::GoAway(g) => g.payload_len(),
            Frame::Unknown(_) => 0,
        }
    }

    /// Bytes [`Frame::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        let len = self.payload_len();
        varint::size(self.ty().0) + varint::size(len as u64) + len
    }

    /// Appends the frame to `buf`. An `Unknown` frame encodes with an empty payload.
    pub fn encode<B: BufMut>(&self, buf: &mut B) {
        varint::encode(self.ty().0, buf);
        varint::encode(self.payload_len() as u64, buf);
        match self {
            Frame::Headers(h) => h.encode_payload(buf),
            Frame::Body(b) | Frame::Tokens(b) => buf.put_slice(b),
            Frame::Routed(r) => r.encode_payload(buf),
            Frame::End(e) => e.encode_payload(buf),
            Frame::Error(e) => e.encode_payload(buf),
            Frame::Settings(s) => s.encode_payload(buf),
            Frame::Load(l) => l.encode_payload(buf),
            Frame::GoAway(g) => g.encode_payload(buf),
            Frame::Unknown(_) => {}
        }
    }

    /// Encodes the frame into a fresh `Bytes`.
    pub fn to_bytes(&self) -> Bytes {
        let mut v = Vec::with_capacity(self.encoded_len());
        self.encode(&mut v);
        Bytes::from(v)
    }
}

/// Encodes only the header of a frame whose payload the caller writes itself (e.g. a
/// `TOKENS` frame written straight from a buffer): PROTOCOL.md §3.1.
pub fn encode_header<B: BufMut>(ty: FrameType, payload_len: usize, buf: &mut B) {
    varint::encode(ty.0, buf);
    varint::encode(payload_len as u64, buf);
}

#[cfg(test)]
mod tests;
