//! The edge's metrics in the OpenTelemetry model (`telemetry::metrics`): the GenAI families
//! per (operation, model, region, error type), shown in `/metrics` and exported over OTLP,
//! and — for OTLP, where `/metrics`'s own families do not reach — Meridian's main counters
//! under `meridian.*`.

use std::sync::atomic::Ordering::Relaxed;

use meridian_protocol::ErrorCode;

use super::observe::error_type;
use super::{EdgeStats, Latencies, ReloadResult};
use crate::route::Topology;
use crate::telemetry::genai::{GenAiMetrics, Operation, ERROR_SLOTS, PROVIDER};
use crate::telemetry::metrics::{Attrs, Data, Metric};

fn attrs(op: Operation, model: &str, region: Option<&str>) -> Attrs {
    let mut a: Attrs = vec![
        ("gen_ai.operation.name", op.name().into()),
        ("gen_ai.provider.name", PROVIDER.into()),
        ("gen_ai.request.model", model.into()),
    ];
    if let Some(r) = region {
        a.push(("meridian.region", r.into()));
    }
    a
}

/// The GenAI metric families (and, with `meridian`, Meridian's counters) of the edge now.
pub fn collect(stats: &EdgeStats, topo: &Topology, meridian: bool) -> Vec<Metric> {
    let mut sources: Vec<(Option<&str>, &str, &Latencies)> = topo
        .all_latencies()
        .map(|(r, m, l)| (Some(topo.config.regions[r].name.as_str()), m, l))
        .collect();
    sources.extend(topo.all_unrouted().into_iter().map(|(m, l)| (None, m, l)));
    let (mut duration, mut ttft, mut tpot, mut usage) = (vec![], vec![], vec![], vec![]);
    for (region, model, l) in &sources {
        let g: &GenAiMetrics = &l.genai;
        for op in Operation::ALL {
            let i = op as usize;
            for slot in 0..ERROR_SLOTS {
                let s = g.duration[i][slot].snapshot();
                if s.count > 0 {
                    let mut a = attrs(op, model, *region);
                    if slot > 0 {
                        a.push(("error.type", GenAiMetrics::slot_error_type(slot)));
                    }
                    duration.push((a, s));
                }
            }
            for (into, b) in [(&mut ttft, &g.ttft[i]), (&mut tpot, &g.tpot[i])] {
                let s = b.snapshot();
                if s.count > 0 {
                    into.push((attrs(op, model, *region), s));
                }
            }
            for (kind, b) in ["input", "output"].into_iter().zip(&g.tokens[i]) {
                let s = b.snapshot();
                if s.count > 0 {
                    let mut a = attrs(op, model, *region);
                    a.push(("gen_ai.token.type", kind.into()));
                    usage.push((a, s));
                }
            }
        }
    }
    use crate::telemetry::genai::{DURATION_BOUNDS, TOKEN_BOUNDS, TPOT_BOUNDS, TTFT_BOUNDS};
    let mut out = vec![
        Metric {
            name: "gen_ai.server.request.duration",
            description: "Time from a request's arrival at the edge to its end (error.type set when it failed).",
            unit: "s",
            data: Data::Histogram(DURATION_BOUNDS, duration),
        },
        Metric {
            name: "gen_ai.server.time_to_first_token",
            description: "Time from a request's arrival at the edge to its first token.",
            unit: "s",
            data: Data::Histogram(TTFT_BOUNDS, ttft),
        },
        Metric {
            name: "gen_ai.server.time_per_output_token",
            description: "Time per output token after the first, of successful requests.",
            unit: "s",
            data: Data::Histogram(TPOT_BOUNDS, tpot),
        },
        Metric {
            name: "gen_ai.client.token.usage",
            description: "Input and output tokens of requests the edge sent to workers.",
            unit: "{token}",
            data: Data::Histogram(TOKEN_BOUNDS, usage),
        },
    ];
    if meridian {
        out.extend(meridian_counters(stats));
    }
    out
}

/// Meridian's main counters for OTLP (Prometheus has them under their own names).
fn meridian_counters(stats: &EdgeStats) -> Vec<Metric> {
    let errors = ErrorCode::ALL
        .iter()
        .skip(1)
        .map(|c| {
            (
                vec![("meridian.error_code", error_type(*c))],
                stats.errors(*c),
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    let reloads = ReloadResult::ALL
        .iter()
        .map(|(r, name)| {
            (
                vec![("meridian.result", (*name).into())],
                stats.reloads[*r as usize].load(Relaxed),
            )
        })
        .collect();
    let mut out = vec![
        Metric {
            name: "meridian.requests",
            description: "Request streams accepted.",
            unit: "{request}",
            data: Data::Counter(vec![(vec![], stats.requests.load(Relaxed))]),
        },
        Metric {
            name: "meridian.tokens.relayed",
            description: "TOKENS frames relayed to clients.",
            unit: "{frame}",
            data: Data::Counter(vec![(vec![], stats.tokens.load(Relaxed))]),
        },
        Metric {
            name: "meridian.errors",
            description: "Errors sent to clients, by wire code.",
            unit: "{error}",
            data: Data::Counter(errors),
        },
        Metric {
            name: "meridian.config.reloads",
            description: "Config reloads, by result.",
            unit: "{reload}",
            data: Data::Counter(reloads),
        },
        Metric {
            name: "meridian.active_streams",
            description: "Request streams open now.",
            unit: "{stream}",
            data: Data::Gauge(vec![(vec![], stats.active_streams.load(Relaxed))]),
        },
    ];
    out.extend(crate::discovery::metrics(&stats.discovery));
    out
}
