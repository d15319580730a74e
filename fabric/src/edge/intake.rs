//! Reading a client's request at the edge: decode HEADERS, then follow BODY framing without
//! parsing or copying the prompt. The raw chunks are kept (refcounted `Bytes`, no copy) to
//! forward upstream, and to replay if the first worker fails before any token.

use bytes::{Bytes, BytesMut};
use meridian_protocol::frame::{rewrite, ResumeFrom, Rewrite};
use meridian_protocol::limits::MAX_HEADERS_LEN;
use meridian_protocol::scan::{FrameScanner, Scanned};
use meridian_protocol::{DecodeError, ErrorCode, ErrorFrame, Frame, FrameType, RequestHeaders};
use quinn::RecvStream;

use crate::sync::{ByteBudget, Reservation};
use crate::telemetry::TraceContext;

/// Largest BODY frame the edge writes when it sends a continuation's text.
const MAX_BODY_FRAME: usize = 16 * 1024;

/// A whole request as received.
#[derive(Debug)]
pub(crate) struct Intake {
    pub headers: RequestHeaders,
    /// The stream's bytes exactly as received, HEADERS included.
    pub chunks: Vec<Bytes>,
    /// Length of the HEADERS frame at the start of `chunks`.
    pub headers_len: usize,
    /// The prompt's first bytes (for a shard key when the request names none).
    pub prefix: Vec<u8>,
    /// The edge's buffer budget held for `chunks`; released when the request ends.
    pub _held: Option<Reservation>,
}

/// The answer when the edge's request buffer budget is spent.
pub(crate) fn budget_spent(budget: &ByteBudget) -> ErrorFrame {
    ErrorFrame::new(
        ErrorCode::OVERLOADED,
        format!(
            "the edge is buffering its limit of {} request bytes; retry shortly",
            budget.max()
        ),
    )
    .retry_after(100)
}

/// Why intake stopped.
#[derive(Debug)]
pub(crate) enum IntakeError {
    /// Answer the client with this error.
    Reject(ErrorFrame),
    /// The client reset the stream or the connection went away: nobody to answer.
    Gone,
}

impl From<DecodeError> for IntakeError {
    fn from(e: DecodeError) -> Self {
        IntakeError::Reject(ErrorFrame::new(e.code(), e.to_string()))
    }
}

fn reject(code: ErrorCode, msg: impl Into<String>) -> IntakeError {
    IntakeError::Reject(ErrorFrame::new(code, msg))
}

/// Reads the request to FIN. `max_prompt` bounds the prompt; raw bytes (frame overhead
/// included) are bounded too, so empty frames cannot grow the chunk list without limit.
/// `early` vets the HEADERS as soon as they are decoded (authentication): a refused request
/// is answered before its prompt is buffered.
pub(crate) async fn read(
    recv: &mut RecvStream,
    max_prompt: usize,
    prefix_len: usize,
    budget: &std::sync::Arc<ByteBudget>,
    early: impl Fn(&RequestHeaders) -> Result<(), ErrorFrame>,
) -> Result<Intake, IntakeError> {
    let mut held = ByteBudget::reservation(budget);
    let max_raw = max_prompt + MAX_HEADERS_LEN + 64 * 1024;
    let mut chunks = Vec::new();
    let mut raw_len = 0usize;
    let mut head = BytesMut::new();
    let mut headers = None;
    let mut scanner = FrameScanner::new();
    let mut prompt_len = 0usize;
    let mut prefix = Vec::new();
    let mut headers_len = 0;
    // Bytes of extension frames before HEADERS.
    let mut skipped = 0usize;
    let body =
        |scanner: &mut FrameScanner, data: &[u8], prompt_len: &mut usize, prefix: &mut Vec<u8>| {
            scanner.scan(data, |ev| {
                match ev {
                    Scanned::Start(h) if h.ty != FrameType::BODY && h.ty.is_known() => {
                        return Err(reject(
                            ErrorCode::PROTOCOL_ERROR,
                            format!("unexpected {} frame after HEADERS", h.ty.name()),
                        ));
                    }
                    Scanned::Payload(FrameType::BODY, p) => {
                        *prompt_len += p.len();
                        if *prompt_len > max_prompt {
                            return Err(reject(
                                ErrorCode::TOO_LARGE,
                                format!("prompt exceeds the {max_prompt}-byte limit"),
                            ));
                        }
                        let take = (prefix_len - prefix.len()).min(p.len());
                        prefix.extend_from_slice(&p[..take]);
                    }
                    _ => {}
                }
                Ok(())
            })
        };
    loop {
        let chunk = match recv.read_chunk(usize::MAX, true).await {
            Ok(Some(c)) => c.bytes,
            Ok(None) => break,
            Err(_) => return Err(IntakeError::Gone),
        };
        raw_len += chunk.len();
        if raw_len > max_raw {
            return Err(reject(
                ErrorCode::TOO_LARGE,
                format!("request exceeds {max_raw} bytes on the wire"),
            ));
        }
        if !held.grow(chunk.len() as u64) {
            return Err(IntakeError::Reject(budget_spent(budget)));
        }
        chunks.push(chunk.clone());
        if headers.is_some() {
            body(&mut scanner, &chunk, &mut prompt_len, &mut prefix)?;
            continue;
        }
        // HEADERS usually arrives whole in the first chunk: decode it in place. Only a
        // HEADERS frame split across chunks is assembled (≤ 8 KiB, once per request).
        let mut src = if head.is_empty() {
            chunk
        } else {
            head.extend_from_slice(&chunk);
            head.split().freeze()
        };
        loop {
            let before = src.len();
            match Frame::decode(&mut src) {
                Ok(Frame::Headers(h)) => {
                    early(&h).map_err(IntakeError::Reject)?;
                    headers = Some(h);
                    headers_len = before - src.len();
                    body(&mut scanner, &src, &mut prompt_len, &mut prefix)?;
                    break;
                }
                // PROTOCOL.md §3.2: extension frames may come before HEADERS too; they are
                // skipped (and not forwarded), within the raw byte bound above.
                Ok(Frame::Unknown(_)) => skipped += before - src.len(),
                Ok(other) => {
                    return Err(reject(
                        ErrorCode::PROTOCOL_ERROR,
                        format!("expected HEADERS first, got {}", other.ty().name()),
                    ))
                }
                Err(DecodeError::Incomplete) => {
                    head.extend_from_slice(&src);
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    let headers = headers.ok_or_else(|| {
        reject(
            ErrorCode::PROTOCOL_ERROR,
            "stream ended before a whole HEADERS frame",
        )
    })?;
    if !scanner.at_boundary() {
        return Err(reject(
            ErrorCode::PROTOCOL_ERROR,
            "stream ended inside a frame",
        ));
    }
    // Drop what was skipped, so `chunks` starts with HEADERS (sliced, not copied).
    if skipped > 0 {
        let mut drop = skipped;
        chunks.retain_mut(|c| {
            if drop >= c.len() {
                drop -= c.len();
                return false;
            }
            *c = c.slice(drop..);
            drop = 0;
            true
        });
    }
    Ok(Intake {
        headers,
        chunks,
        headers_len,
        prefix,
        _held: Some(held),
    })
}

impl Intake {
    /// The request's GenAI `gen_ai.operation.name`: a text completion when the front door
    /// forwards a `/v1/completions` body, else a chat.
    pub fn operation(&self) -> crate::telemetry::genai::Operation {
        crate::telemetry::genai::Operation::of(&self.headers)
    }

    /// The bytes to send a worker: as received, or — to carry `trace`, to name the
    /// authenticated `tenant`, or to drop the client's credential — the received HEADERS
    /// with only those fields rewritten (unknown fields kept), then the received bytes after
    /// it (sliced, not copied). Once per attempt, never per token.
    pub fn upstream_chunks(
        &self,
        trace: Option<&TraceContext>,
        tenant: Option<&str>,
        max_tokens: Option<u64>,
    ) -> Vec<Bytes> {
        let h = &self.headers;
        let retenant = tenant.is_some() && tenant != h.tenant.as_deref();
        let recap = max_tokens.is_some() && max_tokens != h.max_tokens;
        if trace.is_none() && !retenant && !recap && h.credential.is_none() {
            return self.chunks.clone();
        }
        let with = Rewrite {
            trace: None,
            tenant: tenant.filter(|_| retenant),
            max_tokens: max_tokens.filter(|_| recap),
            resume: None,
        };
        self.rewritten(trace, with, None)
    }

    /// A continuation request (PROTOCOL.md §4.10): HEADERS rewritten as for
    /// [`Intake::upstream_chunks`] plus `resume_offset`/`resume_text_len`, with `max_tokens`
    /// lowered by the `offset` tokens already delivered; the received BODY frames (sliced);
    /// then `text`, the answer so far, as BODY frames. Once per resumption.
    pub fn continuation_chunks(
        &self,
        trace: Option<&TraceContext>,
        tenant: Option<&str>,
        max_tokens: Option<u64>,
        (offset, text): (u64, Bytes),
    ) -> Vec<Bytes> {
        let limit = max_tokens.or(self.headers.max_tokens);
        let with = Rewrite {
            trace: None,
            tenant: tenant.filter(|t| Some(*t) != self.headers.tenant.as_deref()),
            max_tokens: limit.map(|m| m.saturating_sub(offset)),
            resume: Some(ResumeFrom {
                offset,
                text_len: text.len() as u64,
            }),
        };
        self.rewritten(trace, with, Some(text))
    }

    fn rewritten(
        &self,
        trace: Option<&TraceContext>,
        with: Rewrite<'_>,
        text: Option<Bytes>,
    ) -> Vec<Bytes> {
        let first = self.chunks.iter().find(|c| !c.is_empty());
        let head = match first {
            Some(c) if c.len() >= self.headers_len => c.slice(..self.headers_len),
            _ => {
                let mut all = BytesMut::with_capacity(self.headers_len);
                for c in &self.chunks {
                    let take = (self.headers_len - all.len()).min(c.len());
                    all.extend_from_slice(&c[..take]);
                }
                all.freeze()
            }
        };
        let trace = trace.map(ToString::to_string);
        let with = Rewrite {
            trace: trace.as_deref(),
            ..with
        };
        let headers = rewrite(&head, &with).unwrap_or_else(|| {
            // Unreachable for HEADERS this edge decoded; never forward a credential.
            let mut headers = self.headers.clone();
            headers.credential = None;
            headers.tenant = with.tenant.map(str::to_owned).or(headers.tenant);
            headers.max_tokens = with.max_tokens.or(headers.max_tokens);
            headers.resume = with.resume;
            Frame::Headers(headers).to_bytes()
        });
        let mut out = Vec::with_capacity(self.chunks.len() + 2);
        out.push(headers);
        out.extend(self.after_headers());
        if let Some(text) = text {
            for at in (0..text.len()).step_by(MAX_BODY_FRAME) {
                let part = text.slice(at..(at + MAX_BODY_FRAME).min(text.len()));
                out.push(Frame::Body(part).to_bytes());
            }
        }
        out
    }

    /// The received bytes after the HEADERS frame, sliced.
    fn after_headers(&self) -> impl Iterator<Item = Bytes> + '_ {
        let mut skip = self.headers_len;
        self.chunks.iter().filter_map(move |c| {
            if skip >= c.len() {
                skip -= c.len();
                None
            } else {
                let part = c.slice(skip..);
                skip = 0;
                Some(part)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_chunks_replace_only_the_trace_context() {
        let mut headers = RequestHeaders::new("m");
        headers.area = Some("jp".into());
        headers.trace_context =
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
        let head = Frame::Headers(headers.clone()).to_bytes();
        let mut stream = head.to_vec();
        stream.extend_from_slice(&Frame::Body(Bytes::from_static(b"prompt")).to_bytes());
        let stream = Bytes::from(stream);
        let ctx = TraceContext::parse(headers.trace_context.as_deref().unwrap())
            .unwrap()
            .child();
        for split in 0..=stream.len() {
            let chunks = vec![stream.slice(..split), stream.slice(split..)];
            let intake = Intake {
                headers: headers.clone(),
                chunks: chunks.clone(),
                headers_len: head.len(),
                prefix: Vec::new(),
                _held: None,
            };
            assert_eq!(intake.upstream_chunks(None, None, None), chunks);
            let mut out = BytesMut::new();
            for c in intake.upstream_chunks(Some(&ctx), None, None) {
                out.extend_from_slice(&c);
            }
            let mut out = out.freeze();
            let Ok(Frame::Headers(h)) = Frame::decode(&mut out) else {
                panic!("HEADERS first");
            };
            assert_eq!(h.trace_context, Some(ctx.to_string()));
            assert_eq!(
                RequestHeaders {
                    trace_context: None,
                    ..h
                },
                RequestHeaders {
                    trace_context: None,
                    ..headers.clone()
                }
            );
            assert_eq!(
                Frame::decode(&mut out).unwrap(),
                Frame::Body(Bytes::from_static(b"prompt"))
            );
            assert!(out.is_empty(), "split at {split}");
        }
    }
}
