//! A request's attempts (PROTOCOL.md §4.7, §4.10): routed, relayed, retried on the next
//! candidate before the first token, and — for a resumable stream — continued on another
//! worker after it, always inside the request's residency policy (and, after a reload, the
//! policy it was first routed under).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use meridian_protocol::{ErrorCode, ErrorFrame, FinishReason, Routed};
use tokio::time::Instant;
use tracing::debug;

use super::forward::{forward, Attempt, Upstream};
use super::intake::Intake;
use super::relay::{fail, span_error, Timing};
use super::resume::Resume;
use super::sink::Sink;
use super::EdgeShared;
use crate::config::RegionId;
use crate::route::{Pinned, RouteRequest, Topology};
use crate::telemetry::Span;

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
pub(super) type Served = Option<(Arc<Topology>, RegionId)>;

/// How a request ended.
pub(super) struct Outcome {
    /// Tokens the client received.
    pub tokens: u64,
    /// Where they were served.
    pub served: Served,
    /// The wire code it failed with (sent by the edge or relayed from a worker), if any.
    pub error: Option<ErrorCode>,
    /// END's prompt token count and finish reason, if it ended with END.
    pub end: Option<(u64, FinishReason)>,
    /// When its first token was relayed.
    pub first_token: Option<Instant>,
}

impl Outcome {
    pub(super) fn new(tokens: u64, served: Served, error: Option<ErrorCode>) -> Self {
        Outcome {
            tokens,
            served,
            error,
            end: None,
            first_token: None,
        }
    }
}

/// Routes and relays, trying worker after worker as PROTOCOL.md §4.7 and §4.10 allow, inside
/// `pinned`: the residency the request was admitted under, then that of its first decision,
/// so every attempt stays inside it even if a reload changed the policy in between (it must
/// satisfy both). `first` gets the instant its first token was relayed.
#[allow(clippy::too_many_arguments)]
pub(super) async fn route_and_relay(
    intake: &Intake,
    (tenant, cap): (Option<&str>, Option<u64>),
    mut pinned: Pinned,
    arrived: Instant,
    sink: &mut impl Sink,
    edge: &EdgeShared,
    span: &mut Span,
    first: &OnceLock<Instant>,
) -> Outcome {
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
            pinned: Some(&pinned),
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
                    return Outcome::new(0, None, Some(e.code()));
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
                return Outcome::new(tokens, region, Some(code));
            }
        };
        if pinned.topology.generation != decision.topology().generation {
            pinned = Pinned::of(&decision);
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
        let mut att = super::observe::attempt_span(span, intake, worker.address);
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
            let (tokens, served) = broken.map_or((0, None), |b| (b.1, b.2));
            return Outcome::new(tokens, served, Some(ErrorCode::CANCELLED));
        }
        topo.regions[decision.region].routes.fetch_add(1, Relaxed);
        if resumed_at.is_some() {
            edge.stats.resume.resumed.fetch_add(1, Relaxed);
        }
        let timing = Timing {
            arrived,
            latencies: topo.latencies(decision.region, &intake.headers.model),
            first,
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
        // A worker retired by a reload while this request was routed to it is not at fault
        // for the connection it no longer has.
        let judged = !matches!(
            outcome,
            Attempt::Draining | Attempt::ClientGone { .. } | Attempt::Deadline { .. }
        ) && !topo.workers[worker_id].is_retired();
        if judged {
            edge.router.record_attempt(&topo, worker_id, failed);
        }
        match outcome {
            Attempt::Done {
                tokens,
                worker_error,
                end,
            } => {
                if worker_error.is_some() {
                    let msg = "the worker answered with an ERROR frame";
                    att.fail(msg);
                    span.fail(msg);
                }
                return Outcome {
                    end,
                    ..Outcome::new(tokens, region, worker_error)
                };
            }
            Attempt::FailedDirty { msg, tokens } => {
                span_error(&mut att, ErrorCode::UPSTREAM_FAILED, &msg);
                span_error(span, ErrorCode::UPSTREAM_FAILED, &msg);
                return Outcome::new(tokens, region, Some(ErrorCode::UPSTREAM_FAILED));
            }
            Attempt::Deadline { tokens } => {
                let msg = "the request's deadline passed";
                span_error(&mut att, ErrorCode::DEADLINE_EXCEEDED, msg);
                span_error(span, ErrorCode::DEADLINE_EXCEEDED, msg);
                return Outcome::new(tokens, region, Some(ErrorCode::DEADLINE_EXCEEDED));
            }
            Attempt::ClientGone { tokens } => {
                edge.stats.cancelled.fetch_add(1, Relaxed);
                att.set("meridian.outcome", "cancelled");
                span.set("meridian.outcome", "cancelled");
                return Outcome::new(tokens, region, Some(ErrorCode::CANCELLED));
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
                let tokens = resume.map_or(0, |r| r.transcript.offset());
                return Outcome::new(tokens, region, Some(ErrorCode::UPSTREAM_FAILED));
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
    Outcome::new(tokens, region, Some(ErrorCode::UPSTREAM_FAILED))
}
