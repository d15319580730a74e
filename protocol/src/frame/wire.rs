//! Field-level helpers shared by the frame payload codecs (PROTOCOL.md §2).

use std::io::IoSlice;

use bytes::{Buf, BufMut, Bytes};

use super::DecodeError;
use crate::varint;

/// Copies up to `out.len()` bytes from the front of `buf` without consuming them, even when
/// `buf` is not contiguous. Returns how many were copied.
pub(super) fn peek_prefix<B: Buf>(buf: &B, out: &mut [u8]) -> usize {
    let chunk = buf.chunk();
    if chunk.len() >= out.len() || chunk.len() == buf.remaining() {
        let n = chunk.len().min(out.len());
        out[..n].copy_from_slice(&chunk[..n]);
        return n;
    }
    let mut slices = [IoSlice::new(&[]); 8];
    let count = buf.chunks_vectored(&mut slices);
    let mut n = 0;
    for s in &slices[..count] {
        let take = s.len().min(out.len() - n);
        out[n..n + take].copy_from_slice(&s[..take]);
        n += take;
        if n == out.len() {
            break;
        }
    }
    n
}

/// Reads a varint inside a frame payload; running out of payload is malformed, not
/// incomplete (the whole frame is already buffered).
pub(super) fn get_varint(payload: &mut Bytes, frame: &'static str) -> Result<u64, DecodeError> {
    varint::decode(payload).map_err(|_| DecodeError::Malformed {
        frame,
        reason: "truncated varint",
    })
}

/// Reads a length-prefixed byte string of at most `max` bytes.
pub(super) fn get_bytes(
    payload: &mut Bytes,
    frame: &'static str,
    field: &'static str,
    max: usize,
) -> Result<Bytes, DecodeError> {
    let len = get_varint(payload, frame)?;
    if len > max as u64 {
        return Err(DecodeError::FieldTooLong {
            field,
            len: len as usize,
            max,
        });
    }
    if (payload.remaining() as u64) < len {
        return Err(DecodeError::Malformed {
            frame,
            reason: "field runs past the frame",
        });
    }
    Ok(payload.split_to(len as usize))
}

/// Reads a length-prefixed UTF-8 string of at most `max` bytes.
pub(super) fn get_string(
    payload: &mut Bytes,
    frame: &'static str,
    field: &'static str,
    max: usize,
) -> Result<String, DecodeError> {
    let bytes = get_bytes(payload, frame, field, max)?;
    utf8(bytes, field)
}

/// Converts bytes to a `String`, or `InvalidField` if they are not UTF-8.
pub(super) fn utf8(bytes: Bytes, field: &'static str) -> Result<String, DecodeError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::InvalidField {
        field,
        reason: "not valid UTF-8",
    })
}

/// Writes a length-prefixed byte string.
pub(super) fn put_bytes<B: BufMut>(buf: &mut B, value: &[u8]) {
    varint::encode(value.len() as u64, buf);
    buf.put_slice(value);
}

/// Wire size of a length-prefixed byte string.
pub(super) fn bytes_len(value: &[u8]) -> usize {
    varint::size(value.len() as u64) + value.len()
}
