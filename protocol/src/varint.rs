//! QUIC variable-length integers (RFC 9000 §16), the only integer encoding on the wire.
//!
//! PROTOCOL.md §2.1.

use bytes::{Buf, BufMut};

use crate::frame::DecodeError;

/// The largest value a varint can carry: 2^62 - 1.
pub const MAX: u64 = (1 << 62) - 1;

/// Number of bytes `v` takes on the wire.
///
/// # Panics
/// If `v > MAX`; callers encode only values they checked or built themselves.
pub const fn size(v: u64) -> usize {
    if v < (1 << 6) {
        1
    } else if v < (1 << 14) {
        2
    } else if v < (1 << 30) {
        4
    } else if v <= MAX {
        8
    } else {
        panic!("varint out of range")
    }
}

/// Number of bytes of a varint whose first byte is `first`.
pub const fn size_from_first(first: u8) -> usize {
    1 << (first >> 6)
}

/// Appends `v` to `buf`.
///
/// # Panics
/// If `v > MAX` (an encoder bug, never peer input).
pub fn encode<B: BufMut>(v: u64, buf: &mut B) {
    match size(v) {
        1 => buf.put_u8(v as u8),
        2 => buf.put_u16(0x4000 | v as u16),
        4 => buf.put_u32(0x8000_0000 | v as u32),
        _ => buf.put_u64(0xc000_0000_0000_0000 | v),
    }
}

/// Reads one varint from `buf`, or `Incomplete` if `buf` ends first.
pub fn decode<B: Buf>(buf: &mut B) -> Result<u64, DecodeError> {
    if !buf.has_remaining() {
        return Err(DecodeError::Incomplete);
    }
    let len = size_from_first(buf.chunk()[0]);
    if buf.remaining() < len {
        return Err(DecodeError::Incomplete);
    }
    Ok(match len {
        1 => u64::from(buf.get_u8()),
        2 => u64::from(buf.get_u16() & 0x3fff),
        4 => u64::from(buf.get_u32() & 0x3fff_ffff),
        _ => buf.get_u64() & 0x3fff_ffff_ffff_ffff,
    })
}

/// Reads one varint from the front of a contiguous slice without consuming it:
/// `(value, bytes used)`, or `None` if the slice ends inside the varint.
pub fn peek(src: &[u8]) -> Option<(u64, usize)> {
    let first = *src.first()?;
    let len = size_from_first(first);
    let bytes = src.get(..len)?;
    let mut v = u64::from(first & 0x3f);
    for b in &bytes[1..] {
        v = (v << 8) | u64::from(*b);
    }
    Some((v, len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc9000_examples() {
        // RFC 9000 Appendix A.1 sample encodings.
        let cases: [(&[u8], u64); 4] = [
            (
                &[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c],
                151_288_809_941_952_652,
            ),
            (&[0x9d, 0x7f, 0x3e, 0x7d], 494_878_333),
            (&[0x7b, 0xbd], 15_293),
            (&[0x25], 37),
        ];
        for (bytes, value) in cases {
            let mut b = bytes;
            assert_eq!(decode(&mut b).unwrap(), value);
            let mut out = Vec::new();
            encode(value, &mut out);
            assert_eq!(out, bytes);
            assert_eq!(peek(bytes), Some((value, bytes.len())));
        }
    }

    proptest! {
        #[test]
        fn round_trip(v in 0..=MAX) {
            let mut out = Vec::new();
            encode(v, &mut out);
            prop_assert_eq!(out.len(), size(v));
            prop_assert_eq!(peek(&out), Some((v, out.len())));
            let mut b = &out[..];
            prop_assert_eq!(decode(&mut b).unwrap(), v);
            for cut in 0..out.len() {
                prop_assert!(peek(&out[..cut]).is_none());
                let mut short = &out[..cut];
                prop_assert!(matches!(decode(&mut short), Err(DecodeError::Incomplete)));
            }
        }
    }
}
