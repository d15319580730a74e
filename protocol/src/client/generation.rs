//! One request's event stream.

use quinn::{RecvStream, SendStream, VarInt};

use crate::io::{FrameReader, ReadFrameError};
use crate::{DecodeError, End, ErrorCode, Frame, Routed};

/// An event of a generation, in order: one or more `Routed` (more than one only if the edge
/// retried before the first token), `Tokens`…, then `End`. A resumable request may see a
/// `Routed` with `resumed_at` between `Tokens`: another worker continues the same answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Where the request went.
    Routed(Routed),
    /// Generated text.
    Tokens(String),
    /// Completion summary; the last event.
    End(End),
}

/// Why a generation failed. [`ClientError::code`] gives the wire code where there is one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server answered ERROR: see `code`; retry only if `retryable`.
    #[error("{code}: {message}")]
    Remote {
        /// Stable wire code.
        code: ErrorCode,
        /// Whether the same request may succeed if sent again.
        retryable: bool,
        /// Server's detail.
        message: String,
        /// The server's hint how long to wait before retrying (RATE_LIMITED).
        retry_after: Option<std::time::Duration>,
    },
    /// The request cannot be encoded (a value out of the protocol's range); nothing was
    /// sent. Fix the request.
    #[error("invalid request: {0}")]
    InvalidRequest(#[source] crate::DecodeError),
    /// The server reset the stream with this code (e.g. the worker failed mid-frame).
    #[error("stream reset by server: {0}")]
    Reset(ErrorCode),
    /// The connection failed or was closed.
    #[error("connection: {0}")]
    Connection(#[source] quinn::ConnectionError),
    /// The server broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The wire error code, if the failure carried one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Remote { code, .. } | ClientError::Reset(code) => Some(*code),
            ClientError::Protocol(_) => Some(ErrorCode::PROTOCOL_ERROR),
            ClientError::InvalidRequest(e) => Some(e.code()),
            ClientError::Connection(_) => None,
        }
    }

    pub(super) fn from_write(e: quinn::WriteError) -> Self {
        match e {
            quinn::WriteError::Stopped(code) => ClientError::Reset(ErrorCode(code.into_inner())),
            quinn::WriteError::ConnectionLost(c) => ClientError::Connection(c),
            other => ClientError::Protocol(other.to_string()),
        }
    }

    fn from_read(e: ReadFrameError) -> Self {
        match e {
            ReadFrameError::Read(quinn::ReadError::Reset(code)) => {
                ClientError::Reset(ErrorCode(code.into_inner()))
            }
            ReadFrameError::Read(quinn::ReadError::ConnectionLost(c)) => ClientError::Connection(c),
            other => ClientError::Protocol(other.to_string()),
        }
    }
}

/// The events of one request. Dropping it before `End` cancels the request.
#[derive(Debug)]
pub struct Generation {
    send: SendStream,
    reader: FrameReader,
    done: bool,
    saw_tokens: bool,
    /// The request asked for resumable delivery: a resuming ROUTED may follow TOKENS.
    resumable: bool,
    /// TOKENS frames received, and the last ROUTED's attempt (a resumption must match both).
    frames: u64,
    attempt: u64,
}

impl Generation {
    pub(super) fn new(send: SendStream, recv: RecvStream, resumable: bool) -> Self {
        Generation {
            send,
            reader: FrameReader::new(recv),
            done: false,
            saw_tokens: false,
            resumable,
            frames: 0,
            attempt: 0,
        }
    }

    /// The next event; `Ok(None)` after `End`. An ERROR frame is returned as
    /// [`ClientError::Remote`]; after any error the generation is finished.
    pub async fn next(&mut self) -> Result<Option<Event>, ClientError> {
        if self.done {
            return Ok(None);
        }
        let result = self.read_event().await;
        if !matches!(result, Ok(Some(Event::Routed(_)) | Some(Event::Tokens(_)))) {
            self.done = true;
        }
        result
    }

    async fn read_event(&mut self) -> Result<Option<Event>, ClientError> {
        loop {
            let frame = self.reader.next().await.map_err(ClientError::from_read)?;
            return match frame {
                None => Err(ClientError::Protocol(
                    "stream ended without END or ERROR".into(),
                )),
                Some(Frame::Routed(r)) if !self.saw_tokens => {
                    self.attempt = r.attempt;
                    Ok(Some(Event::Routed(r)))
                }
                // PROTOCOL.md §4.10: after TOKENS only a resumption, only if asked for, at
                // exactly the text received so far and a later attempt.
                Some(Frame::Routed(r)) if self.resumable && r.resumed_at.is_some() => {
                    if r.resumed_at != Some(self.frames) || r.attempt <= self.attempt {
                        return Err(ClientError::Protocol(format!(
                            "resumption at token {:?} (attempt {}) after {} TOKENS frames (attempt {})",
                            r.resumed_at, r.attempt, self.frames, self.attempt
                        )));
                    }
                    self.attempt = r.attempt;
                    Ok(Some(Event::Routed(r)))
                }
                Some(Frame::Tokens(t)) => {
                    self.saw_tokens = true;
                    self.frames += 1;
                    String::from_utf8(t.to_vec())
                        .map(|s| Some(Event::Tokens(s)))
                        .map_err(|_| {
                            ClientError::Protocol(
                                DecodeError::InvalidField {
                                    field: "tokens",
                                    reason: "not valid UTF-8",
                                }
                                .to_string(),
                            )
                        })
                }
                Some(Frame::End(e)) => Ok(Some(Event::End(e))),
                Some(Frame::Error(e)) => Err(ClientError::Remote {
                    code: e.code,
                    retryable: e.retryable,
                    message: e.message,
                    retry_after: e.retry_after_ms.map(std::time::Duration::from_millis),
                }),
                Some(Frame::Unknown(_)) => continue,
                Some(other) => Err(ClientError::Protocol(format!(
                    "unexpected {} frame on a request stream",
                    other.ty().name()
                ))),
            };
        }
    }

    /// Reads every event until the end: `(routed, text, end)`.
    pub async fn collect(mut self) -> Result<(Vec<Routed>, String, End), ClientError> {
        let mut routed = Vec::new();
        let mut text = String::new();
        while let Some(ev) = self.next().await? {
            match ev {
                Event::Routed(r) => routed.push(r),
                Event::Tokens(t) => text.push_str(&t),
                Event::End(e) => return Ok((routed, text, e)),
            }
        }
        Err(ClientError::Protocol("generation already finished".into()))
    }

    /// Cancels the request now (what dropping does).
    pub fn cancel(&mut self) {
        if !self.done {
            self.done = true;
            let code = VarInt::from_u64(ErrorCode::CANCELLED.0).expect("small constant");
            let _ = self.send.reset(code);
            let _ = self.reader.stream_mut().stop(code);
        }
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        self.cancel();
    }
}
