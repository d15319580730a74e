//! What the edge records about a request, in the OpenTelemetry GenAI semantic conventions:
//! its server span is named `{gen_ai.operation.name} {gen_ai.request.model}` with the
//! `gen_ai.*` request and usage attributes (Meridian's own dimensions under `meridian.*`),
//! and when it ends its duration, time to first token, time per output token and token usage
//! go to the (region, model)'s `gen_ai.*` metrics. Prompt and answer content never: only
//! names, counts and times.

use meridian_protocol::ErrorCode;
use tokio::time::Instant;

use super::attempts::Outcome;
use super::intake::Intake;
use super::EdgeShared;
use crate::telemetry::genai::{Finished, PROVIDER};
use crate::telemetry::{Span, SpanKind, TraceContext};

/// The `error.type` of a wire error: its code name in lower case (`upstream_failed`).
pub fn error_type(code: ErrorCode) -> String {
    code.to_string().to_lowercase()
}

/// Starts the request's server span under the client's trace context, if it sent one.
pub(super) fn request_span(edge: &EdgeShared, intake: &Intake) -> Span {
    let parent = (intake.headers.trace_context.as_deref()).and_then(TraceContext::parse);
    let mut span = (edge.tracer).start("meridian.edge.request", SpanKind::Server, parent.as_ref());
    if span.recording() {
        let h = &intake.headers;
        let op = intake.operation().name();
        span.rename(|| format!("{op} {}", h.model));
        span.set("gen_ai.operation.name", op);
        span.set("gen_ai.provider.name", PROVIDER);
        span.set("gen_ai.request.model", h.model.as_str());
        span.set("gen_ai.request.stream", true);
        if let Some(m) = h.max_tokens {
            span.set("gen_ai.request.max_tokens", m);
        }
        span.set("meridian.pop", edge.pop.as_str());
        if let Some(a) = h.area.as_deref() {
            span.set("meridian.area", a);
        }
    }
    span
}

/// Starts an upstream attempt's client span: a GenAI call to the worker at its address.
pub(super) fn attempt_span(parent: &Span, intake: &Intake, worker: std::net::SocketAddr) -> Span {
    let mut att = parent.child("meridian.edge.attempt", SpanKind::Client);
    if att.recording() {
        let op = intake.operation().name();
        att.rename(|| format!("{op} {}", intake.headers.model));
        att.set("gen_ai.operation.name", op);
        att.set("gen_ai.provider.name", PROVIDER);
        att.set("gen_ai.request.model", intake.headers.model.as_str());
        att.set("server.address", worker.ip().to_string());
        att.set("server.port", u64::from(worker.port()));
    }
    att
}

/// Records the end of a request: the span's usage and outcome attributes, and the GenAI
/// metrics of the (region, model) that served it (or of the model, if none did).
pub(super) fn finished(
    edge: &EdgeShared,
    intake: &Intake,
    arrived: Instant,
    outcome: &Outcome,
    span: &mut Span,
) {
    if span.recording() {
        span.set("gen_ai.usage.output_tokens", outcome.tokens);
        if let Some((prompt, reason)) = outcome.end {
            span.set("gen_ai.usage.input_tokens", prompt);
            span.set(
                "gen_ai.response.finish_reasons",
                crate::telemetry::Value::Strs(vec![reason.as_str().to_owned()]),
            );
        }
        if let Some(code) = outcome.error {
            span.set("error.type", error_type(code));
        }
    }
    let f = Finished {
        operation: intake.operation(),
        duration: arrived.elapsed(),
        ttft: outcome
            .first_token
            .map(|t| t.saturating_duration_since(arrived)),
        output_tokens: outcome.tokens,
        input_tokens: outcome.end.map(|(prompt, _)| prompt),
        error: outcome.error,
    };
    let model = intake.headers.model.as_str();
    match &outcome.served {
        Some((topo, r)) => {
            if let Some(l) = topo.latencies(*r, model) {
                l.genai.record(&f);
            }
        }
        None => {
            let topo = edge.router.topology();
            if let Some(l) = topo.unrouted(model) {
                l.genai.record(&f);
            }
        }
    }
}
