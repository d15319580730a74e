//! Metrics as OpenTelemetry sees them — a name with dots, a unit, attributes, and cumulative
//! points — rendered two ways: the Prometheus text format (`gen_ai.server.request.duration`
//! in seconds becomes `gen_ai_server_request_duration_seconds`) and the OTLP/HTTP JSON
//! `ExportMetricsServiceRequest` (opentelemetry-proto v1: 64-bit integers as decimal
//! strings, enums as numbers, cumulative temporality from the process start).

use std::fmt::Write;

use serde_json::{json, Value as Json};

use super::genai::Snapshot;

/// Attributes of one point: key and string value.
pub type Attrs = Vec<(&'static str, String)>;

/// One metric's points.
#[derive(Clone, Debug)]
pub enum Data {
    /// Explicit-bucket histogram points with their bounds.
    Histogram(&'static [f64], Vec<(Attrs, Snapshot)>),
    /// A monotonic counter.
    Counter(Vec<(Attrs, u64)>),
    /// A value that goes up and down.
    Gauge(Vec<(Attrs, i64)>),
}

/// One metric.
#[derive(Clone, Debug)]
pub struct Metric {
    /// OpenTelemetry name (`gen_ai.server.request.duration`).
    pub name: &'static str,
    /// What it measures.
    pub description: &'static str,
    /// UCUM unit (`s`, `{token}`, `{request}`).
    pub unit: &'static str,
    /// Its points.
    pub data: Data,
}

impl Metric {
    /// The Prometheus name: dots to underscores, `_seconds` for `s`, `_total` for counters.
    pub fn prometheus_name(&self) -> String {
        let mut n = self.name.replace('.', "_");
        if self.unit == "s" {
            n.push_str("_seconds");
        }
        if matches!(self.data, Data::Counter(_)) {
            n.push_str("_total");
        }
        n
    }
}

/// A label value escaped for the text format (`\\`, `\"`, `\n`). Region and worker names
/// are validated; model names come from configs and discovery labels.
pub fn label_value(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return v.into();
    }
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .into()
}

fn labels(attrs: &Attrs, extra: Option<(&str, &str)>) -> String {
    let mut out = String::new();
    for (k, v) in attrs.iter().map(|(k, v)| (*k, v.as_str())).chain(extra) {
        if !out.is_empty() {
            out.push(',');
        }
        let _ = write!(out, "{}=\"{}\"", k.replace('.', "_"), label_value(v));
    }
    out
}

/// Appends `metrics` in the Prometheus text format (0.0.4).
pub fn render_prometheus(out: &mut String, metrics: &[Metric]) {
    for m in metrics {
        let name = m.prometheus_name();
        let ty = match m.data {
            Data::Histogram(..) => "histogram",
            Data::Counter(_) => "counter",
            Data::Gauge(_) => "gauge",
        };
        let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} {ty}", m.description);
        match &m.data {
            Data::Histogram(bounds, points) => {
                for (attrs, s) in points {
                    let mut acc = 0;
                    for (i, le) in bounds.iter().enumerate() {
                        acc += s.counts[i];
                        let l = labels(attrs, Some(("le", &le.to_string())));
                        let _ = writeln!(out, "{name}_bucket{{{l}}} {acc}");
                    }
                    let l = labels(attrs, Some(("le", "+Inf")));
                    let _ = writeln!(out, "{name}_bucket{{{l}}} {}", s.count);
                    let l = labels(attrs, None);
                    let _ = writeln!(
                        out,
                        "{name}_sum{{{l}}} {}\n{name}_count{{{l}}} {}",
                        s.sum, s.count
                    );
                }
            }
            Data::Counter(points) => {
                for (attrs, v) in points {
                    let _ = writeln!(out, "{name}{{{}}} {v}", labels(attrs, None));
                }
            }
            Data::Gauge(points) => {
                for (attrs, v) in points {
                    let _ = writeln!(out, "{name}{{{}}} {v}", labels(attrs, None));
                }
            }
        }
    }
}

/// A data point's fields with its attributes (left out when there are none: the canonical
/// JSON of an empty repeated field is no field).
fn point(attrs: &Attrs, mut p: Json) -> Json {
    if !attrs.is_empty() {
        p["attributes"] = attrs
            .iter()
            .map(|(k, v)| json!({ "key": k, "value": { "stringValue": v } }))
            .collect();
    }
    p
}

/// The wall clock, Unix nanoseconds.
pub fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// An `ExportMetricsServiceRequest` of `metrics`, read at `now_ns` (Unix nanoseconds):
/// histograms cumulative since their own start, counters since `start_ns`.
pub fn encode_otlp(resource: &Json, metrics: &[Metric], start_ns: u64, now_ns: u64) -> Vec<u8> {
    let (start, now) = (start_ns.to_string(), now_ns.to_string());
    let encoded: Vec<Json> = metrics
        .iter()
        .filter(|m| match &m.data {
            Data::Histogram(_, p) => !p.is_empty(),
            Data::Counter(p) => !p.is_empty(),
            Data::Gauge(p) => !p.is_empty(),
        })
        .map(|m| {
            let mut v = json!({ "name": m.name, "description": m.description, "unit": m.unit });
            match &m.data {
                Data::Histogram(bounds, points) => {
                    let points: Vec<Json> = points
                        .iter()
                        .map(|(attrs, s)| {
                            let mut p = point(attrs, json!({
                                "startTimeUnixNano": s.start_ns.to_string(),
                                "timeUnixNano": now,
                                "count": s.count.to_string(),
                                "sum": s.sum,
                                "bucketCounts": s.counts.iter().map(u64::to_string).collect::<Vec<_>>(),
                                "explicitBounds": bounds,
                            }));
                            if s.count > 0 {
                                p["min"] = json!(s.min);
                                p["max"] = json!(s.max);
                            }
                            p
                        })
                        .collect();
                    // AGGREGATION_TEMPORALITY_CUMULATIVE = 2.
                    v["histogram"] = json!({ "dataPoints": points, "aggregationTemporality": 2 });
                }
                Data::Counter(points) => {
                    let points: Vec<Json> = (points.iter())
                        .map(|(attrs, n)| point(attrs, json!({ "startTimeUnixNano": start, "timeUnixNano": now, "asInt": n.to_string() })))
                        .collect();
                    v["sum"] = json!({ "dataPoints": points, "aggregationTemporality": 2, "isMonotonic": true });
                }
                Data::Gauge(points) => {
                    let points: Vec<Json> = (points.iter())
                        .map(|(attrs, n)| point(attrs, json!({ "timeUnixNano": now, "asInt": n.to_string() })))
                        .collect();
                    v["gauge"] = json!({ "dataPoints": points });
                }
            }
            v
        })
        .collect();
    let req = json!({ "resourceMetrics": [{
        "resource": resource,
        "scopeMetrics": [{
            "scope": { "name": "meridian", "version": env!("CARGO_PKG_VERSION") },
            "metrics": encoded,
        }],
    }]});
    serde_json::to_vec(&req).expect("JSON values serialise")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::genai::Buckets;

    fn sample() -> Vec<Metric> {
        let b = Buckets::new(&[0.1, 1.0], crate::telemetry::genai::SECONDS);
        b.record(0.05);
        b.record(0.5);
        let attrs: Attrs = vec![("gen_ai.request.model", "m\"x".into())];
        vec![
            Metric {
                name: "gen_ai.server.request.duration",
                description: "Request duration.",
                unit: "s",
                data: Data::Histogram(b.bounds(), vec![(attrs.clone(), b.snapshot())]),
            },
            Metric {
                name: "meridian.requests",
                description: "Requests.",
                unit: "{request}",
                data: Data::Counter(vec![(vec![], 3)]),
            },
        ]
    }

    #[test]
    fn prometheus_names_units_and_escaping() {
        let mut out = String::new();
        render_prometheus(&mut out, &sample());
        assert!(
            out.contains("# TYPE gen_ai_server_request_duration_seconds histogram"),
            "{out}"
        );
        assert!(out.contains("gen_ai_server_request_duration_seconds_bucket{gen_ai_request_model=\"m\\\"x\",le=\"0.1\"} 1"), "{out}");
        assert!(out.contains("gen_ai_server_request_duration_seconds_bucket{gen_ai_request_model=\"m\\\"x\",le=\"+Inf\"} 2"));
        assert!(out.contains("meridian_requests_total{} 3"), "{out}");
    }

    #[test]
    fn otlp_json_shape() {
        let body = encode_otlp(&json!({ "attributes": [] }), &sample(), 1, 2);
        let v: Json = serde_json::from_slice(&body).unwrap();
        let m = &v["resourceMetrics"][0]["scopeMetrics"][0]["metrics"];
        let h = &m[0]["histogram"];
        assert_eq!(h["aggregationTemporality"], 2);
        assert_eq!(h["dataPoints"][0]["count"], "2");
        assert_eq!(h["dataPoints"][0]["bucketCounts"], json!(["1", "1", "0"]));
        assert_eq!(m[1]["sum"]["dataPoints"][0]["asInt"], "3");
        assert_eq!(m[1]["sum"]["isMonotonic"], true);
    }
}
