//! The body of a streaming completion: SSE events rendered as hyper (or the HTTP/3 loop)
//! polls for them, straight from the request's [`Submission`]. Between the relay and the
//! socket there is one channel hop and no task of its own; dropping the body (the client went
//! away) drops the submission, which cancels the request upstream.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame as HttpFrame};
use meridian_fabric::edge::Submission;
use meridian_protocol::{ErrorCode, ErrorFrame, Frame};

use super::openai::{error_body, usage, Meta, TextChunk};

/// A streaming completion's SSE body.
pub struct SseBody {
    sub: Submission,
    /// The first frame, already received (errors before it became an HTTP status).
    first: Option<Frame>,
    /// The role-announcing first event of a chat stream, not yet sent.
    start: Option<String>,
    text: TextChunk,
    meta: Meta,
    include_usage: bool,
    done: bool,
}

impl SseBody {
    pub fn new(sub: Submission, first: Frame, meta: Meta, include_usage: bool) -> Self {
        SseBody {
            sub,
            first: Some(first),
            start: meta.sse_start(),
            text: TextChunk::new(&meta),
            meta,
            include_usage,
            done: false,
        }
    }

    /// The event for `frame`; `None` for frames the client does not see.
    fn event(&mut self, frame: Frame) -> Option<String> {
        match frame {
            Frame::Tokens(t) => Some(self.text.render(&String::from_utf8_lossy(&t))),
            Frame::End(end) => {
                self.done = true;
                let u =
                    (self.include_usage).then(|| usage(end.prompt_tokens, end.completion_tokens));
                Some(self.meta.sse_end(end.finish_reason, u))
            }
            Frame::Error(e) => {
                self.done = true;
                Some(format!("data: {}\n\n", error_body(e.code, &e.message)))
            }
            _ => None,
        }
    }
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<HttpFrame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(start) = this.start.take() {
            return Poll::Ready(Some(Ok(HttpFrame::data(Bytes::from(start)))));
        }
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let frame = match this.first.take() {
                Some(f) => f,
                // The request ended without END or ERROR (the relay always sends one, so
                // this is the edge going away): say so rather than end silently.
                None => ready!(this.sub.poll_next_frame(cx)).unwrap_or_else(|| {
                    Frame::Error(ErrorFrame::new(
                        ErrorCode::UPSTREAM_FAILED,
                        "the request ended without an answer",
                    ))
                }),
            };
            if let Some(event) = this.event(frame) {
                return Poll::Ready(Some(Ok(HttpFrame::data(Bytes::from(event)))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.start.is_none()
    }
}
