//! W3C Trace Context (`traceparent`): the ids that tie one request's spans together across
//! the client, the edge, the worker and the inference server. Carried in the HTTP
//! `traceparent` header and in the HEADERS field `trace_context` (PROTOCOL.md §4.2).

use std::cell::Cell;
use std::fmt;

/// The `sampled` bit of the trace flags.
pub const SAMPLED: u8 = 0x01;

/// One span's position in a trace, as propagated between processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace every span of the request belongs to (never all zero).
    pub trace_id: [u8; 16],
    /// The span that is the parent of the receiver's spans (never all zero).
    pub span_id: [u8; 8],
    /// Trace flags; bit 0 is `sampled`.
    pub flags: u8,
}

impl TraceContext {
    /// Parses a `traceparent` value: `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`.
    /// Lowercase hex only; all-zero ids and version `ff` are invalid. A future version is
    /// read by its version-00 prefix, as the W3C spec asks. `None` for anything invalid: the
    /// receiver then starts a new trace instead of failing the request.
    pub fn parse(s: &str) -> Option<TraceContext> {
        let b = s.as_bytes();
        if b.len() < 55 {
            return None;
        }
        let version = hex_byte(&b[0..2])?;
        if version == 0xff || (version == 0 && b.len() != 55) {
            return None;
        }
        if version != 0 && b.len() > 55 && b[55] != b'-' {
            return None;
        }
        if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        let mut trace_id = [0u8; 16];
        for (i, out) in trace_id.iter_mut().enumerate() {
            *out = hex_byte(&b[3 + 2 * i..5 + 2 * i])?;
        }
        let mut span_id = [0u8; 8];
        for (i, out) in span_id.iter_mut().enumerate() {
            *out = hex_byte(&b[36 + 2 * i..38 + 2 * i])?;
        }
        let flags = hex_byte(&b[53..55])?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceContext {
            trace_id,
            span_id,
            flags,
        })
    }

    /// Whether the trace is being recorded upstream.
    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// A child position: same trace, a fresh span id, the `sampled` flag kept and flags
    /// this version does not define cleared (W3C Trace Context §3.2.2.5).
    pub fn child(&self) -> TraceContext {
        TraceContext {
            trace_id: self.trace_id,
            span_id: span_id(),
            flags: self.flags & SAMPLED,
        }
    }
}

/// Formats as a version-00 `traceparent` value.
impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("00-")?;
        write_hex(f, &self.trace_id)?;
        f.write_str("-")?;
        write_hex(f, &self.span_id)?;
        write!(f, "-{:02x}", self.flags)
    }
}

/// Lowercase hex of `bytes` (OTLP/JSON encodes trace and span ids this way).
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 0xf)] as char);
    }
    s
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for b in bytes {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn hex_byte(two: &[u8]) -> Option<u8> {
    Some(hex_digit(two[0])? << 4 | hex_digit(two[1])?)
}

thread_local! {
    /// Per-thread SplitMix64 state, seeded from the OS generator on first use: ids need to
    /// be unique, not secret, and must not cost a syscall per span.
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    // A failing OS generator leaves a fixed seed; ids then still differ by thread address.
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    u64::from_le_bytes(b) ^ (&b as *const _ as u64)
}

fn next_u64() -> u64 {
    RNG.with(|s| {
        let x = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        s.set(x);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

/// A fresh random, non-zero trace id.
pub fn trace_id() -> [u8; 16] {
    loop {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&next_u64().to_be_bytes());
        id[8..].copy_from_slice(&next_u64().to_be_bytes());
        if id != [0; 16] {
            return id;
        }
    }
}

/// A fresh random, non-zero span id.
pub fn span_id() -> [u8; 8] {
    loop {
        let id = next_u64();
        if id != 0 {
            return id.to_be_bytes();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_and_formats_the_w3c_example() {
        let c = TraceContext::parse(VALID).expect("valid traceparent");
        assert_eq!(hex(&c.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&c.span_id), "00f067aa0ba902b7");
        assert!(c.sampled());
        assert_eq!(c.to_string(), VALID);
    }

    #[test]
    fn rejects_invalid_values() {
        let bad = [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ];
        for s in bad {
            assert_eq!(TraceContext::parse(s), None, "{s:?}");
        }
    }

    #[test]
    fn future_versions_are_read_by_their_prefix() {
        let v = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more";
        let c = TraceContext::parse(v).expect("future version with extra fields");
        assert!(!c.sampled());
        assert_eq!(c.to_string(), VALID.replace("-01", "-00"));
    }

    #[test]
    fn ids_are_fresh_and_non_zero() {
        let a = TraceContext::parse(VALID).unwrap();
        let b = a.child();
        assert_eq!((a.trace_id, a.flags), (b.trace_id, b.flags));
        assert_ne!(a.span_id, b.span_id);
        let unknown_flags = TraceContext::parse(&VALID.replace("-01", "-ff")).unwrap();
        assert_eq!(unknown_flags.child().flags, SAMPLED);
        let ids: std::collections::HashSet<_> = (0..1000).map(|_| trace_id()).collect();
        assert_eq!(ids.len(), 1000);
    }
}
