//! Stable wire error codes (PROTOCOL.md §6), generated from one table.
//!
//! Codes are added, never renumbered. The same values are used in ERROR frames, as QUIC
//! `RESET_STREAM`/`STOP_SENDING` application codes on request streams, and as
//! `CONNECTION_CLOSE` application codes.

use std::fmt;

/// A wire error code. Unknown codes (from newer peers) are carried and print as hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorCode(pub u64);

macro_rules! error_codes {
    ($($(#[$doc:meta])* $name:ident = $val:literal, retryable: $retry:literal, $desc:literal;)*) => {
        impl ErrorCode {
            $($(#[$doc])* pub const $name: ErrorCode = ErrorCode($val);)*

            /// Every code this version defines, in numeric order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name),*];

            /// The code's stable name (`"RESIDENCY_UNAVAILABLE"`), if this version knows it.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($val => Some(stringify!($name)),)*
                    _ => None,
                }
            }

            /// One-line meaning of the code, if this version knows it.
            pub fn description(self) -> Option<&'static str> {
                match self.0 {
                    $($val => Some($desc),)*
                    _ => None,
                }
            }

            /// Whether a request failing with this code may succeed if sent again unchanged.
            pub fn default_retryable(self) -> bool {
                match self.0 {
                    $($val => $retry,)*
                    _ => false,
                }
            }

            /// Looks a code up by its stable name.
            pub fn from_name(name: &str) -> Option<ErrorCode> {
                match name {
                    $(stringify!($name) => Some(ErrorCode::$name),)*
                    _ => None,
                }
            }
        }
    };
}

error_codes! {
    /// Not an error: graceful connection close.
    NO_ERROR = 0x0, retryable: false, "no error (graceful close)";
    /// The request is invalid (missing model, unknown residency policy, bad area…).
    BAD_REQUEST = 0x1, retryable: false, "the request is invalid";
    /// The tenant is unknown or not allowed.
    UNAUTHORIZED = 0x2, retryable: false, "the tenant is unknown or not allowed";
    /// No region allowed by the residency policy can serve the request; never spilled elsewhere.
    RESIDENCY_UNAVAILABLE = 0x3, retryable: true, "no region allowed by the residency policy can serve the request";
    /// Every allowed region is at its load bound.
    OVERLOADED = 0x4, retryable: true, "every candidate region is at its load bound";
    /// The worker failed or vanished while serving the request.
    UPSTREAM_FAILED = 0x5, retryable: true, "the worker failed while serving the request";
    /// The request was cancelled by the client.
    CANCELLED = 0x6, retryable: false, "the request was cancelled";
    /// The request's deadline passed.
    DEADLINE_EXCEEDED = 0x7, retryable: false, "the request's deadline passed";
    /// No region serves the requested model.
    MODEL_NOT_FOUND = 0x8, retryable: false, "no region serves the requested model";
    /// The tenant exceeded its request rate.
    RATE_LIMITED = 0x9, retryable: true, "the tenant exceeded its request rate";
    /// A bug or unexpected condition in Meridian.
    INTERNAL = 0xa, retryable: false, "internal error";
    /// No healthy worker can serve the request right now (no residency restriction applied).
    UNAVAILABLE = 0xb, retryable: true, "no healthy worker can serve the request";
    /// The peer broke the framing rules (malformed or misplaced frame).
    PROTOCOL_ERROR = 0xc, retryable: false, "the peer violated the wire protocol";
    /// A size limit was exceeded (frame, headers, prompt).
    TOO_LARGE = 0xd, retryable: false, "a size limit was exceeded";
}

impl From<ErrorCode> for u64 {
    fn from(c: ErrorCode) -> u64 {
        c.0
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "{:#x}", self.0),
        }
    }
}

impl fmt::Debug for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ErrorCode({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_dense_and_named() {
        for (i, c) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(c.0, i as u64, "codes are never renumbered or skipped");
            let name = c.name().unwrap();
            assert_eq!(ErrorCode::from_name(name), Some(*c));
            assert!(c.description().is_some());
        }
    }

    #[test]
    fn unknown_code_prints_hex() {
        assert_eq!(ErrorCode(0x1234).to_string(), "0x1234");
        assert_eq!(
            ErrorCode::RESIDENCY_UNAVAILABLE.to_string(),
            "RESIDENCY_UNAVAILABLE"
        );
    }
}
