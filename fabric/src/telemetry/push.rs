//! OTLP metrics export: every `[telemetry] metrics_interval_ms` the node's metrics are
//! read (atomics only) and POSTed as one `ExportMetricsServiceRequest` with cumulative
//! temporality to `<endpoint>/v1/metrics`; a last export when the node stops. A collector
//! outage costs one failed POST per interval, logged once.

use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use serde_json::Value as Json;

use super::export::{resource, Exporter, TraceStats};
use super::metrics::{encode_otlp, unix_ns, Metric};
use crate::config::OtlpSettings;

/// Exports `collect()`'s metrics every interval until `stop` resolves, then once more. Does
/// nothing when `settings` has metrics off.
pub async fn run(
    settings: OtlpSettings,
    instance: String,
    stats: Option<Arc<TraceStats>>,
    collect: impl Fn() -> Vec<Metric>,
    stop: impl Future<Output = ()>,
) {
    let Some(m) = settings.metrics.clone() else {
        return;
    };
    tracing::info!(endpoint = %format!("http://{}{}", m.authority, m.path), every = ?m.interval, "exporting metrics over OTLP/HTTP");
    let resource: Json = resource(&settings, &instance);
    let start = unix_ns();
    let mut exporter = Exporter::new(&m.authority, &m.path, "metric");
    let mut tick = tokio::time::interval(m.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate: nothing to report yet
    tokio::pin!(stop);
    loop {
        let last = tokio::select! {
            _ = tick.tick() => false,
            _ = &mut stop => true,
        };
        let body = encode_otlp(&resource, &collect(), start, unix_ns());
        let ok = exporter.export(body).await;
        if let Some(s) = &stats {
            let n = if ok {
                &s.metric_exports
            } else {
                &s.metric_export_failures
            };
            n.fetch_add(1, Relaxed);
        }
        if last {
            return;
        }
    }
}
