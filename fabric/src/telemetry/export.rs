//! The OTLP exporter: batches finished spans and POSTs them as OTLP/HTTP JSON
//! (`ExportTraceServiceRequest`, opentelemetry-proto v1) to `<endpoint>/v1/traces`, the
//! transport every OpenTelemetry Collector, Jaeger and Tempo accept. Bounded: the queue
//! holds at most `max_queue` spans and drops (and counts) the rest; export failures are
//! counted and logged once per outage, never retried into an unbounded backlog.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use crossbeam::queue::ArrayQueue;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value as Json};
use tokio::sync::Notify;
use tracing::{info, warn};

use super::context::hex;
use super::span::{SpanData, SpanKind, Tracer, Value};
use crate::config::OtlpSettings;
use crate::http1::Pool;

/// How long one export may take before it counts as failed.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long shutdown waits for the last export.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Spans per export request.
const BATCH: usize = 512;

/// Span counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct TraceStats {
    /// Spans the collector accepted.
    pub exported: AtomicU64,
    /// Spans dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Spans lost to failed exports.
    pub failed: AtomicU64,
    /// Metric exports the collector accepted.
    pub metric_exports: AtomicU64,
    /// Metric exports that failed.
    pub metric_export_failures: AtomicU64,
}

impl TraceStats {
    /// Appends the counters in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(out, "# HELP meridian_trace_spans_total Finished spans, by what became of them.\n# TYPE meridian_trace_spans_total counter");
        for (outcome, n) in [
            ("exported", &self.exported),
            ("dropped", &self.dropped),
            ("failed", &self.failed),
        ] {
            let _ = writeln!(
                out,
                "meridian_trace_spans_total{{outcome=\"{outcome}\"}} {}",
                n.load(Relaxed)
            );
        }
        let _ = writeln!(out, "# HELP meridian_metric_exports_total OTLP metric exports, by outcome.\n# TYPE meridian_metric_exports_total counter");
        for (outcome, n) in [
            ("exported", &self.metric_exports),
            ("failed", &self.metric_export_failures),
        ] {
            let _ = writeln!(
                out,
                "meridian_metric_exports_total{{outcome=\"{outcome}\"}} {}",
                n.load(Relaxed)
            );
        }
    }
}

/// State shared by a process's spans and its exporter task.
#[derive(Debug)]
pub(crate) struct Shared {
    pub queue: ArrayQueue<Box<SpanData>>,
    pub batch: usize,
    /// A new trace is sampled when the low 64 bits of its id are ≤ this.
    pub sample_threshold: u64,
    pub wake: Arc<Notify>,
    pub stats: Arc<TraceStats>,
    stopping: AtomicBool,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Starts the exporter for `settings` (or a disabled tracer for `None`). `service` names
/// the process in the trace (OTLP resource `service.name`), `instance` tells replicas apart.
pub fn start(settings: Option<&OtlpSettings>, instance: &str) -> Tracer {
    let Some(s) = settings else {
        return Tracer::disabled();
    };
    let shared = Arc::new(Shared {
        queue: ArrayQueue::new(s.max_queue.max(1)),
        batch: BATCH.min(s.max_queue.max(1)),
        sample_threshold: (s.sample_ratio.clamp(0.0, 1.0) * u64::MAX as f64) as u64,
        wake: Arc::new(Notify::new()),
        stats: Arc::new(TraceStats::default()),
        stopping: AtomicBool::new(false),
        task: Mutex::new(None),
    });
    let resource = resource(s, instance);
    // The task holds the state weakly: a tracer dropped without `shutdown` (a killed node)
    // ends it at the next tick instead of leaving it running.
    let task = tokio::spawn(run(
        Arc::downgrade(&shared),
        shared.wake.clone(),
        s.clone(),
        resource,
    ));
    *shared.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
    info!(endpoint = %format!("http://{}{}", s.authority, s.path), service = %s.service_name, "exporting traces over OTLP/HTTP");
    Tracer {
        shared: Some(shared),
    }
}

impl Tracer {
    /// Span counters (`None` when tracing is off).
    pub fn stats(&self) -> Option<&Arc<TraceStats>> {
        self.shared.as_ref().map(|s| &s.stats)
    }

    /// Exports what is queued and stops the exporter (bounded by a timeout). Call after the
    /// server drained, so the last requests' spans are sent.
    pub async fn shutdown(&self) {
        let Some(shared) = &self.shared else { return };
        shared.stopping.store(true, Relaxed);
        shared.wake.notify_one();
        let task = shared.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = tokio::time::timeout(FLUSH_TIMEOUT, task).await;
        }
    }
}

/// The OTLP resource of a process: `service.name`, `service.instance.id`, `service.version`.
pub(crate) fn resource(s: &OtlpSettings, instance: &str) -> Json {
    json!({ "attributes": [
        attr("service.name", &Value::Str(s.service_name.clone())),
        attr("service.instance.id", &Value::Str(instance.to_owned())),
        attr("service.version", &Value::Str(env!("CARGO_PKG_VERSION").to_owned())),
    ]})
}

async fn run(shared: Weak<Shared>, wake: Arc<Notify>, settings: OtlpSettings, resource: Json) {
    let mut exporter = Exporter::new(&settings.authority, &settings.path, "trace");
    let mut tick = tokio::time::interval(settings.export_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = wake.notified() => {}
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let stopping = shared.stopping.load(Relaxed);
        loop {
            let batch: Vec<Box<SpanData>> = std::iter::from_fn(|| shared.queue.pop())
                .take(shared.batch)
                .collect();
            if batch.is_empty() {
                break;
            }
            let n = batch.len() as u64;
            let body = encode(&resource, &batch);
            if exporter.export(body).await {
                shared.stats.exported.fetch_add(n, Relaxed);
            } else {
                shared.stats.failed.fetch_add(n, Relaxed);
            }
            if batch.len() < shared.batch {
                break;
            }
        }
        if stopping {
            return;
        }
    }
}

/// POSTs OTLP/JSON bodies to one collector path.
pub(crate) struct Exporter {
    authority: String,
    path: String,
    /// What is exported, for logs (`trace`, `metric`).
    signal: &'static str,
    /// One kept-alive connection to the collector.
    pool: Pool,
    /// Whether the last export failed (failures are logged once per outage).
    failing: bool,
}

impl Exporter {
    pub(crate) fn new(authority: &str, path: &str, signal: &'static str) -> Exporter {
        Exporter {
            authority: authority.to_owned(),
            path: path.to_owned(),
            signal,
            pool: Pool::new(authority.to_owned(), 1),
            failing: false,
        }
    }

    pub(crate) async fn export(&mut self, body: Vec<u8>) -> bool {
        let result = tokio::time::timeout(EXPORT_TIMEOUT, self.post(body)).await;
        let err = match result {
            Ok(Ok(())) => {
                if std::mem::take(&mut self.failing) {
                    info!(collector = %self.authority, "{} export recovered", self.signal);
                }
                return true;
            }
            Ok(Err(e)) => e,
            Err(_) => format!("no answer within {EXPORT_TIMEOUT:?}"),
        };
        if !std::mem::replace(&mut self.failing, true) {
            warn!(collector = %self.authority, error = %err, "{} export failed; dropped until the collector answers", self.signal);
        }
        false
    }

    async fn post(&mut self, body: Vec<u8>) -> Result<(), String> {
        let mut sr = self.pool.get().await?;
        let req = hyper::Request::post(&self.path)
            .header("host", &self.authority)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = sr.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            return Err(format!("collector answered {status}: {text}"));
        }
        self.pool.put(sr);
        Ok(())
    }
}

/// An `ExportTraceServiceRequest` in the OTLP/JSON encoding: ids as lowercase hex, 64-bit
/// integers as decimal strings, enums as numbers.
pub(crate) fn encode(resource: &Json, spans: &[Box<SpanData>]) -> Vec<u8> {
    let spans: Vec<Json> = spans.iter().map(|s| span_json(s)).collect();
    let req = json!({ "resourceSpans": [{
        "resource": resource,
        "scopeSpans": [{
            "scope": { "name": "meridian", "version": env!("CARGO_PKG_VERSION") },
            "spans": spans,
        }],
    }]});
    serde_json::to_vec(&req).expect("JSON values serialise")
}

fn span_json(s: &SpanData) -> Json {
    let mut v = json!({
        "traceId": hex(&s.context.trace_id),
        "spanId": hex(&s.context.span_id),
        "name": s.name,
        // SPAN_KIND_SERVER = 2, SPAN_KIND_CLIENT = 3.
        "kind": match s.kind { SpanKind::Server => 2, SpanKind::Client => 3 },
        "startTimeUnixNano": s.start_ns.to_string(),
        "endTimeUnixNano": s.end_ns.to_string(),
        "attributes": s.attributes.iter().map(|(k, v)| attr(k, v)).collect::<Vec<_>>(),
        // STATUS_CODE_UNSET = 0, STATUS_CODE_ERROR = 2.
        "status": match &s.error {
            None => json!({}),
            Some(m) => json!({ "code": 2, "message": m }),
        },
    });
    if let Some(p) = s.parent {
        v["parentSpanId"] = hex(&p).into();
    }
    v
}

pub(crate) fn attr(key: &str, v: &Value) -> Json {
    let value = match v {
        Value::Str(s) => json!({ "stringValue": s }),
        Value::Int(n) => json!({ "intValue": n.to_string() }),
        Value::Bool(b) => json!({ "boolValue": b }),
        Value::Strs(v) => {
            json!({ "arrayValue": { "values": v.iter().map(|s| json!({ "stringValue": s })).collect::<Vec<_>>() } })
        }
    };
    json!({ "key": key, "value": value })
}
