//! One request through the edge: intake, route, forward, relay tokens back.
//!
//! The token path is zero-copy: each chunk quinn hands us from the worker's stream
//! (`read_chunk`) is written to the client's stream as the same `Bytes` (`write_chunk`);
//! a [`ResponseTracker`] follows the framing in place so the edge knows where frames end
//! (for clean failure handling) without buffering, copying or allocating per token.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use meridian_protocol::{ErrorCode, ErrorFrame, Routed};
use quinn::{RecvStream, SendStream};
use tokio::time::Instant;
use tracing::debug;

use super::intake::{self, Intake, IntakeError};
use super::sink::{code, QuicSink, Sink};
use super::track::ResponseTracker;
use super::EdgeShared;
use crate::config::WorkerId;
use crate::route::RouteRequest;
use crate::telemetry::{Span, SpanKind, TraceContext};

/// Where a request's latencies are recorded.
struct Timing<'a> {
    arrived: Instant,
    latencies: Option<&'a super::Latencies>,
}

impl Timing<'_> {
    /// A chunk carrying tokens is being relayed: first one → TTFT, later ones → ITL.
    fn tokens(&self, last: &mut Option<Instant>) {
        let Some(l) = self.latencies else { return };
        let now = Instant::now();
        match last.replace(now) {
            None => l.ttft.observe(now - self.arrived),
            Some(prev) => l.itl.observe(now - prev),
        }
    }
}

/// Decrements the active-stream gauge however the request ends.
struct ActiveStream<'a>(&'a super::EdgeStats);

impl Drop for ActiveStream<'_> {
    fn drop(&mut self) {
        self.0.active_streams.fetch_sub(1, Relaxed);
    }
}

/// How one upstream attempt ended.
enum Attempt {
    /// END or ERROR (`worker_error`, with its code) relayed; the client stream is finished.
    Done {
        tokens: u64,
        worker_error: Option<ErrorCode>,
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
}

/// Serves one client QUIC request stream to completion.
pub(crate) async fn serve(send: SendStream, mut recv: RecvStream, edge: Arc<EdgeShared>) {
    // PROTOCOL.md §4.7: the deadline counts from the stream's arrival (≤ HEADERS receipt).
    let arrived = Instant::now();
    let mut sink = QuicSink::new(send);
    let cfg = edge.router.config();
    let intake = tokio::select! {
        r = intake::read(
            &mut recv,
            cfg.edge.max_prompt_bytes,
            cfg.routing.prefix_bytes,
            &edge.stats.budget,
            |h| edge.auth.identify(h, crate::auth::unix_now()).map(|_| ()),
        ) => r,
        _ = sink.gone() => Err(IntakeError::Gone),
        // A client that never finishes sending must not hold a stream and its buffers.
        _ = tokio::time::sleep(cfg.edge.intake_timeout) => Err(IntakeError::Reject(ErrorFrame::new(
            ErrorCode::DEADLINE_EXCEEDED,
            format!("request not received completely within {:?}", cfg.edge.intake_timeout),
        ))),
    };
    match intake {
        Ok(i) => dispatch(&i, arrived, &mut sink, &edge).await,
        Err(IntakeError::Gone) => {
            edge.stats.requests.fetch_add(1, Relaxed);
            edge.stats.cancelled.fetch_add(1, Relaxed);
            // PROTOCOL.md §4.7: a cancelled request ends with a reset, never a bare FIN
            // (which is what dropping the stream would send).
            let _ = sink.send.reset(code(ErrorCode::CANCELLED));
        }
        Err(IntakeError::Reject(e)) => {
            edge.stats.requests.fetch_add(1, Relaxed);
            let _ = recv.stop(code(e.code));
            fail(&mut sink, &edge, e).await;
        }
    }
    // The request's task (which a draining edge waits for) ends once the client has the
    // whole answer: closing the connection earlier would discard its last bytes.
    sink.delivered().await;
}

/// Answers the client with `e` and ends the response.
async fn fail(sink: &mut impl Sink, edge: &EdgeShared, e: ErrorFrame) {
    edge.stats.error(e.code);
    sink.fail(e, true).await;
}

/// Marks `span` failed with a wire error.
fn span_error(span: &mut Span, code: ErrorCode, message: &str) {
    if span.recording() {
        span.set("meridian.error_code", code.to_string());
        span.fail(message);
    }
}

/// Routes a received request and relays the chosen worker's answer into `sink`, retrying on
/// the next candidate (same residency rules) while no worker byte has reached the client.
/// Traced as `meridian.edge.request`, parented to the client's `trace_context` if valid.
pub(crate) async fn dispatch(
    intake: &Intake,
    arrived: Instant,
    sink: &mut impl Sink,
    edge: &EdgeShared,
) {
    edge.stats.requests.fetch_add(1, Relaxed);
    edge.stats.active_streams.fetch_add(1, Relaxed);
    let _active = ActiveStream(&edge.stats);
    let parent = (intake.headers.trace_context.as_deref()).and_then(TraceContext::parse);
    let mut span = (edge.tracer).start("meridian.edge.request", SpanKind::Server, parent.as_ref());
    if span.recording() {
        let h = &intake.headers;
        span.set("gen_ai.request.model", h.model.as_str());
        span.set("meridian.pop", edge.router.config().edge.pop.as_str());
        if let Some(a) = h.area.as_deref() {
            span.set("meridian.area", a);
        }
    }
    // Identity and limits first: the tenant — and so the residency policy — is the
    // credential's, never the claim's.
    // Limits run on the admission time, not the stream's arrival (intake may take a while).
    let now_ns = edge.epoch.elapsed().as_nanos() as u64;
    let mut admission = match edge
        .auth
        .admit(&intake.headers, crate::auth::unix_now(), now_ns)
    {
        Ok(a) => a,
        Err(e) => {
            span_error(&mut span, e.code, &e.message);
            return fail(sink, edge, e).await;
        }
    };
    let tenant = admission.tenant();
    if span.recording() {
        if let Some(t) = tenant {
            span.set("meridian.tenant", t);
        }
    }
    let cap = admission.token_cap();
    let (tokens, region) =
        route_and_relay(intake, (tenant, cap), arrived, sink, edge, &mut span).await;
    // The worker was told `max_tokens = cap`: a count above it (a misreporting backend) is
    // not charged beyond the cap.
    let tokens = tokens.min(cap.unwrap_or(u64::MAX));
    admission.settle(tokens);
    if let Some(r) = region {
        edge.stats
            .spend(r, &intake.headers.model, tokens, edge.router.price(r));
    }
}

/// Whether a worker's ERROR means the worker (or its backend) failed, rather than the request
/// or the client (bad request, limits, deadline): only those count against its health.
fn worker_fault(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::UPSTREAM_FAILED | ErrorCode::INTERNAL | ErrorCode::PROTOCOL_ERROR
    )
}

/// Routes and relays; returns the tokens relayed to the client and the region of the last
/// attempt that relayed any (whose price they cost).
async fn route_and_relay(
    intake: &Intake,
    (tenant, cap): (Option<&str>, Option<u64>),
    arrived: Instant,
    sink: &mut impl Sink,
    edge: &EdgeShared,
    span: &mut Span,
) -> (u64, Option<crate::config::RegionId>) {
    let cfg = edge.router.config();
    // A deadline beyond what the clock can represent (any varint up to 2^62 - 1 ms may come
    // from a peer) is no deadline, never an overflow.
    let deadline =
        (intake.headers.deadline_ms).and_then(|ms| arrived.checked_add(Duration::from_millis(ms)));
    // PROTOCOL.md §4.1: an empty shard_key counts as absent (the prompt's prefix is hashed).
    let shard_key = (intake.headers.shard_key.clone())
        .filter(|k| !k.is_empty())
        .unwrap_or_else(|| Bytes::copy_from_slice(&intake.prefix));
    let area = intake
        .headers
        .area
        .as_deref()
        .or(cfg.edge.default_area.as_deref());
    let mut exclude: Vec<WorkerId> = Vec::new();
    for attempt in 1..=u64::from(cfg.routing.max_attempts) {
        let req = RouteRequest {
            model: &intake.headers.model,
            area,
            tenant,
            residency: intake.headers.residency.as_deref(),
            shard_key: &shard_key,
            exclude: &exclude,
        };
        let decision = match edge.router.route(&req) {
            Ok(d) => d,
            Err(e) => {
                if e.code() == ErrorCode::RESIDENCY_UNAVAILABLE {
                    edge.stats.residency_rejections.fetch_add(1, Relaxed);
                }
                span_error(span, e.code(), &e.to_string());
                fail(sink, edge, ErrorFrame::new(e.code(), e.to_string())).await;
                return (0, None);
            }
        };
        let worker_id = decision.worker;
        let worker = &cfg.workers[worker_id];
        let routed = Routed {
            region: cfg.regions[decision.region].name.clone(),
            worker: worker.name.clone(),
            attempt,
        };
        let mut att = span.child("meridian.edge.attempt", SpanKind::Client);
        if span.recording() {
            for s in [&mut *span, &mut att] {
                s.set("meridian.region", routed.region.as_str());
                s.set("meridian.worker", routed.worker.as_str());
                s.set("meridian.attempt", attempt);
            }
        }
        if !sink.routed(routed).await {
            edge.stats.cancelled.fetch_add(1, Relaxed);
            span.set("meridian.outcome", "cancelled");
            return (0, None);
        }
        edge.stats.routed(decision.region);
        let timing = Timing {
            arrived,
            latencies: edge.stats.latencies(decision.region, &intake.headers.model),
        };
        let outcome = match edge.upstreams.connection(decision.worker) {
            Some(conn) => {
                let up = Upstream {
                    conn: &conn,
                    chunks: intake.upstream_chunks(att.context(), tenant, cap),
                    health: &edge.router.worker(worker_id).health,
                };
                forward(up, sink, deadline, &timing, edge).await
            }
            None => Attempt::FailedClean("no connection".into()),
        };
        let region = Some(decision.region);
        drop(decision);
        let failed = match &outcome {
            Attempt::Done { worker_error, .. } => worker_error.is_some_and(worker_fault),
            Attempt::FailedClean(_) | Attempt::FailedDirty { .. } => true,
            Attempt::Draining | Attempt::ClientGone { .. } | Attempt::Deadline { .. } => false,
        };
        // A deadline or a cancel says nothing about the worker (a silent one is caught by the
        // stall limit, which is a failure).
        let judged = !matches!(
            outcome,
            Attempt::Draining | Attempt::ClientGone { .. } | Attempt::Deadline { .. }
        );
        if judged {
            edge.router.record_attempt(worker_id, failed);
        }
        match outcome {
            Attempt::Done {
                tokens,
                worker_error,
            } => {
                span.set("meridian.tokens", tokens);
                if worker_error.is_some() {
                    let msg = "the worker answered with an ERROR frame";
                    att.fail(msg);
                    span.fail(msg);
                }
                return (tokens, region);
            }
            Attempt::FailedDirty { msg, tokens } => {
                span_error(&mut att, ErrorCode::UPSTREAM_FAILED, &msg);
                span_error(span, ErrorCode::UPSTREAM_FAILED, &msg);
                return (tokens, region);
            }
            Attempt::Deadline { tokens } => {
                let msg = "the request's deadline passed";
                span_error(&mut att, ErrorCode::DEADLINE_EXCEEDED, msg);
                span_error(span, ErrorCode::DEADLINE_EXCEEDED, msg);
                return (tokens, region);
            }
            Attempt::ClientGone { tokens } => {
                edge.stats.cancelled.fetch_add(1, Relaxed);
                att.set("meridian.outcome", "cancelled");
                span.set("meridian.outcome", "cancelled");
                return (tokens, region);
            }
            Attempt::Draining => {
                let reason = "the worker is draining (UNAVAILABLE)";
                span_error(&mut att, ErrorCode::UNAVAILABLE, reason);
                debug!(worker = %worker.name, attempt, "worker draining; retrying elsewhere");
                edge.stats.retries.fetch_add(1, Relaxed);
                exclude.push(worker_id);
            }
            Attempt::FailedClean(reason) => {
                span_error(&mut att, ErrorCode::UPSTREAM_FAILED, &reason);
                debug!(worker = %worker.name, %reason, attempt, "upstream attempt failed before any token; retrying");
                edge.stats.retries.fetch_add(1, Relaxed);
                exclude.push(worker_id);
            }
        }
    }
    let msg = format!(
        "{} attempts failed before the first token",
        cfg.routing.max_attempts
    );
    span_error(span, ErrorCode::UPSTREAM_FAILED, &msg);
    fail(sink, edge, ErrorFrame::new(ErrorCode::UPSTREAM_FAILED, msg)).await;
    (0, None)
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

/// One attempt's upstream: the worker's connection, the request bytes to send, and where
/// its observed TTFT goes.
struct Upstream<'a> {
    conn: &'a quinn::Connection,
    chunks: Vec<Bytes>,
    health: &'a crate::route::health::Health,
}

/// Sends the request to one worker and relays its answer.
async fn forward(
    up: Upstream<'_>,
    sink: &mut impl Sink,
    deadline: Option<Instant>,
    timing: &Timing<'_>,
    edge: &EdgeShared,
) -> Attempt {
    let mut last_tokens: Option<Instant> = None;
    let sleep = tokio::time::sleep_until(
        deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365)),
    );
    tokio::pin!(sleep);
    let cancel_upstream = |up_send: &mut SendStream, up_recv: &mut RecvStream, c: ErrorCode| {
        let _ = up_recv.stop(code(c));
        let _ = up_send.reset(code(c));
    };
    // Waiting for a stream (the worker's stream limit) or for flow control to take the
    // request: a client that leaves or a deadline that passes ends the wait.
    let (mut up_send, mut up_recv) = tokio::select! {
        s = up.conn.open_bi() => match s {
            Ok(s) => s,
            Err(e) => return Attempt::FailedClean(e.to_string()),
        },
        _ = sink.gone() => return Attempt::ClientGone { tokens: 0 },
        _ = &mut sleep, if deadline.is_some() => return deadline_passed(sink, edge, true, 0).await,
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
    match stopped {
        None => {}
        Some(c) => {
            cancel_upstream(&mut up_send, &mut up_recv, c);
            if c == ErrorCode::CANCELLED {
                return Attempt::ClientGone { tokens: 0 };
            }
            return deadline_passed(sink, edge, true, 0).await;
        }
    }
    let _ = up_send.finish();
    let sent_at = Instant::now();
    let mut tracker = ResponseTracker::new();
    let mut relayed = 0u64;
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
    let failure: String = loop {
        tokio::select! {
            chunk = up_recv.read_chunk(usize::MAX, true) => match chunk {
                Ok(Some(chunk)) => {
                    if stall.is_some() {
                        heard = Instant::now();
                    }
                    match tracker.on_chunk(&chunk.bytes) {
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
                    // A draining worker answers a stream that crossed its GOAWAY with
                    // UNAVAILABLE before anything else (PROTOCOL.md §5.4): not the client's
                    // answer, but a reason to send the request to another worker.
                    if relayed == 0
                        && tracker.forwarded() == chunk.bytes.len()
                        && tracker.complete()
                        && tracker.error_code() == Some(ErrorCode::UNAVAILABLE)
                        && tracker.error_retryable()
                    {
                        cancel_upstream(&mut up_send, &mut up_recv, ErrorCode::CANCELLED);
                        return Attempt::Draining;
                    }
                    if !sink.chunk(chunk.bytes).await {
                        cancel_upstream(&mut up_send, &mut up_recv, ErrorCode::CANCELLED);
                        return Attempt::ClientGone { tokens: relayed };
                    }
                }
                Ok(None) if tracker.complete() => {
                    sink.finish();
                    if let Some(l) = timing.latencies {
                        l.e2e.observe(timing.arrived.elapsed());
                    }
                    // A TOKENS frame carries one or more tokens: END's count is the real one.
                    let tokens = relayed.max(tracker.completion_tokens().unwrap_or(0));
                    let worker_error = tracker.ended_with_error().then(|| {
                        tracker.error_code().unwrap_or(ErrorCode::INTERNAL)
                    });
                    return Attempt::Done { tokens, worker_error };
                }
                Ok(None) => break "worker finished the stream without END".into(),
                Err(e) => break e.to_string(),
            },
            _ = sink.gone() => {
                cancel_upstream(&mut up_send, &mut up_recv, ErrorCode::CANCELLED);
                return Attempt::ClientGone { tokens: relayed };
            }
            _ = &mut sleep, if timed => {
                let now = Instant::now();
                if deadline.is_some_and(|d| now >= d) {
                    cancel_upstream(&mut up_send, &mut up_recv, ErrorCode::DEADLINE_EXCEEDED);
                    return deadline_passed(sink, edge, tracker.at_boundary(), relayed).await;
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
    if tracker.forwarded() == 0 {
        return Attempt::FailedClean(failure);
    }
    // Tokens already reached the client: never a silent clean end.
    edge.stats.error(ErrorCode::UPSTREAM_FAILED);
    let msg = format!("worker failed mid-stream: {failure}");
    let e = ErrorFrame::new(ErrorCode::UPSTREAM_FAILED, msg.clone());
    sink.fail(e, tracker.at_boundary()).await;
    Attempt::FailedDirty {
        msg,
        tokens: relayed,
    }
}
