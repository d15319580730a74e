//! Edge counters and latency histograms (atomics only: the request path never locks), and
//! their Prometheus text exposition for the admin `/metrics` endpoint.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use meridian_protocol::ErrorCode;

use crate::config::Config;
use crate::route::Router;
use crate::telemetry::genai::{Buckets, Snapshot, SECONDS};
use crate::telemetry::metrics::{render_prometheus, Data, Metric};

/// Histogram bucket upper bounds, seconds (Prometheus `le`).
pub const BUCKETS_S: [f64; 15] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
];

/// A fixed-bucket latency histogram (`BUCKETS_S`): the atomic [`Buckets`] the GenAI metrics
/// use, rendered like them (`telemetry::metrics`).
#[derive(Debug)]
pub struct Histogram(Buckets);

impl Default for Histogram {
    fn default() -> Self {
        Histogram(Buckets::new(&BUCKETS_S, SECONDS))
    }
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        self.0.record_duration(d);
    }

    /// What it holds now.
    pub fn snapshot(&self) -> Snapshot {
        self.0.snapshot()
    }
}

/// Latency histograms of one (region, model).
#[derive(Debug, Default)]
pub struct Latencies {
    /// Time to first token, from the stream's arrival at the edge.
    pub ttft: Histogram,
    /// Gaps between chunks of tokens relayed.
    pub itl: Histogram,
    /// Stream arrival to END.
    pub e2e: Histogram,
    /// Estimated spend: tokens × the region's price at the time, nano-units of currency.
    pub spend_nano: AtomicU64,
    /// The OpenTelemetry GenAI metrics of its requests.
    pub genai: crate::telemetry::genai::GenAiMetrics,
}

impl Latencies {
    /// Adds `tokens` at `price_per_mtok` to the estimated spend.
    pub fn spend(&self, tokens: u64, price_per_mtok: f64) {
        // price per million tokens × 1e9 nano-units / 1e6 tokens = price × 1e3 per token.
        let nano = (tokens as f64 * price_per_mtok * 1e3).round();
        self.spend_nano.fetch_add(nano as u64, Relaxed);
    }
}

/// Edge-wide counters.
#[derive(Debug)]
pub struct EdgeStats {
    /// Client connections accepted.
    pub connections: AtomicU64,
    /// Client connections open now.
    pub active_connections: AtomicI64,
    /// Client connections refused at the connection limit.
    pub refused_connections: AtomicU64,
    /// Client handshakes in progress (half-open connections).
    pub handshaking: AtomicI64,
    /// Connection attempts answered with a QUIC Retry (address validation under load).
    pub address_retries: AtomicU64,
    /// Request bytes buffered across every client (`[edge] max_buffered_bytes`).
    pub budget: std::sync::Arc<crate::sync::ByteBudget>,
    /// Request streams accepted.
    pub requests: AtomicU64,
    /// Request streams open now.
    pub active_streams: AtomicI64,
    /// TOKENS frames relayed.
    pub tokens: AtomicU64,
    /// Upstream attempts retried on another worker.
    pub retries: AtomicU64,
    /// Requests the client cancelled.
    pub cancelled: AtomicU64,
    /// Requests refused for residency.
    pub residency_rejections: AtomicU64,
    /// Resumable streams: their text budget and what happened when a worker failed.
    pub resume: super::resume::ResumeStats,
    errors: [AtomicU64; 16],
    /// Config reloads, by [`ReloadResult`].
    pub reloads: [AtomicU64; 2],
    /// The running discovery sources' counts (off the request path).
    pub discovery: crate::discovery::DiscoveryStats,
}

/// How a config reload ended (`meridian_config_reloads_total{result}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadResult {
    /// Validated and published.
    Applied = 0,
    /// Invalid: the running config stays.
    Rejected = 1,
}

impl ReloadResult {
    /// Every result with its metric label.
    pub const ALL: [(ReloadResult, &'static str); 2] = [
        (ReloadResult::Applied, "applied"),
        (ReloadResult::Rejected, "rejected"),
    ];
}

impl EdgeStats {
    /// Counters of an edge running `config`.
    pub fn new(config: &Config) -> Self {
        EdgeStats {
            connections: AtomicU64::new(0),
            active_connections: AtomicI64::new(0),
            refused_connections: AtomicU64::new(0),
            handshaking: AtomicI64::new(0),
            address_retries: AtomicU64::new(0),
            budget: crate::sync::ByteBudget::new(config.edge.max_buffered_bytes),
            requests: AtomicU64::new(0),
            active_streams: AtomicI64::new(0),
            tokens: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            residency_rejections: AtomicU64::new(0),
            resume: super::resume::ResumeStats::new(config.edge.resume_buffer_total_bytes),
            errors: Default::default(),
            reloads: Default::default(),
            discovery: Default::default(),
        }
    }

    pub(crate) fn error(&self, code: ErrorCode) {
        let i = (code.0 as usize).min(self.errors.len() - 1);
        self.errors[i].fetch_add(1, Relaxed);
    }

    /// Errors sent to clients with `code` (codes ≥ 15 share the last slot).
    pub fn errors(&self, code: ErrorCode) -> u64 {
        self.errors[(code.0 as usize).min(self.errors.len() - 1)].load(Relaxed)
    }

    /// Counts a config reload.
    pub fn reload(&self, result: ReloadResult) {
        self.reloads[result as usize].fetch_add(1, Relaxed);
    }

    /// The Prometheus text exposition (format 0.0.4) of every metric.
    pub fn render(&self, router: &Router) -> String {
        // One table for the whole scrape: a reload meanwhile cannot mix generations.
        let table = router.table();
        let topo = &table.topology;
        let cfg = &topo.config;
        let mut out = String::with_capacity(16 * 1024);
        let scalars: [(&str, &str, &str, i64); 12] = [
            (
                "meridian_requests_total",
                "Request streams accepted.",
                "counter",
                self.requests.load(Relaxed) as i64,
            ),
            (
                "meridian_tokens_relayed_total",
                "TOKENS frames relayed to clients.",
                "counter",
                self.tokens.load(Relaxed) as i64,
            ),
            (
                "meridian_connections_total",
                "Client connections accepted.",
                "counter",
                self.connections.load(Relaxed) as i64,
            ),
            (
                "meridian_refused_connections_total",
                "Client connections refused at the limit.",
                "counter",
                self.refused_connections.load(Relaxed) as i64,
            ),
            (
                "meridian_handshakes_in_progress",
                "Client QUIC handshakes in progress (half-open connections).",
                "gauge",
                self.handshaking.load(Relaxed),
            ),
            (
                "meridian_buffered_request_bytes",
                "Request bytes buffered now across every client (bounded by max_buffered_bytes).",
                "gauge",
                self.budget.used() as i64,
            ),
            (
                "meridian_address_retries_total",
                "Connection attempts answered with a QUIC Retry (address validation).",
                "counter",
                self.address_retries.load(Relaxed) as i64,
            ),
            (
                "meridian_active_connections",
                "Client connections open now.",
                "gauge",
                self.active_connections.load(Relaxed),
            ),
            (
                "meridian_active_streams",
                "Request streams open now.",
                "gauge",
                self.active_streams.load(Relaxed),
            ),
            (
                "meridian_retries_total",
                "Upstream attempts retried before the first token.",
                "counter",
                self.retries.load(Relaxed) as i64,
            ),
            (
                "meridian_cancelled_total",
                "Requests cancelled by their client.",
                "counter",
                self.cancelled.load(Relaxed) as i64,
            ),
            (
                "meridian_residency_rejections_total",
                "Requests refused with RESIDENCY_UNAVAILABLE.",
                "counter",
                self.residency_rejections.load(Relaxed) as i64,
            ),
        ];
        for (name, help, kind, v) in scalars {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
        let _ = writeln!(out, "# HELP meridian_errors_total Errors sent to clients, by wire code.\n# TYPE meridian_errors_total counter");
        for code in ErrorCode::ALL.iter().skip(1) {
            let _ = writeln!(
                out,
                "meridian_errors_total{{code=\"{code}\"}} {}",
                self.errors(*code)
            );
        }
        let _ = writeln!(out, "# HELP meridian_routes_total Requests routed, by region.\n# TYPE meridian_routes_total counter");
        for region in &topo.regions {
            let _ = writeln!(
                out,
                "meridian_routes_total{{region=\"{}\"}} {}",
                region.name,
                region.routes.load(Relaxed)
            );
        }
        let _ = writeln!(out, "# HELP meridian_worker_healthy Whether the worker is connected and not draining.\n# TYPE meridian_worker_healthy gauge");
        for (w, worker) in cfg.workers.iter().enumerate() {
            let labels = format!(
                "worker=\"{}\",region=\"{}\"",
                worker.name, cfg.regions[worker.region].name
            );
            let _ = writeln!(
                out,
                "meridian_worker_healthy{{{labels}}} {}",
                u8::from(topo.workers[w].is_healthy())
            );
        }
        let _ = writeln!(out, "# HELP meridian_worker_in_flight Requests this edge has in flight on the worker.\n# TYPE meridian_worker_in_flight gauge");
        for (w, worker) in cfg.workers.iter().enumerate() {
            let labels = format!(
                "worker=\"{}\",region=\"{}\"",
                worker.name, cfg.regions[worker.region].name
            );
            let _ = writeln!(
                out,
                "meridian_worker_in_flight{{{labels}}} {}",
                topo.workers[w].local_in_flight()
            );
        }
        let latency = |name, description, pick: fn(&Latencies) -> &Histogram| Metric {
            name,
            description,
            unit: "s",
            data: Data::Histogram(
                &BUCKETS_S,
                (topo.all_latencies())
                    .map(|(r, model, l)| {
                        let attrs = vec![
                            ("region", cfg.regions[r].name.clone()),
                            ("model", model.to_owned()),
                        ];
                        (attrs, pick(l).snapshot())
                    })
                    .collect(),
            ),
        };
        let latencies = [
            latency(
                "meridian.ttft",
                "Time to first token at the edge, by region and model.",
                |l| &l.ttft,
            ),
            latency(
                "meridian.itl",
                "Gaps between relayed token chunks, by region and model.",
                |l| &l.itl,
            ),
            latency(
                "meridian.e2e",
                "Request duration at the edge, by region and model.",
                |l| &l.e2e,
            ),
        ];
        render_prometheus(&mut out, &latencies);
        let _ = writeln!(out, "# HELP meridian_config_reloads_total Config reloads (SIGHUP, the watched file, discovery), by result.\n# TYPE meridian_config_reloads_total counter");
        for (r, name) in ReloadResult::ALL {
            let n = self.reloads[r as usize].load(Relaxed);
            let _ = writeln!(
                out,
                "meridian_config_reloads_total{{result=\"{name}\"}} {n}"
            );
        }
        let _ = writeln!(out, "# HELP meridian_config_generation The running topology generation (0 at start, one more per applied reload).\n# TYPE meridian_config_generation gauge\nmeridian_config_generation {}", topo.generation);
        super::health_metrics::render(&mut out, &table, router);
        let genai = super::genai_metrics::collect(self, topo, false);
        render_prometheus(&mut out, &genai);
        let discovery = crate::discovery::metrics(&self.discovery);
        render_prometheus(&mut out, &discovery);
        self.resume.render(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        use crate::telemetry::metrics::label_value as label;
        assert_eq!(label("llama-3-8b"), "llama-3-8b");
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(15));
        h.observe(Duration::from_secs(100));
        let mut out = String::new();
        let m = Metric {
            name: "x",
            description: "d",
            unit: "1",
            data: Data::Histogram(&BUCKETS_S, vec![(vec![("a", "b".into())], h.snapshot())]),
        };
        render_prometheus(&mut out, &[m]);
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.0005\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.02\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"30\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count{a=\"b\"} 3\n"), "{out}");
        assert_eq!(h.snapshot().count, 3);
    }
}
