//! One upstream attempt: send the request to a worker and relay its answer to the client.
//!
//! The token path is zero-copy: each chunk quinn hands us from the worker's stream
//! (`read_chunk`) is written to the client's stream as the same `Bytes` (`write_chunk`);
//! a [`ResponseTracker`] follows the framing in place so the edge knows where frames end
//! (for clean failure handling) without buffering, copying or allocating per token. A
//! resumable stream (PROTOCOL.md §4.10) forwards whole frames only, as slices of the same
//! chunks, and appends their text to its bounded [`Transcript`](super::resume::Transcript).

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use meridian_protocol::{ErrorCode, ErrorFrame, FinishReason};
use quinn::{RecvStream, SendStream};
use tokio::time::Instant;

use super::relay::Timing;
use super::resume::Resume;
use super::sink::{code, Sink};
use super::track::ResponseTracker;
use super::EdgeShared;

/// How one upstream attempt ended. Token counts are the whole answer's: the tokens the
/// client had before this attempt (a continuation's offset) plus those it relayed.
pub(super) enum Attempt {
    /// END or ERROR (`worker_error`, with its code) relayed; the client stream is finished.
    /// `end` is END's prompt token count and finish reason.
    Done {
        tokens: u64,
        worker_error: Option<ErrorCode>,
        end: Option<(u64, FinishReason)>,
    },
    /// The client went away after `tokens` were relayed; upstream was cancelled.
    ClientGone { tokens: u64 },
    /// The deadline passed after `tokens` were relayed; the client was told.
    Deadline { tokens: u64 },
    /// The worker failed before any of its bytes reached the client: safe to retry.
    FailedClean(String),
    /// The worker is draining and refused the stream (UNAVAILABLE): retry, no fault of its.
    Draining,
    /// The worker failed after bytes (`tokens` TOKENS frames) reached the client: the
    /// client was told.
    FailedDirty { msg: String, tokens: u64 },
    /// A resumable stream's worker failed after the answer started; the client has whole
    /// frames only and was told nothing: continue the answer elsewhere.
    Broken { msg: String, tokens: u64 },
    /// The worker answered a continuation request with this ERROR before any token (it
    /// cannot continue the answer); nothing was relayed.
    Refused(ErrorCode),
}

/// One attempt's upstream: the worker's connection, the request bytes to send, and where
/// its observed TTFT goes.
pub(super) struct Upstream<'a> {
    pub conn: &'a quinn::Connection,
    pub chunks: Vec<Bytes>,
    pub health: &'a crate::route::health::Health,
}

/// Tells the client its deadline passed.
async fn deadline_passed(
    sink: &mut impl Sink,
    edge: &EdgeShared,
    at_boundary: bool,
    tokens: u64,
) -> Attempt {
    edge.stats.error(ErrorCode::DEADLINE_EXCEEDED);
    let e = ErrorFrame::new(
        ErrorCode::DEADLINE_EXCEEDED,
        "the request's deadline passed",
    );
    sink.fail(e, at_boundary).await;
    Attempt::Deadline { tokens }
}

/// END's prompt token count and finish reason, if the answer ended with END.
fn end_of(tracker: &ResponseTracker) -> Option<(u64, FinishReason)> {
    Some((tracker.prompt_tokens()?, tracker.finish_reason()?))
}

fn cancel_upstream(up_send: &mut SendStream, up_recv: &mut RecvStream, c: ErrorCode) {
    let _ = up_recv.stop(code(c));
    let _ = up_send.reset(code(c));
}

/// Sends the request to one worker and relays its answer; `resume` is the stream's
/// resumption state when it asked to be resumable.
pub(super) async fn forward(
    up: Upstream<'_>,
    sink: &mut impl Sink,
    deadline: Option<Instant>,
    timing: &Timing<'_>,
    edge: &EdgeShared,
    mut resume: Option<&mut Resume>,
) -> Attempt {
    if let Some(r) = resume.as_deref_mut() {
        // Nothing held from an earlier attempt may reach the client before this one's frames.
        r.abandon();
    }
    let base = resume.as_ref().map_or(0, |r| r.transcript.offset());
    let continuation = resume.as_ref().is_some_and(|r| r.started);
    // A continuation's first token is not the request's TTFT: the wait for it counts as the
    // gap between tokens the client saw.
    let mut last_tokens: Option<Instant> = continuation.then(Instant::now);
    let sleep = tokio::time::sleep_until(
        deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365)),
    );
    tokio::pin!(sleep);
    // Waiting for a stream (the worker's stream limit) or for flow control to take the
    // request: a client that leaves or a deadline that passes ends the wait.
    let (mut up_send, mut up_recv) = tokio::select! {
        s = up.conn.open_bi() => match s {
            Ok(s) => s,
            Err(e) => return Attempt::FailedClean(e.to_string()),
        },
        _ = sink.gone() => return Attempt::ClientGone { tokens: base },
        _ = &mut sleep, if deadline.is_some() => return deadline_passed(sink, edge, true, base).await,
    };
    let mut chunks = up.chunks;
    let stopped = tokio::select! {
        w = up_send.write_all_chunks(&mut chunks) => match w {
            Ok(()) => None,
            Err(e) => return Attempt::FailedClean(e.to_string()),
        },
        _ = sink.gone() => Some(ErrorCode::CANCELLED),
        _ = &mut sleep, if deadline.is_some() => Some(ErrorCode::DEADLINE_EXCEEDED),
    };
    if let Some(c) = stopped {
        cancel_upstream(&mut up_send, &mut up_recv, c);
        if c == ErrorCode::CANCELLED {
            return Attempt::ClientGone { tokens: base };
        }
        return deadline_passed(sink, edge, true, base).await;
    }
    let _ = up_send.finish();
    let sent_at = Instant::now();
    let mut tracker = ResponseTracker::new();
    let mut relayed = 0u64;
    // Bytes of this attempt handed to the client.
    let mut sent = 0usize;
    // One timer serves the deadline and the stall limit (a worker silent this long is given
    // up on). It is re-armed lazily, only when it fires early, so a token costs one clock
    // read, not a timer update.
    let stall = edge.router.config().edge.upstream_stall_timeout;
    let mut heard = Instant::now();
    let wake_at = |heard: Instant| {
        let stalled = stall.map(|s| heard + s);
        match (deadline, stalled) {
            (Some(d), Some(s)) => Some(d.min(s)),
            (d, s) => d.or(s),
        }
    };
    if let Some(at) = wake_at(heard) {
        sleep.as_mut().reset(at);
    }
    let timed = deadline.is_some() || stall.is_some();
    // The worker's retryable ERROR is being skipped to resume (it was not relayed).
    let mut resuming_past_error = false;
    let failure: String = loop {
        tokio::select! {
            chunk = up_recv.read_chunk(usize::MAX, true) => match chunk {
                Ok(Some(chunk)) => {
                    let bytes = chunk.bytes;
                    if stall.is_some() {
                        heard = Instant::now();
                    }
                    let tracked = match resume.as_deref_mut() {
                        Some(r) => {
                            let usable = r.transcript.usable();
                            let t = tracker.on_chunk_into(&bytes, &mut r.transcript);
                            if usable && !r.transcript.usable() {
                                edge.stats.resume.over_bound.fetch_add(1, Relaxed);
                            }
                            t
                        }
                        None => tracker.on_chunk(&bytes),
                    };
                    match tracked {
                        Ok(0) => 0,
                        Ok(tokens) => {
                            if relayed == 0 {
                                up.health.first_token(sent_at.elapsed());
                            }
                            relayed += tokens;
                            timing.tokens(&mut last_tokens);
                            edge.stats.tokens.fetch_add(tokens, Relaxed)
                        }
                        Err(e) => {
                            cancel_upstream(&mut up_send, &mut up_recv, ErrorCode::PROTOCOL_ERROR);
                            break e.to_string();
                        }
                    };
                    let error_first =
                        sent == 0 && relayed == 0 && tracker.complete() && tracker.ended_with_error();
                    // A draining worker answers a stream that crossed its GOAWAY with
                    // UNAVAILABLE before anything else (PROTOCOL.md §5.4): not the client's
                    // answer, but a reason to send the request to another worker.
                    if error_first
                        && tracker.error_code() == Some(ErrorCode::UNAVAILABLE)
                        && tracker.error_retryable()
                    {
                        cancel_upstream(&mut up_send, &mut up_recv, ErrorCode::CANCELLED);
                        return Attempt::Draining;
                    }
                    // A continuation answered with an ERROR: a retryable one (busy, failing) sends
                    // the continuation to the next worker; any other means this worker cannot
                    // continue the answer.
                    if error_first && continuation {
                        cancel_upstream(&mut up_send, &mut up_recv, ErrorCode::CANCELLED);
                        let code = tracker.error_code().unwrap_or(ErrorCode::INTERNAL);
                        if tracker.error_retryable() {
                            if let Some(r) = resume.as_deref_mut() {
                                r.abandon();
                            }
                            return Attempt::Broken {
                                msg: format!("worker answered the continuation with {code} (retryable)"),
                                tokens: base,
                            };
                        }
                        return Attempt::Refused(code);
                    }
                    let Some(r) = resume.as_deref_mut() else {
                        sent += bytes.len();
                        if !sink.chunk(bytes).await {
                            cancel_upstream(&mut up_send, &mut up_recv, ErrorCode::CANCELLED);
                            return Attempt::ClientGone { tokens: relayed };
                        }
                        continue;
                    };
                    // PROTOCOL.md §4.10: a retryable ERROR after the answer started is not
                    // relayed; the answer continues elsewhere.
                    let resume_now = r.transcript.usable()
                        && (r.started || relayed > 0)
                        && tracker.complete()
                        && tracker.ended_with_error()
                        && tracker.error_retryable();
                    r.gate.admit(&tracker, bytes, resume_now, &mut r.ready);
                    for b in r.ready.drain(..) {
                        sent += b.len();
                        if !sink.chunk(b).await {
                            cancel_upstream(&mut up_send, &mut up_recv, ErrorCode::CANCELLED);
                            return Attempt::ClientGone { tokens: base + relayed };
                        }
                    }
                    r.started |= sent > 0;
                    if resume_now {
                        let code = tracker.error_code().unwrap_or(ErrorCode::INTERNAL);
                        resuming_past_error = true;
                        break format!("worker answered {code} (retryable)");
                    }
                }
                Ok(None) if tracker.complete() => {
                    sink.finish();
                    if let Some(l) = timing.latencies {
                        l.e2e.observe(timing.arrived.elapsed());
                    }
                    // A TOKENS frame carries one or more tokens: END's count is the real one
                    // (a continuation's END counts the whole answer).
                    let tokens = (base + relayed).max(tracker.completion_tokens().unwrap_or(0));
                    let worker_error = tracker.ended_with_error().then(|| {
                        tracker.error_code().unwrap_or(ErrorCode::INTERNAL)
                    });
                    return Attempt::Done { tokens, worker_error, end: end_of(&tracker) };
                }
                Ok(None) => break "worker finished the stream without END".into(),
                Err(e) => break e.to_string(),
            },
            _ = sink.gone() => {
                cancel_upstream(&mut up_send, &mut up_recv, ErrorCode::CANCELLED);
                return Attempt::ClientGone { tokens: base + relayed };
            }
            _ = &mut sleep, if timed => {
                let now = Instant::now();
                if deadline.is_some_and(|d| now >= d) {
                    cancel_upstream(&mut up_send, &mut up_recv, ErrorCode::DEADLINE_EXCEEDED);
                    // A resumable stream has only whole frames out.
                    let at_boundary = resume.is_some() || tracker.at_boundary();
                    return deadline_passed(sink, edge, at_boundary, base + relayed).await;
                }
                match stall {
                    Some(limit) if now >= heard + limit => {
                        cancel_upstream(&mut up_send, &mut up_recv, ErrorCode::CANCELLED);
                        break format!("worker sent nothing for {limit:?}");
                    }
                    // Fired for a silence that tokens have since broken: re-arm.
                    _ => sleep.as_mut().reset(wake_at(heard).unwrap_or(now)),
                }
            }
        }
    };
    // The client already has the worker's END or ERROR (the stream broke only after it, or
    // bytes followed it): the answer is over; never a second terminal frame or a resumption.
    if tracker.terminal_ended() && !resuming_past_error {
        sink.finish();
        let tokens = (base + relayed).max(tracker.completion_tokens().unwrap_or(0));
        let worker_error = (tracker.ended_with_error())
            .then(|| tracker.error_code().unwrap_or(ErrorCode::INTERNAL));
        return Attempt::Done {
            tokens,
            worker_error,
            end: end_of(&tracker),
        };
    }
    let tokens = base + relayed;
    let at_boundary = match resume {
        Some(r) => {
            r.abandon();
            if !r.started {
                return Attempt::FailedClean(failure);
            }
            if r.transcript.usable() {
                // Only whole frames reached the client: a dropped partial one is not charged.
                return Attempt::Broken {
                    msg: failure,
                    tokens: r.transcript.offset(),
                };
            }
            true
        }
        None if tracker.forwarded() == 0 => return Attempt::FailedClean(failure),
        None => tracker.at_boundary(),
    };
    // Tokens already reached the client: never a silent clean end.
    edge.stats.error(ErrorCode::UPSTREAM_FAILED);
    let msg = format!("worker failed mid-stream: {failure}");
    let e = ErrorFrame::new(ErrorCode::UPSTREAM_FAILED, msg.clone());
    sink.fail(e, at_boundary).await;
    Attempt::FailedDirty { msg, tokens }
}
