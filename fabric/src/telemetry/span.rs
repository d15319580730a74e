//! Spans: a request's timed steps, recorded at its start and end only (never per token) and
//! handed to the exporter through a bounded lock-free queue. With tracing off, a [`Span`]
//! is an empty value and every call on it is a branch.

use std::borrow::Cow;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::context::{self, TraceContext, SAMPLED};
use super::export::Shared;

/// OTLP span kinds used by Meridian.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanKind {
    /// Work done for a request received from a peer.
    Server,
    /// A request sent to a peer.
    Client,
}

/// A span attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
    /// An array of strings (`gen_ai.response.finish_reasons`).
    Strs(Vec<String>),
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_owned())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}

impl From<u64> for Value {
    fn from(n: u64) -> Self {
        Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}

/// A finished span, as exported.
#[derive(Clone, Debug)]
pub struct SpanData {
    /// The span's own context (trace id, span id, flags).
    pub context: TraceContext,
    /// The parent span, if any (possibly in another process).
    pub parent: Option<[u8; 8]>,
    /// What the span measures, e.g. `chat llama-3-8b` (GenAI: `{operation} {model}`).
    pub name: Cow<'static, str>,
    /// Server or client.
    pub kind: SpanKind,
    /// Start, Unix nanoseconds.
    pub start_ns: u64,
    /// End, Unix nanoseconds.
    pub end_ns: u64,
    /// Attributes, in the order set.
    pub attributes: Vec<(&'static str, Value)>,
    /// `Some(message)` when the span ended in error.
    pub error: Option<String>,
}

/// Creates spans for one process (edge or worker). Cheap to clone; [`Tracer::disabled`]
/// records nothing.
#[derive(Clone, Debug, Default)]
pub struct Tracer {
    pub(super) shared: Option<Arc<Shared>>,
}

impl Tracer {
    /// A tracer that records nothing (tracing not configured).
    pub fn disabled() -> Tracer {
        Tracer { shared: None }
    }

    /// Whether spans are recorded and exported.
    pub fn enabled(&self) -> bool {
        self.shared.is_some()
    }

    /// Starts a span under `parent` (from a `traceparent` received from a peer), or a new
    /// trace without one. A sampled parent's children are recorded; an unsampled parent's
    /// are not (its context still propagates); a new trace is sampled at the configured
    /// ratio, decided from its trace id so every hop agrees.
    pub fn start(&self, name: &'static str, kind: SpanKind, parent: Option<&TraceContext>) -> Span {
        let Some(shared) = &self.shared else {
            return Span::none();
        };
        let (context, parent_id) = match parent {
            Some(p) => (p.child(), Some(p.span_id)),
            None => {
                let trace_id = context::trace_id();
                let mut low = [0u8; 8];
                low.copy_from_slice(&trace_id[8..]);
                let sampled = u64::from_be_bytes(low) <= shared.sample_threshold;
                let flags = if sampled { SAMPLED } else { 0 };
                let span_id = context::span_id();
                (
                    TraceContext {
                        trace_id,
                        span_id,
                        flags,
                    },
                    None,
                )
            }
        };
        let data = context.sampled().then(|| {
            Box::new(SpanData {
                context,
                parent: parent_id,
                name: Cow::Borrowed(name),
                kind,
                start_ns: now_ns(),
                end_ns: 0,
                attributes: Vec::with_capacity(8),
                error: None,
            })
        });
        Span {
            context: Some(context),
            data,
            shared: Some(shared.clone()),
        }
    }
}

/// An open span; it ends (and is queued for export) when dropped, however the request
/// ended.
#[derive(Debug, Default)]
pub struct Span {
    context: Option<TraceContext>,
    data: Option<Box<SpanData>>,
    shared: Option<Arc<Shared>>,
}

impl Span {
    /// A span that records nothing.
    pub fn none() -> Span {
        Span::default()
    }

    /// The context to send to the next hop: this span is the receiver's parent. `None` when
    /// tracing is off.
    pub fn context(&self) -> Option<&TraceContext> {
        self.context.as_ref()
    }

    /// Whether this span will be exported.
    pub fn recording(&self) -> bool {
        self.data.is_some()
    }

    /// A child span in the same trace.
    pub fn child(&self, name: &'static str, kind: SpanKind) -> Span {
        match &self.shared {
            Some(shared) => Tracer {
                shared: Some(shared.clone()),
            }
            .start(name, kind, self.context.as_ref()),
            None => Span::none(),
        }
    }

    /// Sets an attribute (replacing an earlier value of the same key).
    pub fn set(&mut self, key: &'static str, value: impl Into<Value>) {
        if let Some(d) = &mut self.data {
            let value = value.into();
            match d.attributes.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => d.attributes.push((key, value)),
            }
        }
    }

    /// Names the span (a GenAI span is `{operation} {model}`, known once the request is).
    pub fn rename(&mut self, name: impl FnOnce() -> String) {
        if let Some(d) = &mut self.data {
            d.name = Cow::Owned(name());
        }
    }

    /// Marks the span failed with `message`.
    pub fn fail(&mut self, message: impl Into<String>) {
        if let Some(d) = &mut self.data {
            d.error = Some(message.into());
        }
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        let (Some(mut data), Some(shared)) = (self.data.take(), self.shared.take()) else {
            return;
        };
        data.end_ns = now_ns().max(data.start_ns);
        if shared.queue.push(data).is_err() {
            shared.stats.dropped.fetch_add(1, Relaxed);
        } else if shared.queue.len() >= shared.batch {
            shared.wake.notify_one();
        }
    }
}

use super::metrics::unix_ns as now_ns;
