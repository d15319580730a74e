//! The `/metrics` families of adaptive routing: what the edge observes per worker (path RTT
//! and loss, TTFT and error EWMAs, ejections), the scorer's per-region view (RTT, error
//! rate, demotion, score, price, carbon), spills by reason and estimated spend.

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

use crate::route::{Demotion, Router, RoutingTable, Spill};
use crate::telemetry::metrics::label_value as label;

fn family(out: &mut String, name: &str, help: &str, ty: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {ty}");
}

/// Appends the families of `table` (the one snapshot a scrape reads) to `out`.
pub(crate) fn render(out: &mut String, table: &RoutingTable, router: &Router) {
    let topo = &table.topology;
    let cfg = &topo.config;
    let worker_labels = |w: usize| {
        let e = &cfg.workers[w];
        format!(
            "worker=\"{}\",region=\"{}\"",
            e.name, cfg.regions[e.region].name
        )
    };
    type Pick = fn(&crate::route::health::Health) -> Option<f64>;
    let per_worker: [(&str, &str, &str, Pick); 8] = [
        (
            "meridian_upstream_rtt_seconds",
            "Smoothed QUIC path RTT to the worker.",
            "gauge",
            |h| h.path_rtt().map(|d| d.as_secs_f64()),
        ),
        (
            "meridian_upstream_loss_ratio",
            "Fraction of packets to the worker declared lost (EWMA).",
            "gauge",
            |h| h.loss(),
        ),
        (
            "meridian_worker_ttft_ewma_seconds",
            "TTFT from sending upstream, EWMA.",
            "gauge",
            |h| h.ttft_ms().map(|ms| ms / 1e3),
        ),
        (
            "meridian_worker_error_rate",
            "Fraction of attempts the worker failed (EWMA).",
            "gauge",
            |h| h.error_rate(),
        ),
        (
            "meridian_worker_ejected",
            "1 while the worker is ejected as an outlier.",
            "gauge",
            |h| Some(f64::from(u8::from(h.is_ejected()))),
        ),
        (
            "meridian_worker_attempts_total",
            "Attempts sent to the worker.",
            "counter",
            |h| Some(h.attempts.load(Relaxed) as f64),
        ),
        (
            "meridian_worker_failures_total",
            "Attempts the worker failed (lost, stalled, or a server-side ERROR).",
            "counter",
            |h| Some(h.failures.load(Relaxed) as f64),
        ),
        (
            "meridian_worker_ejections_total",
            "Times the worker was ejected as an outlier.",
            "counter",
            |h| Some(h.ejections.load(Relaxed) as f64),
        ),
    ];
    for (name, help, ty, pick) in per_worker {
        family(out, name, help, ty);
        for w in 0..cfg.workers.len() {
            if let Some(v) = pick(&topo.workers[w].health) {
                let _ = writeln!(out, "{name}{{{}}} {v}", worker_labels(w));
            }
        }
    }
    let scored = router.scored_in(table);
    // Names of the scored generation (a reload may have published a newer one since).
    let names = &table.topology.config.regions;
    type RegionPick = fn(&crate::route::RegionStatus) -> Option<f64>;
    let per_region: [(&str, &str, RegionPick); 6] = [
        (
            "meridian_region_rtt_seconds",
            "Mean path RTT of the region's live workers.",
            |s| s.rtt_ms.map(|ms| ms / 1e3),
        ),
        (
            "meridian_region_error_rate",
            "Mean error rate of the region's connected workers.",
            |s| s.error_rate,
        ),
        (
            "meridian_region_demoted",
            "1 while the region is demoted (degraded).",
            |s| Some(f64::from(u8::from(s.demoted.is_some()))),
        ),
        (
            "meridian_region_score",
            "The region's objective score (lower is better).",
            |s| s.score,
        ),
        (
            "meridian_region_price_per_mtok",
            "Current price per million tokens.",
            |s| Some(s.price_per_mtok),
        ),
        (
            "meridian_region_carbon_g_per_kwh",
            "Current grid carbon intensity.",
            |s| Some(s.carbon_g_per_kwh),
        ),
    ];
    for (name, help, pick) in per_region {
        family(out, name, help, "gauge");
        for (r, s) in scored.regions.iter().enumerate() {
            if let Some(v) = pick(s) {
                let _ = writeln!(out, "{name}{{region=\"{}\"}} {v}", names[r].name);
            }
        }
    }
    family(
        out,
        "meridian_region_demotions_total",
        "Region demotions, by reason.",
        "counter",
    );
    for d in Demotion::ALL {
        let n = router.demotions[d as usize].load(Relaxed);
        let _ = writeln!(
            out,
            "meridian_region_demotions_total{{reason=\"{}\"}} {n}",
            d.label()
        );
    }
    family(
        out,
        "meridian_spills_total",
        "Requests that spilled: past the first region they could use (unhealthy, over_bound) or out of their preference list past a demoted region (degraded).",
        "counter",
    );
    for (s, name) in Spill::ALL {
        let n = router.spills[s as usize].load(Relaxed);
        let _ = writeln!(out, "meridian_spills_total{{reason=\"{name}\"}} {n}");
    }
    family(
        out,
        "meridian_cost_usd_total",
        "Estimated spend: relayed tokens × the region's price_per_mtok at the time (in the price's currency).",
        "counter",
    );
    for (r, model, l) in topo.all_latencies() {
        let v = l.spend_nano.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(
            out,
            "meridian_cost_usd_total{{region=\"{}\",model=\"{}\"}} {v}",
            cfg.regions[r].name,
            label(model)
        );
    }
}
