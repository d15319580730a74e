//! One request through the edge: intake, route, then attempts (`forward`) until one answers:
//! retries before the first token, and — for a resumable stream — continuations on another
//! worker after it (PROTOCOL.md §4.7, §4.10), always inside the request's residency policy.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::sync::OnceLock;

use meridian_protocol::{ErrorCode, ErrorFrame};
use quinn::{RecvStream, SendStream};
use tokio::time::Instant;

use super::attempts::{route_and_relay, Outcome};
use super::intake::{self, Intake, IntakeError};
use super::observe;
use super::sink::{code, QuicSink, Sink};
use super::EdgeShared;
use crate::route::Pinned;
use crate::telemetry::Span;

/// Where a request's latencies are recorded.
pub(super) struct Timing<'a> {
    pub arrived: Instant,
    pub latencies: Option<&'a super::Latencies>,
    /// When the request's first token was relayed (set once, by the first attempt that
    /// relays one).
    pub first: &'a OnceLock<Instant>,
}

impl Timing<'_> {
    /// A chunk carrying tokens is being relayed: first one → TTFT, later ones → ITL.
    pub(super) fn tokens(&self, last: &mut Option<Instant>) {
        let now = Instant::now();
        let previous = last.replace(now);
        if previous.is_none() {
            // Only the request's first token counts (a resumption's first one does not).
            let _ = self.first.set(now);
        }
        let Some(l) = self.latencies else { return };
        match previous {
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
            |h| {
                let topo = edge.router.topology();
                topo.auth.identify(h, crate::auth::unix_now()).map(|_| ())
            },
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
pub(super) async fn fail(sink: &mut impl Sink, edge: &EdgeShared, e: ErrorFrame) {
    edge.stats.error(e.code);
    sink.fail(e, true).await;
}

/// Marks `span` failed with a wire error.
pub(super) fn span_error(span: &mut Span, code: ErrorCode, message: &str) {
    if span.recording() {
        span.set("meridian.error_code", code.to_string());
        span.fail(message);
    }
}

/// Routes a received request and relays the chosen worker's answer into `sink`, retrying on
/// the next candidate (same residency rules) while no worker byte has reached the client.
/// Traced as a GenAI server span (`{operation} {model}`), parented to the client's
/// `trace_context` if valid; its end is recorded in the GenAI metrics.
pub(crate) async fn dispatch(
    intake: &Intake,
    arrived: Instant,
    sink: &mut impl Sink,
    edge: &EdgeShared,
) {
    edge.stats.requests.fetch_add(1, Relaxed);
    edge.stats.active_streams.fetch_add(1, Relaxed);
    let _active = ActiveStream(&edge.stats);
    let mut span = observe::request_span(edge, intake);
    let refused = |span: &mut Span, e: &ErrorFrame| {
        span_error(span, e.code, &e.message);
        let outcome = Outcome::new(0, None, Some(e.code));
        observe::finished(edge, intake, arrived, &outcome, span);
    };
    // PROTOCOL.md §4.10: only an edge marks a continuation.
    if intake.headers.resume.is_some() {
        let e = ErrorFrame::new(
            ErrorCode::BAD_REQUEST,
            "resume_offset and resume_text_len are set by an edge only, never by a client",
        );
        refused(&mut span, &e);
        return fail(sink, edge, e).await;
    }
    // Identity and limits first: the tenant — and so the residency policy — is the
    // credential's, never the claim's.
    // Limits run on the admission time, not the stream's arrival (intake may take a while).
    let now_ns = edge.epoch.elapsed().as_nanos() as u64;
    // The running generation's tenants: the admission keeps them for the request's life, and
    // the request is first routed inside what that generation's policy allows (a reload in
    // between cannot pair this generation's key → tenant with another's tenant → policy).
    let topo = edge.router.topology();
    let mut admission = match topo
        .auth
        .admit(&intake.headers, crate::auth::unix_now(), now_ns)
    {
        Ok(a) => a,
        Err(e) => {
            refused(&mut span, &e);
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
    // The admitting generation must know the request's residency policy: a policy that only
    // a newer generation has would otherwise route the request without the tenant's policy
    // of the generation that admitted it.
    let residency = intake.headers.residency.as_deref();
    let pinned = match Pinned::admitted(&topo, tenant, residency) {
        Ok(p) => p,
        Err(e) => {
            let e = ErrorFrame::new(e.code(), e.to_string());
            refused(&mut span, &e);
            admission.settle(0);
            return fail(sink, edge, e).await;
        }
    };
    let first = OnceLock::new();
    let who = (tenant, cap);
    let outcome =
        route_and_relay(intake, who, pinned, arrived, sink, edge, &mut span, &first).await;
    let outcome = Outcome {
        first_token: first.get().copied(),
        ..outcome
    };
    // The worker was told `max_tokens = cap`: a count above it (a misreporting backend) is
    // not charged beyond the cap.
    let tokens = outcome.tokens.min(cap.unwrap_or(u64::MAX));
    admission.settle(tokens);
    if let Some((topo, r)) = &outcome.served {
        if let Some(l) = topo.latencies(*r, &intake.headers.model) {
            l.spend(tokens, topo.regions[*r].price());
        }
    }
    observe::finished(edge, intake, arrived, &outcome, &mut span);
}
