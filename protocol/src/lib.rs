//! Meridian wire protocol v1 (`meridian/1`): the sans-IO frame codec, stable error codes,
//! limits, and (feature `client`) the async Rust client SDK.
//!
//! `protocol/PROTOCOL.md` is the normative specification; code that implements a section
//! cites it. The codec takes bytes in through [`bytes::Buf`] and writes through
//! [`bytes::BufMut`]; it has no runtime and no clock. This crate knows nothing of routing.
//!
//! ```
//! use bytes::BytesMut;
//! use meridian_protocol::{Frame, RequestHeaders};
//!
//! let mut headers = RequestHeaders::new("llama-3-8b");
//! headers.area = Some("jp".into());
//! let mut buf = BytesMut::new();
//! Frame::Headers(headers.clone()).encode(&mut buf);
//! assert_eq!(Frame::decode(&mut buf).unwrap(), Frame::Headers(headers));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod error_code;
pub mod frame;
pub mod limits;
pub mod scan;
pub mod varint;

#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "client")]
pub mod io;

pub use error_code::ErrorCode;
pub use frame::{
    body_format, Credential, DecodeError, End, ErrorFrame, FinishReason, Frame, FrameHead,
    FrameType, GoAway, Load, RequestHeaders, ResumeFrom, Routed, Settings,
};

/// The ALPN protocol id of this version (PROTOCOL.md §1).
pub const ALPN: &[u8] = b"meridian/1";

/// Stream-type prefix of a control stream (PROTOCOL.md §5.1).
pub const CONTROL_STREAM_TYPE: u64 = 0x00;
