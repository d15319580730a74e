//! One request on a worker: read HEADERS and BODY to FIN, wait for a generation slot, stream
//! TOKENS, end with END; stop generating the moment the edge stops the stream.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use meridian_protocol::io::{FrameReader, ReadFrameError};
use meridian_protocol::{ErrorCode, ErrorFrame, Frame, RequestHeaders};
use quinn::{RecvStream, SendStream};
use tracing::debug;

use super::emit::{Emitter, GenError};
use super::stats::Event;
use super::synthetic;
use super::{varint_code, Shared};
use crate::config::Backend;
use crate::telemetry::{SpanKind, TraceContext};

pub(super) async fn serve(mut send: SendStream, recv: RecvStream, shared: Arc<Shared>) {
    let mut reader = FrameReader::new(recv);
    let (headers, prompt) = match read_request(&mut reader, &shared).await {
        Ok(r) => r,
        Err(e) => {
            shared.stats.record(Event::Rejected);
            let _ = reader.stream_mut().stop(varint_code(e.code));
            reject(&mut send, e).await;
            return;
        }
    };
    let parent = headers
        .trace_context
        .as_deref()
        .and_then(TraceContext::parse);
    let mut span = (shared.tracer).start(
        "meridian.worker.generate",
        SpanKind::Server,
        parent.as_ref(),
    );
    if span.recording() {
        // GenAI semantic conventions: `{operation} {model}`, the backend as the provider.
        let op = crate::telemetry::genai::Operation::of(&headers).name();
        span.rename(|| format!("{op} {}", headers.model));
        span.set("gen_ai.operation.name", op);
        span.set("gen_ai.provider.name", shared.config.backend.provider());
        span.set("gen_ai.request.model", headers.model.as_str());
        if let Some(m) = headers.max_tokens {
            span.set("gen_ai.request.max_tokens", m);
        }
        span.set("meridian.worker", shared.config.name.as_str());
        span.set("meridian.region", shared.config.region.as_str());
    }
    // Continue the trace upstream even when this worker records nothing.
    let traceparent = span.context().or(parent.as_ref()).map(|c| c.to_string());
    let outcome = answer(&mut send, &headers, prompt, traceparent, &shared).await;
    // A draining worker closes the connection once its request tasks end: end this one only
    // when the edge has every byte of the answer.
    crate::server::delivered(send.stopped()).await;
    match outcome {
        Answer::Completed(None) => {}
        Answer::Completed(Some(e)) | Answer::Rejected(e) => {
            if span.recording() {
                span.set("meridian.error_code", e.code.to_string());
                span.set("error.type", crate::edge::error_type(e.code));
                span.fail(e.message);
            }
        }
        Answer::Cancelled => span.set("meridian.outcome", "cancelled"),
    }
}

/// How a request that was read ended.
enum Answer {
    /// Generated to the end, or ended with the backend's ERROR.
    Completed(Option<ErrorFrame>),
    /// Refused before generating.
    Rejected(ErrorFrame),
    /// The edge stopped the stream.
    Cancelled,
}

async fn answer(
    send: &mut SendStream,
    headers: &RequestHeaders,
    prompt: Bytes,
    traceparent: Option<String>,
    shared: &Shared,
) -> Answer {
    if headers
        .body_format
        .is_some_and(|f| f > meridian_protocol::body_format::OPENAI_COMPLETIONS)
    {
        let msg = format!(
            "unknown body_format {}",
            headers.body_format.unwrap_or_default()
        );
        return refuse(send, shared, ErrorFrame::new(ErrorCode::BAD_REQUEST, msg)).await;
    }
    if !shared.config.models.contains(&headers.model) {
        let msg = format!(
            "worker {} does not serve model `{}`",
            shared.config.name, headers.model
        );
        return refuse(
            send,
            shared,
            ErrorFrame::new(ErrorCode::MODEL_NOT_FOUND, msg),
        )
        .await;
    }
    let stopped = send.stopped();
    tokio::pin!(stopped);
    let received = Instant::now();
    shared.stats.record(Event::Queued);
    let permit = tokio::select! {
        p = shared.slots.acquire() => p,
        _ = &mut stopped => {
            shared.stats.record(Event::Dequeued);
            return Answer::Cancelled;
        }
    };
    shared.stats.record(Event::Dequeued);
    let Ok(_permit) = permit else {
        return Answer::Cancelled;
    };
    shared.stats.record(Event::Started);
    let outcome = tokio::select! {
        r = generate(send, headers, prompt, traceparent, shared, received) => r,
        _ = &mut stopped => Err(GenError::Cancelled),
    };
    match outcome {
        Ok(()) => {
            let _ = send.finish();
            shared.stats.record(Event::Completed);
            Answer::Completed(None)
        }
        Err(GenError::Failed(e)) => {
            debug!(worker = %shared.config.name, code = %e.code, "backend failed: {}", e.message);
            // Counted as completed: the request ended with an answer (an ERROR).
            let _ = send.write_chunk(Frame::Error(e.clone()).to_bytes()).await;
            let _ = send.finish();
            shared.stats.record(Event::Completed);
            Answer::Completed(Some(e))
        }
        Err(GenError::Cancelled) => {
            debug!(worker = %shared.config.name, "request cancelled; generation stopped");
            let _ = send.reset(varint_code(ErrorCode::CANCELLED));
            shared.stats.record(Event::Cancelled);
            Answer::Cancelled
        }
    }
}

async fn refuse(send: &mut SendStream, shared: &Shared, e: ErrorFrame) -> Answer {
    shared.stats.record(Event::Rejected);
    reject(send, e.clone()).await;
    Answer::Rejected(e)
}

async fn reject(send: &mut SendStream, e: ErrorFrame) {
    let _ = send.write_chunk(Frame::Error(e).to_bytes()).await;
    let _ = send.finish();
}

/// Reads HEADERS then BODY frames to FIN, within the prompt limit. PROTOCOL.md §4.
async fn read_request(
    reader: &mut FrameReader,
    shared: &Shared,
) -> Result<(RequestHeaders, Bytes), ErrorFrame> {
    let map = |e: ReadFrameError| match e {
        ReadFrameError::Decode(d) => ErrorFrame::new(d.code(), d.to_string()),
        other => ErrorFrame::new(ErrorCode::PROTOCOL_ERROR, other.to_string()),
    };
    // PROTOCOL.md §3.2: extension frames may come first too; they are skipped.
    let mut first = reader.next().await.map_err(map)?;
    while let Some(Frame::Unknown(_)) = first {
        first = reader.next().await.map_err(map)?;
    }
    let headers = match first {
        Some(Frame::Headers(h)) => h,
        Some(f) => {
            return Err(ErrorFrame::new(
                ErrorCode::PROTOCOL_ERROR,
                format!("expected HEADERS, got {}", f.ty().name()),
            ))
        }
        None => {
            return Err(ErrorFrame::new(
                ErrorCode::PROTOCOL_ERROR,
                "stream ended before HEADERS",
            ))
        }
    };
    let mut prompt = BytesMut::new();
    loop {
        match reader.next().await.map_err(map)? {
            Some(Frame::Body(b)) => {
                if prompt.len() + b.len() > shared.config.max_prompt_bytes {
                    return Err(ErrorFrame::new(
                        ErrorCode::TOO_LARGE,
                        format!("prompt exceeds {} bytes", shared.config.max_prompt_bytes),
                    ));
                }
                prompt.extend_from_slice(&b);
            }
            Some(Frame::Unknown(_)) => {}
            Some(f) => {
                return Err(ErrorFrame::new(
                    ErrorCode::PROTOCOL_ERROR,
                    format!("unexpected {} after HEADERS", f.ty().name()),
                ))
            }
            None => return Ok((headers, prompt.freeze())),
        }
    }
}

/// A continuation request's parts (PROTOCOL.md §4.10): the answer so far, which the edge
/// appended to the prompt, and how many TOKENS frames of it the client has.
#[derive(Clone, Debug)]
pub(crate) struct Continuation {
    pub offset: u64,
    pub text: String,
}

/// Splits a continuation request's BODY into the prompt and the answer so far.
fn split_continuation(
    headers: &RequestHeaders,
    body: Bytes,
) -> Result<(Bytes, Option<Continuation>), ErrorFrame> {
    let Some(r) = headers.resume else {
        return Ok((body, None));
    };
    let bad = |m: &str| ErrorFrame::new(ErrorCode::BAD_REQUEST, m);
    let at = usize::try_from(r.text_len)
        .ok()
        .and_then(|n| body.len().checked_sub(n))
        .ok_or_else(|| bad("resume_text_len is larger than the body"))?;
    let text = std::str::from_utf8(&body[at..])
        .map_err(|_| bad("the answer so far (resume_text_len) is not UTF-8"))?
        .to_owned();
    Ok((
        body.slice(..at),
        Some(Continuation {
            offset: r.offset,
            text,
        }),
    ))
}

async fn generate(
    send: &mut SendStream,
    headers: &RequestHeaders,
    body: Bytes,
    traceparent: Option<String>,
    shared: &Shared,
    received: Instant,
) -> Result<(), GenError> {
    let (prompt, cont) = split_continuation(headers, body).map_err(GenError::Failed)?;
    let emit = Emitter::new(send, &shared.stats, received);
    match &shared.config.backend {
        Backend::Synthetic(cfg) => synthetic::run(cfg, headers, &prompt, cont, emit).await,
        Backend::OpenAi(_) => {
            let client = shared
                .openai
                .as_ref()
                .expect("an openai backend has a client");
            client.run(headers, prompt, cont, traceparent, emit).await
        }
    }
}
