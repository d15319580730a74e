//! Reading and writing frames on quinn streams (feature `client`; also used by the fabric's
//! worker and edge control paths).

use bytes::{BufMut, BytesMut};
use quinn::RecvStream;

use crate::frame::{DecodeError, Frame};

/// Why a frame could not be read from a stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadFrameError {
    /// The peer sent bytes that are not valid frames: answer with [`DecodeError::code`].
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The stream ended in the middle of a frame: treat as a protocol error.
    #[error("stream ended inside a frame")]
    Truncated,
    /// The stream was reset or the connection lost.
    #[error(transparent)]
    Read(#[from] quinn::ReadError),
}

/// Reads whole frames from a `RecvStream`, buffering at most one frame (bounded by the
/// limits the decoder enforces from the frame header).
#[derive(Debug)]
pub struct FrameReader {
    recv: RecvStream,
    buf: BytesMut,
}

impl FrameReader {
    /// Wraps a receive stream.
    pub fn new(recv: RecvStream) -> Self {
        FrameReader {
            recv,
            buf: BytesMut::new(),
        }
    }

    /// The next frame, or `None` when the peer finished the stream at a frame boundary.
    pub async fn next(&mut self) -> Result<Option<Frame>, ReadFrameError> {
        loop {
            if !self.buf.is_empty() {
                match Frame::decode(&mut self.buf) {
                    Ok(f) => return Ok(Some(f)),
                    Err(DecodeError::Incomplete) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            match self.recv.read_chunk(usize::MAX, true).await? {
                Some(chunk) => self.buf.put(chunk.bytes),
                None if self.buf.is_empty() => return Ok(None),
                None => return Err(ReadFrameError::Truncated),
            }
        }
    }

    /// The underlying stream (to `stop` it).
    pub fn stream_mut(&mut self) -> &mut RecvStream {
        &mut self.recv
    }
}
