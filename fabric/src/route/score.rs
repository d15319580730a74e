//! Region scores and candidate orders, recomputed off the hot path every
//! `[health] score_interval_ms` from what the edge observes (`route::health`) and published
//! in the routing table. Residency is untouched here: an order always holds every region, and
//! the request path still removes the ones a request may not use. Per area the order is:
//!
//! 1. the area's preferred regions that are not demoted — in preference order under the
//!    `latency` objective, by score under `cost`, `carbon` and `balanced`;
//! 2. every other region that is not demoted, by score (unmeasured ones last, config order);
//! 3. demoted regions (degraded RTT or TTFT against their own baseline, high error rate, half
//!    their workers ejected), by score: still usable by a tenant allowed nothing else.
//!
//! Moves are damped twice: a region overtakes another only when it scores `hysteresis`
//! better, and a demotion lasts at least `[health] hold_ms` (doubling on repeats).

use serde::{Deserialize, Serialize};

use super::fastmap::FastMap;
use super::{Router, Topology};
use crate::config::{Config, HealthSettings, RegionId, RegionSet, Weights};

/// Why a region is demoted behind every healthy one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Demotion {
    /// Path RTT well above its baseline.
    Rtt,
    /// Time to first token well above its baseline.
    Ttft,
    /// Error rate above `degraded_error_rate`.
    Errors,
    /// At least half its workers ejected.
    Ejections,
}

impl Demotion {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Demotion::Rtt => "rtt",
            Demotion::Ttft => "ttft",
            Demotion::Errors => "errors",
            Demotion::Ejections => "ejections",
        }
    }

    /// Every reason, in label order.
    pub const ALL: [Demotion; 4] = [
        Demotion::Rtt,
        Demotion::Ttft,
        Demotion::Errors,
        Demotion::Ejections,
    ];
}

/// One region's score inputs and verdict, as `/routes` and `meridian route` show them.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RegionStatus {
    /// Mean smoothed path RTT of its live workers, ms.
    pub rtt_ms: Option<f64>,
    /// Lowest RTT seen (slowly forgotten), ms.
    pub rtt_baseline_ms: Option<f64>,
    /// Mean TTFT EWMA of its live workers (from sending upstream), ms.
    pub ttft_ms: Option<f64>,
    /// Lowest TTFT seen (slowly forgotten), ms.
    pub ttft_baseline_ms: Option<f64>,
    /// Mean error-rate EWMA of its connected workers.
    pub error_rate: Option<f64>,
    /// Mean path loss of its connected workers.
    pub loss: Option<f64>,
    /// Current price per million tokens.
    pub price_per_mtok: f64,
    /// Current carbon intensity, g/kWh.
    pub carbon_g_per_kwh: f64,
    /// Configured workers.
    pub workers: usize,
    /// Connected workers (not draining).
    pub connected: usize,
    /// Ejected workers.
    pub ejected: usize,
    /// Attempts behind `error_rate` since it was last cleared.
    pub attempts: u64,
    /// Requests queued at its workers (their LOAD reports).
    pub queue_depth: u64,
    /// Why it is demoted, if it is.
    pub demoted: Option<Demotion>,
    /// The demotion in words (`rtt 530 ms > baseline 230 ms + 150 ms`).
    pub why: Option<String>,
    /// Objective score, lower is better; `None`: unmeasured.
    pub score: Option<f64>,
}

/// Candidate orders and the status they came from, for one topology generation.
#[derive(Clone, Debug, Default)]
pub struct Scored {
    /// The generation the region ids refer to.
    pub generation: u64,
    /// Region names of that generation, by id.
    pub names: Vec<String>,
    /// Per region.
    pub regions: Vec<RegionStatus>,
    /// Area → full candidate order.
    pub area_order: FastMap<String, Vec<RegionId>>,
    /// Order for requests without a known area.
    pub default_order: Vec<RegionId>,
    /// Demoted regions.
    pub demoted: RegionSet,
}

/// Each area's preference list, countries inheriting their first group's.
pub fn preferences(config: &Config) -> Vec<(String, Vec<RegionId>)> {
    let mut out: Vec<(String, Vec<RegionId>)> = config
        .areas
        .iter()
        .map(|(a, p)| (a.clone(), p.clone()))
        .collect();
    for (country, groups) in &config.area_groups {
        if config.areas.contains_key(country) {
            continue;
        }
        if let Some(pref) = groups.iter().find_map(|g| config.areas.get(g)) {
            out.push((country.clone(), pref.clone()));
        }
    }
    out
}

impl Scored {
    /// Orders before anything was measured: preference, then config order.
    pub fn initial(topo: &Topology) -> Scored {
        let config = &topo.config;
        let regions: Vec<RegionStatus> = config
            .regions
            .iter()
            .map(|r| RegionStatus {
                price_per_mtok: r.price_per_mtok,
                carbon_g_per_kwh: r.carbon_g_per_kwh,
                ..Default::default()
            })
            .collect();
        let weights = Weights::of(config.routing.objective, config.routing.weights);
        let latency_first = config.routing.objective == crate::config::Objective::Latency;
        let orders = |pref: &[RegionId]| order(pref, &regions, weights, latency_first, &[], 0.0);
        Scored {
            generation: topo.generation,
            names: config.regions.iter().map(|r| r.name.clone()).collect(),
            area_order: preferences(config)
                .into_iter()
                .map(|(a, p)| {
                    let o = orders(&p);
                    (a, o)
                })
                .collect(),
            default_order: orders(&[]),
            demoted: RegionSet::default(),
            regions,
        }
    }

    /// These orders and statuses in `next`'s region ids (matched by name; regions new in
    /// `next` have no status and come last), so hysteresis carries over a reload.
    pub fn translated(&self, next: &Topology) -> Scored {
        let map = |r: RegionId| next.config.region_id(&self.names[r]);
        let orders = |o: &[RegionId]| o.iter().filter_map(|r| map(*r)).collect::<Vec<_>>();
        let mut regions = vec![RegionStatus::default(); next.config.regions.len()];
        let mut demoted = RegionSet::default();
        for (r, status) in self.regions.iter().enumerate() {
            if let Some(n) = map(r) {
                regions[n] = status.clone();
                if self.demoted.contains(r) {
                    demoted.insert(n);
                }
            }
        }
        Scored {
            generation: next.generation,
            names: next.config.regions.iter().map(|r| r.name.clone()).collect(),
            regions,
            area_order: (self.area_order.iter())
                .map(|(a, o)| (a.clone(), orders(o)))
                .collect(),
            default_order: orders(&self.default_order),
            demoted,
        }
    }
}

/// Slack added to both sides when RTTs are compared: differences of a few milliseconds (and
/// sub-millisecond noise between nearby regions) do not reorder regions; 30 ms against 230 ms
/// still scores 6×.
pub const RTT_SLACK_MS: f64 = 10.0;

/// `value / best`, the scale-free term of a score (`None` when unmeasured).
fn relative(value: Option<f64>, best: Option<f64>) -> Option<f64> {
    // A small offset keeps a free (price 0) or zero-carbon region finite.
    Some((value? + 1e-3) / (best? + 1e-3))
}

/// Scores every region under `w`: a weighted sum of RTT, price and carbon, each relative to
/// the best region's. An unmeasured RTT counts as twice the best (so a region is not
/// preferred for being unknown); under a pure latency objective it leaves the score unset.
pub fn scores(regions: &[RegionStatus], w: Weights) -> Vec<Option<f64>> {
    let best =
        |f: &dyn Fn(&RegionStatus) -> Option<f64>| regions.iter().filter_map(f).reduce(f64::min);
    let (rtt, price, carbon) = (
        best(&|r| r.rtt_ms),
        best(&|r| Some(r.price_per_mtok)),
        best(&|r| Some(r.carbon_g_per_kwh)),
    );
    regions
        .iter()
        .map(|r| {
            let lat = relative(
                r.rtt_ms.map(|v| v + RTT_SLACK_MS),
                rtt.map(|v| v + RTT_SLACK_MS),
            );
            if lat.is_none() && w.cost == 0.0 && w.carbon == 0.0 {
                return None;
            }
            let lat = lat.unwrap_or(2.0);
            let cost = relative(Some(r.price_per_mtok), price).unwrap_or(1.0);
            let co2 = relative(Some(r.carbon_g_per_kwh), carbon).unwrap_or(1.0);
            Some(w.latency * lat + w.cost * cost + w.carbon * co2)
        })
        .collect()
}

/// Whether `b` should move ahead of `a`: clearly better (by `h`), or measured while `a` is not.
fn overtakes(a: Option<f64>, b: Option<f64>, h: f64) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => b < a * (1.0 - h),
        (None, Some(_)) => true,
        _ => false,
    }
}

/// Sorts `members` by score starting from their order in `prev` (new ones after, in the
/// given order), moving a region ahead of its neighbour only when it clearly overtakes it.
fn sticky_sort(members: &mut [RegionId], score: &[Option<f64>], prev: &[RegionId], h: f64) {
    let rank = |r: &RegionId| prev.iter().position(|p| p == r).unwrap_or(usize::MAX);
    members.sort_by_key(rank);
    // Bubble passes: each swap removes one inversion of the score order, so this ends.
    loop {
        let mut swapped = false;
        for i in 1..members.len() {
            if overtakes(score[members[i - 1]], score[members[i]], h) {
                members.swap(i - 1, i);
                swapped = true;
            }
        }
        if !swapped {
            return;
        }
    }
}

/// The full candidate order for an area preferring `pref` (module docs). Every region
/// appears exactly once.
pub fn order(
    pref: &[RegionId],
    regions: &[RegionStatus],
    w: Weights,
    latency_first: bool,
    prev: &[RegionId],
    h: f64,
) -> Vec<RegionId> {
    let score = scores(regions, w);
    let demoted = |r: &RegionId| regions[*r].demoted.is_some();
    let mut preferred: Vec<RegionId> = pref.iter().copied().filter(|r| !demoted(r)).collect();
    if !latency_first {
        sticky_sort(&mut preferred, &score, prev, h);
    }
    let mut rest: Vec<RegionId> = (0..regions.len())
        .filter(|r| !pref.contains(r) && !demoted(r))
        .collect();
    sticky_sort(&mut rest, &score, prev, h);
    // Demoted: as published before, newly demoted ones after (preferred first, in preference
    // order, then the others); then by score.
    let mut down: Vec<RegionId> = pref.iter().copied().filter(demoted).collect();
    down.extend((0..regions.len()).filter(|r| !pref.contains(r) && demoted(r)));
    sticky_sort(&mut down, &score, prev, h);
    preferred.into_iter().chain(rest).chain(down).collect()
}

/// Demotion state of one region between ticks.
#[derive(Clone, Debug, Default)]
struct Held {
    reason: Option<Demotion>,
    /// Earliest restore, ms on the router's clock.
    until_ms: u64,
    /// Demotions in a row (each doubles the hold, up to 8×).
    streak: u32,
    /// When the last demotion ended.
    restored_ms: u64,
    rtt_base: Option<f64>,
    ttft_base: Option<f64>,
}

/// Turns observations into [`Scored`] orders, tick by tick. Held by the router; each
/// region's demotion state is kept by name, so it survives reloads.
#[derive(Debug, Default)]
pub struct Scorer {
    held: std::collections::HashMap<String, Held>,
}

/// Moves a baseline down to `v` at once and up towards it slowly (about 10 minutes), so a
/// region's normal is what it does at its best, yet a lasting change is eventually accepted.
fn baseline(base: Option<f64>, v: Option<f64>, up: f64) -> Option<f64> {
    match (base, v) {
        (None, v) => v,
        (Some(b), Some(v)) if v < b => Some(v),
        (Some(b), Some(v)) => Some(b + (v - b) * up),
        (b, None) => b,
    }
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

impl Scorer {
    /// Observes every region of `topo` once and returns the new orders; `prev` is what is
    /// published now, in `topo`'s region ids (for hysteresis).
    pub fn tick(&mut self, router: &Router, topo: &Topology, prev: &Scored, now_ms: u64) -> Scored {
        let cfg = &topo.config;
        let h = &cfg.health;
        let up = (h.score_interval.as_secs_f64() / 600.0).min(1.0);
        let mut regions = Vec::with_capacity(cfg.regions.len());
        self.held.retain(|name, _| cfg.region_id(name).is_some());
        for (r, region) in cfg.regions.iter().enumerate() {
            let held = self.held.entry(region.name.clone()).or_default();
            let ws: Vec<_> = topo.members(r).iter().map(|w| &topo.workers[*w]).collect();
            let connected: Vec<_> = ws.iter().filter(|w| w.is_healthy()).collect();
            let live: Vec<_> = connected
                .iter()
                .filter(|w| !w.health.is_ejected())
                .collect();
            let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
            let mut s = RegionStatus {
                rtt_ms: mean(live.iter().filter_map(|w| w.health.path_rtt().map(ms)))
                    .or_else(|| mean(connected.iter().filter_map(|w| w.health.path_rtt().map(ms)))),
                ttft_ms: mean(live.iter().filter_map(|w| w.health.ttft_ms())),
                error_rate: mean(connected.iter().filter_map(|w| w.health.error_rate())),
                loss: mean(connected.iter().filter_map(|w| w.health.loss())),
                price_per_mtok: topo.regions[r].price(),
                carbon_g_per_kwh: topo.regions[r].carbon(),
                workers: ws.len(),
                connected: connected.len(),
                // A disconnected worker is out anyway; its failing probes must not keep the
                // region demoted.
                ejected: connected.iter().filter(|w| w.health.is_ejected()).count(),
                attempts: connected.iter().map(|w| w.health.recent_attempts()).sum(),
                queue_depth: connected.iter().map(|w| w.queue_depth()).sum(),
                ..Default::default()
            };
            held.rtt_base = baseline(held.rtt_base, s.rtt_ms, up);
            held.ttft_base = baseline(held.ttft_base, s.ttft_ms, up);
            s.rtt_baseline_ms = held.rtt_base;
            s.ttft_baseline_ms = held.ttft_base;
            let (reason, why) = self::verdict(&s, h, 1.0);
            match held.reason {
                None => {
                    if let Some(reason) = reason {
                        // A region that degrades again soon after its restore is held longer.
                        if now_ms.saturating_sub(held.restored_ms) > 4 * h.hold.as_millis() as u64 {
                            held.streak = 0;
                        }
                        let hold = h.hold.as_millis() as u64 * (1 << held.streak.min(3));
                        held.streak += 1;
                        held.reason = Some(reason);
                        held.until_ms = now_ms + hold;
                        router.demotions[reason as usize]
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::info!(region = %region.name, why = why.as_deref().unwrap_or(""), hold_ms = hold, "region demoted");
                    }
                }
                Some(_) if now_ms >= held.until_ms => {
                    // RTT keeps being measured without traffic, and probes decide about
                    // ejected workers: those must have cleared. TTFT and errors of a region
                    // without traffic go stale, so they get a fresh trial (a region still bad
                    // is demoted again on its next traffic, with a longer hold).
                    let (still, _) = self::verdict(&s, h, 0.5);
                    if !matches!(still, Some(Demotion::Rtt | Demotion::Ejections)) {
                        if still.is_some() || s.ttft_ms.is_some() || s.error_rate.is_some() {
                            for w in &ws {
                                w.health.fresh_trial();
                            }
                            s.ttft_ms = None;
                            s.error_rate = None;
                        }
                        held.reason = None;
                        held.restored_ms = now_ms;
                        tracing::info!(region = %region.name, "region restored");
                    }
                }
                Some(_) => {}
            }
            s.demoted = held.reason;
            if s.demoted.is_some() {
                s.why = why.or_else(|| {
                    Some(format!(
                        "held after {}",
                        held.reason.map_or("", |r| r.label())
                    ))
                });
            }
            regions.push(s);
        }
        let weights = Weights::of(cfg.routing.objective, cfg.routing.weights);
        let computed = scores(&regions, weights);
        for (s, score) in regions.iter_mut().zip(computed) {
            s.score = score;
        }
        let latency_first = cfg.routing.objective == crate::config::Objective::Latency;
        let hyst = cfg.routing.hysteresis;
        let area_order = preferences(cfg)
            .into_iter()
            .map(|(a, pref)| {
                let before = prev.area_order.get(&a).map_or(&[][..], |v| v.as_slice());
                let o = order(&pref, &regions, weights, latency_first, before, hyst);
                (a, o)
            })
            .collect();
        let default_order = order(
            &[],
            &regions,
            weights,
            latency_first,
            &prev.default_order,
            hyst,
        );
        let mut demoted = RegionSet::default();
        for (r, s) in regions.iter().enumerate() {
            if s.demoted.is_some() {
                demoted.insert(r);
            }
        }
        Scored {
            generation: topo.generation,
            names: cfg.regions.iter().map(|r| r.name.clone()).collect(),
            regions,
            area_order,
            default_order,
            demoted,
        }
    }
}

/// Whether `s` is degraded; thresholds are scaled by `scale` (0.5 to leave a demotion: a
/// region must be clearly better than the threshold that demoted it).
fn verdict(s: &RegionStatus, h: &HealthSettings, scale: f64) -> (Option<Demotion>, Option<String>) {
    let margin = h.degraded_latency.as_secs_f64() * 1e3 * scale;
    if let (Some(v), Some(b)) = (s.rtt_ms, s.rtt_baseline_ms) {
        if v > b + margin {
            return (
                Some(Demotion::Rtt),
                Some(format!(
                    "rtt {v:.0} ms > baseline {b:.0} ms + {margin:.0} ms"
                )),
            );
        }
    }
    if let (Some(v), Some(b)) = (s.ttft_ms, s.ttft_baseline_ms) {
        if v > b + margin {
            return (
                Some(Demotion::Ttft),
                Some(format!(
                    "ttft {v:.0} ms > baseline {b:.0} ms + {margin:.0} ms"
                )),
            );
        }
    }
    // An error rate means something only over enough attempts (one failure after a reset
    // would read as 100 %).
    let judged = s.attempts >= h.eject_min_attempts.min(10);
    if let Some(e) = s
        .error_rate
        .filter(|e| judged && *e > h.degraded_error_rate * scale)
    {
        return (
            Some(Demotion::Errors),
            Some(format!(
                "error rate {:.0} % > {:.0} %",
                e * 100.0,
                h.degraded_error_rate * scale * 100.0
            )),
        );
    }
    if s.workers > 0 && s.ejected * 2 >= s.workers {
        return (
            Some(Demotion::Ejections),
            Some(format!("{} of {} workers ejected", s.ejected, s.workers)),
        );
    }
    (None, None)
}

#[cfg(test)]
mod tests;
