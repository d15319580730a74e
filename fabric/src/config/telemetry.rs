//! `[telemetry]`: trace export settings, shared by edge and worker configs. Without an
//! `otlp_endpoint` (in the file or in `OTEL_EXPORTER_OTLP_ENDPOINT`) tracing is off.
//!
//! ```toml
//! [telemetry]
//! otlp_endpoint = "http://127.0.0.1:4318"  # OTLP/HTTP; spans go to <endpoint>/v1/traces
//! service_name = "meridian-edge"            # default meridian-edge / meridian-worker
//! sample_ratio = 1.0                        # new traces recorded; sampled parents always are
//! export_interval_ms = 1000
//! max_queue = 8192                          # finished spans waiting; more are dropped
//! ```

use std::time::Duration;

use toml::Spanned;

use super::ctx::Ctx;
use super::raw::RawTelemetry;
use super::{OtlpMetrics, OtlpSettings};

/// Default longest wait before a finished span is exported.
pub const DEFAULT_EXPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Default most spans waiting for export.
pub const DEFAULT_MAX_QUEUE: u64 = 8192;

/// The OTLP/HTTP signal path appended to a base endpoint (OTLP exporter spec).
const TRACES_PATH: &str = "/v1/traces";
/// The OTLP/HTTP metrics path appended to a base endpoint.
const METRICS_PATH: &str = "/v1/metrics";
/// Default interval between metric exports (OTEL_METRIC_EXPORT_INTERVAL's default).
pub const DEFAULT_METRICS_INTERVAL: Duration = Duration::from_secs(60);

impl Ctx<'_> {
    pub(super) fn telemetry(
        &mut self,
        table: Option<&Spanned<RawTelemetry>>,
        default_service: &str,
        exports_metrics: bool,
    ) -> Option<OtlpSettings> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let raw = table.map(|t| t.get_ref());
        let (url, span) = match (raw.and_then(|t| t.otlp_endpoint.as_ref()), table) {
            (Some(e), _) => (e.get_ref().clone(), Some(e.span())),
            (None, table) => match (env("OTEL_EXPORTER_OTLP_ENDPOINT"), table) {
                (Some(url), _) => (url, None),
                (None, None) => return None,
                (None, Some(t)) => {
                    self.err(Some(t.span()), "[telemetry] has no `otlp_endpoint` (and OTEL_EXPORTER_OTLP_ENDPOINT is not set): name the collector, e.g. \"http://127.0.0.1:4318\", or remove the section");
                    return None;
                }
            },
        };
        let what = if span.is_some() {
            "otlp_endpoint"
        } else {
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        };
        let (authority, base) = self.http_url(&url, span, what, "run a collector beside the node");
        let root = base.strip_suffix(TRACES_PATH).unwrap_or(&base).to_owned();
        let path = format!("{root}{TRACES_PATH}");
        let metrics = if exports_metrics {
            self.otlp_metrics(raw, &authority, &root)
        } else {
            // A worker exports traces only (the edge's metrics cover its requests): a metrics
            // key in its config would silently do nothing.
            let on = raw
                .and_then(|t| t.metrics.as_ref())
                .filter(|m| *m.get_ref());
            let interval = raw.and_then(|t| t.metrics_interval_ms.as_ref());
            for (key, at) in [
                ("metrics", on.map(|m| m.span())),
                ("metrics_interval_ms", interval.map(|i| i.span())),
            ] {
                if let Some(at) = at {
                    self.err(
                        Some(at),
                        format!("`{key}`: a worker exports no metrics (its edge does); remove it"),
                    );
                }
            }
            None
        };
        let service_name = match raw.and_then(|t| t.service_name.as_ref()) {
            Some(s) if s.get_ref().is_empty() => {
                self.err(Some(s.span()), "service_name must not be empty");
                default_service.to_owned()
            }
            Some(s) => s.get_ref().clone(),
            None => env("OTEL_SERVICE_NAME").unwrap_or_else(|| default_service.to_owned()),
        };
        let sample_ratio = match raw.and_then(|t| t.sample_ratio.as_ref()) {
            Some(r) if !(0.0..=1.0).contains(r.get_ref()) => {
                self.err(
                    Some(r.span()),
                    format!("sample_ratio must be in 0.0..=1.0, got {}", r.get_ref()),
                );
                1.0
            }
            Some(r) => *r.get_ref(),
            None => 1.0,
        };
        let export_interval = self.millis_min(
            raw.and_then(|t| t.export_interval_ms.as_ref()),
            "export_interval_ms",
            1,
            60_000,
            DEFAULT_EXPORT_INTERVAL,
        );
        let max_queue = self.count(
            raw.and_then(|t| t.max_queue.as_ref()),
            "max_queue",
            1..1_000_001,
            DEFAULT_MAX_QUEUE,
        ) as usize;
        Some(OtlpSettings {
            authority,
            path,
            service_name,
            sample_ratio,
            export_interval,
            max_queue,
            metrics,
        })
    }

    /// Where metrics go: `<endpoint>/v1/metrics`, or OTEL_EXPORTER_OTLP_METRICS_ENDPOINT as
    /// is; every `metrics_interval_ms` (OTEL_METRIC_EXPORT_INTERVAL, 60 s); off with
    /// `metrics = false`.
    fn otlp_metrics(
        &mut self,
        raw: Option<&RawTelemetry>,
        authority: &str,
        root: &str,
    ) -> Option<OtlpMetrics> {
        if raw
            .and_then(|t| t.metrics.as_ref())
            .is_some_and(|m| !*m.get_ref())
        {
            return None;
        }
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let (authority, path) = match env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") {
            Some(url) => {
                let (a, p) = self.http_url(
                    &url,
                    None,
                    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                    "run a collector beside the node",
                );
                (a, if p.is_empty() { "/".into() } else { p })
            }
            None => (authority.to_owned(), format!("{root}{METRICS_PATH}")),
        };
        let interval = match raw.and_then(|t| t.metrics_interval_ms.as_ref()) {
            Some(ms) => self.millis_min(
                Some(ms),
                "metrics_interval_ms",
                1,
                3_600_000,
                DEFAULT_METRICS_INTERVAL,
            ),
            None => match env("OTEL_METRIC_EXPORT_INTERVAL") {
                None => DEFAULT_METRICS_INTERVAL,
                Some(v) => match v.parse::<u64>() {
                    Ok(ms) if ms > 0 => Duration::from_millis(ms),
                    _ => {
                        self.warn(None, format!("OTEL_METRIC_EXPORT_INTERVAL=`{v}` is not a positive number of milliseconds; metrics are exported every {DEFAULT_METRICS_INTERVAL:?}"));
                        DEFAULT_METRICS_INTERVAL
                    }
                },
            },
        };
        Some(OtlpMetrics {
            authority,
            path,
            interval,
        })
    }
}
