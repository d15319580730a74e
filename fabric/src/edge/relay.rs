//! One request through the edge: intake, route, then attempts (`forward`) until one answers:
//! retries before the first token, and — for a resumable stream — continuations on another
//! worker after it (PROTOCOL.md §4.7, §4.10), always inside the request's residency policy.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use meridian_protocol::{ErrorCode, ErrorFrame, Routed};
use quinn::{RecvStream, SendStream};
use tokio::time::Instant;
use tracing::debug;

use super::forward::{forward, Attempt, Upstream};
use super::intake::{self, Intake, IntakeError};
use super::resume::Resume;
use super::sink::{code, QuicSink, Sink};
use super::EdgeShared;
use crate::config::RegionId;
use crate::route::{Pinned, RouteRequest, Topology};
use crate::telemetry::{Span, SpanKind, TraceContext};

/// Where a request's latencies are recorded.
pub(super) struct Timing<'a> {
    pub arrived: Instant,
    pub latencies: Option<&'a super::Latencies>,
}

impl Timing<'_> {
    /// A chunk carrying tokens is being relayed: first one → TTFT, later ones → ITL.
    pub(super) fn tokens(&self, last: &mut Option<Instant>) {
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
            |h| edge.auth.read(|a| a.identify(h, crate::auth::unix_now()).map(|_| ())),
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
    // PROTOCOL.md §4.10: only an edge marks a continuation.
    if intake.headers.resume.is_some() {
        let e = ErrorFrame::new(
            ErrorCode::BAD_REQUEST,
            "resume_offset and resume_text_len are set by an edge only, never by a client",
        );
        span_error(&mut span, e.code, &e.message);
        return fail(sink, edge, e).await;
    }
    // Identity and limits first: the tenant — and so the residency policy — is the
    // credential's, never the claim's.
    // Limits run on the admission time, not the stream's arrival (intake may take a while).
    let now_ns = edge.epoch.elapsed().as_nanos() as u64;
    // The tenants of the running config; the admission keeps its own for the request's life.
    let auth = edge.auth.load();
    let mut admission = match auth.admit(&intake.headers, crate::auth::unix_now(), now_ns) {
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
    let (tokens, served) =
        route_and_relay(intake, (tenant, cap), arrived, sink, edge, &mut span).await;
    // The worker was told `max_tokens = cap`: a count above it (a misreporting backend) is
    // not charged beyond the cap.
    let tokens = tokens.min(cap.unwrap_or(u64::MAX));
    admission.settle(tokens);
    if let Some((topo, r)) = served {
        if let Some(l) = topo.latencies(r, &intake.headers.model) {
            l.spend(tokens, topo.regions[r].price());
        }
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

/// The region (and its generation) of the last attempt that relayed tokens: whose price
/// they cost.
type Served = Option<(Arc<Topology>, RegionId)>;

/// Routes and relays; returns the tokens relayed to the client and where they were served.
async fn route_and_relay(
    intake: &Intake,
    (tenant, cap): (Option<&str>, Option<u64>),
    arrived: Instant,
    sink: &mut impl Sink,
    edge: &EdgeShared,
    span: &mut Span,
) -> (u64, Served) {
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
    let mut resume = (intake.headers.resumable)
        .then(|| Resume::new(cfg.edge.resume_buffer_bytes, &edge.stats.resume));
    // Workers that failed this request, by uid (stable across reloads).
    let mut exclude: Vec<u64> = Vec::new();
    // The residency of the first decision: later attempts stay inside it even if a reload
    // changed the policy in between (they must satisfy both).
    let mut pinned: Option<Pinned> = None;
    // Why the last worker broke the answer, the tokens the client has, and where they came
    // from (a resumption).
    let mut broken: Option<(String, u64, Served)> = None;
    for attempt in 1..=u64::from(cfg.routing.max_attempts) {
        // Every attempt — first try, retry or continuation — is routed by the same rules:
        // the request's residency policy, minus the workers that already failed it.
        let req = RouteRequest {
            model: &intake.headers.model,
            area,
            tenant,
            residency: intake.headers.residency.as_deref(),
            shard_key: &shard_key,
            exclude: &exclude,
            pinned: pinned.as_ref(),
        };
        let decision = match edge.router.route(&req) {
            Ok(d) => d,
            Err(e) => {
                if e.code() == ErrorCode::RESIDENCY_UNAVAILABLE {
                    edge.stats.residency_rejections.fetch_add(1, Relaxed);
                }
                let Some((why, tokens, region)) = broken else {
                    span_error(span, e.code(), &e.to_string());
                    fail(sink, edge, ErrorFrame::new(e.code(), e.to_string())).await;
                    return (0, None);
                };
                // PROTOCOL.md §4.10: nowhere left to continue: an error, never a clean END.
                edge.stats.resume.exhausted.fetch_add(1, Relaxed);
                let code = match e.code() {
                    ErrorCode::RESIDENCY_UNAVAILABLE => ErrorCode::RESIDENCY_UNAVAILABLE,
                    _ => ErrorCode::UPSTREAM_FAILED,
                };
                let msg = format!(
                    "worker failed mid-stream ({why}) and the answer cannot be resumed: {e}"
                );
                span_error(span, code, &msg);
                fail(sink, edge, ErrorFrame::new(code, msg)).await;
                return (tokens, region);
            }
        };
        if pinned.is_none() {
            pinned = Some(Pinned::of(&decision));
        }
        let (worker_id, topo) = (decision.worker, decision.topology().clone());
        let worker = &topo.config.workers[worker_id];
        let resumed_at = (resume.as_ref())
            .filter(|r| r.started)
            .map(|r| r.transcript.offset());
        let routed = Routed {
            region: decision.region_name().to_owned(),
            worker: worker.name.clone(),
            attempt,
            resumed_at,
        };
        let mut att = span.child("meridian.edge.attempt", SpanKind::Client);
        if span.recording() {
            for s in [&mut *span, &mut att] {
                s.set("meridian.region", routed.region.as_str());
                s.set("meridian.worker", routed.worker.as_str());
                s.set("meridian.attempt", attempt);
            }
            if let Some(at) = resumed_at {
                att.set("meridian.resumed_at", at);
            }
        }
        if !sink.routed(routed).await {
            edge.stats.cancelled.fetch_add(1, Relaxed);
            span.set("meridian.outcome", "cancelled");
            return broken.map_or((0, None), |b| (b.1, b.2));
        }
        topo.regions[decision.region].routes.fetch_add(1, Relaxed);
        if resumed_at.is_some() {
            edge.stats.resume.resumed.fetch_add(1, Relaxed);
        }
        let timing = Timing {
            arrived,
            latencies: topo.latencies(decision.region, &intake.headers.model),
        };
        let outcome = match decision.state().links.connection() {
            Some(conn) => {
                let chunks = match (resumed_at, resume.as_ref()) {
                    (Some(offset), Some(r)) => intake.continuation_chunks(
                        att.context(),
                        tenant,
                        cap,
                        (offset, r.transcript.text()),
                    ),
                    _ => intake.upstream_chunks(att.context(), tenant, cap),
                };
                let up = Upstream {
                    conn: &conn,
                    chunks,
                    health: &topo.workers[worker_id].health,
                };
                forward(up, sink, deadline, &timing, edge, resume.as_mut()).await
            }
            None => Attempt::FailedClean("no connection".into()),
        };
        let region = Some((topo.clone(), decision.region));
        let uid = decision.uid();
        drop(decision);
        let failed = match &outcome {
            Attempt::Done { worker_error, .. } => worker_error.is_some_and(worker_fault),
            Attempt::FailedClean(_) | Attempt::FailedDirty { .. } | Attempt::Broken { .. } => true,
            Attempt::Refused(code) => worker_fault(*code),
            Attempt::Draining | Attempt::ClientGone { .. } | Attempt::Deadline { .. } => false,
        };
        // A deadline or a cancel says nothing about the worker (a silent one is caught by the
        // stall limit, which is a failure).
        let judged = !matches!(
            outcome,
            Attempt::Draining | Attempt::ClientGone { .. } | Attempt::Deadline { .. }
        );
        if judged {
            edge.router.record_attempt(&topo, worker_id, failed);
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
            Attempt::Refused(c) => {
                let msg = format!(
                    "worker failed mid-stream ({}); worker {} cannot continue the answer ({c})",
                    broken.map_or_else(String::new, |b| b.0),
                    worker.name
                );
                edge.stats.resume.refused.fetch_add(1, Relaxed);
                edge.stats.error(ErrorCode::UPSTREAM_FAILED);
                span_error(&mut att, c, &msg);
                span_error(span, ErrorCode::UPSTREAM_FAILED, &msg);
                sink.fail(ErrorFrame::new(ErrorCode::UPSTREAM_FAILED, msg), true)
                    .await;
                return (resume.map_or(0, |r| r.transcript.offset()), region);
            }
            Attempt::Broken { msg, tokens } => {
                span_error(&mut att, ErrorCode::UPSTREAM_FAILED, &msg);
                debug!(worker = %worker.name, %msg, attempt, tokens, "worker failed mid-stream; resuming elsewhere");
                exclude.push(uid);
                broken = Some((msg, tokens, region));
            }
            Attempt::Draining => {
                let reason = "the worker is draining (UNAVAILABLE)";
                span_error(&mut att, ErrorCode::UNAVAILABLE, reason);
                debug!(worker = %worker.name, attempt, "worker draining; retrying elsewhere");
                edge.stats.retries.fetch_add(1, Relaxed);
                exclude.push(uid);
            }
            Attempt::FailedClean(reason) => {
                span_error(&mut att, ErrorCode::UPSTREAM_FAILED, &reason);
                debug!(worker = %worker.name, %reason, attempt, "upstream attempt failed before any token; retrying");
                edge.stats.retries.fetch_add(1, Relaxed);
                exclude.push(uid);
            }
        }
    }
    let (msg, tokens, region) = match broken {
        Some((why, tokens, region)) => {
            edge.stats.resume.exhausted.fetch_add(1, Relaxed);
            let msg = format!(
                "worker failed mid-stream ({why}); {} attempts used, the answer is incomplete",
                cfg.routing.max_attempts
            );
            (msg, tokens, region)
        }
        None => {
            let msg = format!(
                "{} attempts failed before the first token",
                cfg.routing.max_attempts
            );
            (msg, 0, None)
        }
    };
    span_error(span, ErrorCode::UPSTREAM_FAILED, &msg);
    fail(sink, edge, ErrorFrame::new(ErrorCode::UPSTREAM_FAILED, msg)).await;
    (tokens, region)
}
