//! Distributed tracing: W3C trace context carried edge → worker → inference server, spans
//! for each hop, exported over OTLP/HTTP when `[telemetry] otlp_endpoint` is configured
//! (off otherwise, at the cost of one branch per request).
//!
//! Spans per request:
//! - edge `meridian.edge.request` (server): routing to the end of the relay, parented to
//!   the client's `traceparent` when it sent one;
//! - edge `meridian.edge.attempt` (client), one per upstream attempt: its context is what
//!   the edge puts in the HEADERS field `trace_context`;
//! - worker `meridian.worker.generate` (server), parented to that attempt; an `openai`
//!   backend passes its context on as `traceparent` to the inference server.

pub mod context;
mod export;
mod span;

pub use context::TraceContext;
pub use export::{start, TraceStats};
pub use span::{Span, SpanData, SpanKind, Tracer, Value};

#[cfg(test)]
mod tests;
