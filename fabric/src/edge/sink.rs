//! Where a relayed response goes: a client's QUIC stream (raw frames, zero-copy), or a
//! channel of decoded frames for an in-process consumer (the HTTP front door).

use std::future::Future;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use meridian_protocol::{DecodeError, ErrorFrame, Frame, Routed};
use quinn::{SendStream, VarInt};
use tokio::sync::mpsc;

/// The client side of one request.
pub(crate) trait Sink: Send {
    /// Resolves once the client has gone away. Cancel-safe; polled repeatedly.
    fn gone(&mut self) -> impl Future<Output = ()> + Send + '_;
    /// Announces the route; false if the client is gone.
    fn routed(&mut self, r: Routed) -> impl Future<Output = bool> + Send;
    /// Relays worker bytes (whole or partial frames, in order); false if the client is gone.
    fn chunk(&mut self, bytes: Bytes) -> impl Future<Output = bool> + Send;
    /// The response is complete (END or ERROR relayed).
    fn finish(&mut self);
    /// Ends the response with `e`; `at_boundary` says whether what was relayed so far ends
    /// at a frame boundary (else the stream is reset with `e.code`).
    fn fail(&mut self, e: ErrorFrame, at_boundary: bool) -> impl Future<Output = ()> + Send;
}

type Stopped =
    Pin<Box<dyn Future<Output = Result<Option<VarInt>, quinn::StoppedError>> + Send + Sync>>;

/// A client's QUIC request stream: worker bytes go out as received.
pub(crate) struct QuicSink {
    pub send: SendStream,
    stopped: Stopped,
    /// `stopped` completed: it must not be polled again (a finished future panics).
    stopped_done: bool,
}

impl QuicSink {
    pub(crate) fn new(send: SendStream) -> Self {
        let stopped = Box::pin(send.stopped());
        QuicSink {
            send,
            stopped,
            stopped_done: false,
        }
    }

    /// Awaits `stopped` once; later calls return at once.
    async fn stopped(&mut self) {
        if !self.stopped_done {
            let _ = self.stopped.as_mut().await;
            self.stopped_done = true;
        }
    }

    /// Resolves once the client has acknowledged the whole response (or stopped it),
    /// bounded by [`crate::server::DELIVERY_TIMEOUT`].
    pub(crate) async fn delivered(&mut self) {
        crate::server::delivered(async {
            self.stopped().await;
            Ok(None)
        })
        .await;
    }
}

pub(crate) fn code(c: meridian_protocol::ErrorCode) -> VarInt {
    VarInt::from_u64(c.0).expect("error codes are small")
}

impl Sink for QuicSink {
    async fn gone(&mut self) {
        // Once gone, gone: later calls resolve at once.
        self.stopped().await;
    }

    async fn routed(&mut self, r: Routed) -> bool {
        self.send
            .write_chunk(Frame::Routed(r).to_bytes())
            .await
            .is_ok()
    }

    async fn chunk(&mut self, bytes: Bytes) -> bool {
        // Zero-copy: the received `Bytes` is what goes out.
        self.send.write_chunk(bytes).await.is_ok()
    }

    fn finish(&mut self) {
        let _ = self.send.finish();
    }

    async fn fail(&mut self, e: ErrorFrame, at_boundary: bool) {
        if at_boundary {
            let _ = self.send.write_chunk(Frame::Error(e).to_bytes()).await;
            let _ = self.send.finish();
        } else {
            let _ = self.send.reset(code(e.code));
        }
    }
}

/// What an in-process consumer receives.
#[derive(Debug)]
pub enum Delivery {
    /// Where the request went (again, with a higher attempt, after a retry).
    Routed(Routed),
    /// A decoded frame from the worker: TOKENS, then END or ERROR.
    Frame(Frame),
    /// The edge ended the request with this error (routing, deadline, worker failure).
    Failed(ErrorFrame),
}

/// Decodes worker bytes into frames and sends them down a bounded channel (backpressure:
/// a slow consumer slows the relay; a dropped receiver is a client that went away).
pub(crate) struct ChannelSink {
    tx: mpsc::Sender<Delivery>,
    buf: BytesMut,
}

impl ChannelSink {
    pub(crate) fn new(tx: mpsc::Sender<Delivery>) -> Self {
        ChannelSink {
            tx,
            buf: BytesMut::new(),
        }
    }
}

impl Sink for ChannelSink {
    fn gone(&mut self) -> impl Future<Output = ()> + Send + '_ {
        self.tx.closed()
    }

    async fn routed(&mut self, r: Routed) -> bool {
        self.tx.send(Delivery::Routed(r)).await.is_ok()
    }

    async fn chunk(&mut self, bytes: Bytes) -> bool {
        // Whole frames decode straight from the received `Bytes` (TOKENS payloads are
        // slices of it); only a frame split across chunks is assembled in `buf`.
        let mut src = if self.buf.is_empty() {
            bytes
        } else {
            self.buf.extend_from_slice(&bytes);
            self.buf.split().freeze()
        };
        loop {
            match Frame::decode(&mut src) {
                Ok(Frame::Unknown(_)) => {}
                Ok(f) => {
                    if self.tx.send(Delivery::Frame(f)).await.is_err() {
                        return false;
                    }
                }
                Err(DecodeError::Incomplete) => {
                    self.buf.extend_from_slice(&src);
                    return true;
                }
                // The relay's tracker validated the framing already; a decode error here
                // is a bad field value from the worker.
                Err(e) => {
                    let err = ErrorFrame::new(
                        meridian_protocol::ErrorCode::UPSTREAM_FAILED,
                        format!("worker sent {e}"),
                    );
                    return self.tx.send(Delivery::Failed(err)).await.is_ok();
                }
            }
        }
    }

    fn finish(&mut self) {}

    async fn fail(&mut self, e: ErrorFrame, _at_boundary: bool) {
        let _ = self.tx.send(Delivery::Failed(e)).await;
    }
}

#[cfg(test)]
mod tests {
    use meridian_protocol::{End, FinishReason};

    use super::*;

    #[tokio::test]
    async fn channel_sink_decodes_frames_split_anywhere() {
        let mut stream = BytesMut::new();
        Frame::Tokens(Bytes::from_static(b"hello ")).encode(&mut stream);
        Frame::Tokens(Bytes::from_static(b"world")).encode(&mut stream);
        let end = End {
            finish_reason: FinishReason::Stop,
            prompt_tokens: 1,
            completion_tokens: 2,
            ttft_us: 3,
            total_us: 4,
        };
        Frame::End(end.clone()).encode(&mut stream);
        let stream = stream.freeze();
        for cut in 1..stream.len() {
            let (tx, mut rx) = mpsc::channel(8);
            let mut sink = ChannelSink::new(tx);
            assert!(sink.chunk(stream.slice(..cut)).await);
            assert!(sink.chunk(stream.slice(cut..)).await);
            drop(sink);
            let mut got = Vec::new();
            while let Some(Delivery::Frame(f)) = rx.recv().await {
                got.push(f);
            }
            assert_eq!(
                got,
                [
                    Frame::Tokens(Bytes::from_static(b"hello ")),
                    Frame::Tokens(Bytes::from_static(b"world")),
                    Frame::End(end.clone())
                ],
                "split at {cut}"
            );
        }
    }
}
