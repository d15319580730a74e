//! Telemetry in the OpenTelemetry GenAI semantic conventions: W3C trace context carried
//! edge → worker → inference server, spans for each hop, and metrics — exported over
//! OTLP/HTTP when `[telemetry] otlp_endpoint` is configured (off otherwise, at the cost of
//! one branch per request); the GenAI metrics are also in the edge's Prometheus `/metrics`.
//!
//! Spans per request, each named `{gen_ai.operation.name} {gen_ai.request.model}` (e.g.
//! `chat llama-3-8b`) with `gen_ai.*` attributes and Meridian's under `meridian.*`:
//! - the edge's server span: routing to the end of the relay, parented to the client's
//!   `traceparent` when it sent one; usage (`gen_ai.usage.*`) and `error.type` at its end;
//! - the edge's client span, one per upstream attempt (`server.address` = the worker): its
//!   context is what the edge puts in the HEADERS field `trace_context`;
//! - the worker's server span, parented to that attempt; an `openai` backend passes its
//!   context on as `traceparent` to the inference server.
//!
//! Prompt and answer content is never recorded.

pub mod context;
mod export;
pub mod genai;
pub mod metrics;
pub mod push;
mod span;

pub use context::TraceContext;
pub use export::{start, TraceStats};
pub use span::{Span, SpanData, SpanKind, Tracer, Value};

#[cfg(test)]
mod tests;
