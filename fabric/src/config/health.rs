//! `[health]` (outlier ejection and region degradation) and the scoring keys of `[routing]`
//! (`objective`, `weights`, `hysteresis`): how the edge turns what it observes into region
//! order. Defaults and meanings are in README "Routing that adapts".

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::ctx::Ctx;

/// What region choice optimises after residency and the area's preference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Objective {
    /// Preference order, then measured RTT.
    Latency,
    /// Price per million tokens.
    Cost,
    /// Grid carbon intensity.
    Carbon,
    /// A weighted sum of RTT, price and carbon, each relative to the best region's.
    Balanced,
}

/// Weights of the balanced objective.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Weights {
    /// RTT weight.
    pub latency: f64,
    /// Price weight.
    pub cost: f64,
    /// Carbon weight.
    pub carbon: f64,
}

impl Weights {
    /// The weights `objective` scores with (`Balanced` uses the configured ones).
    pub fn of(objective: Objective, balanced: Weights) -> Weights {
        let w = |latency, cost, carbon| Weights {
            latency,
            cost,
            carbon,
        };
        // Cost and carbon break ties by latency.
        match objective {
            Objective::Latency => w(1.0, 0.0, 0.0),
            Objective::Cost => w(0.01, 1.0, 0.0),
            Objective::Carbon => w(0.01, 0.0, 1.0),
            Objective::Balanced => balanced,
        }
    }
}

/// Outlier ejection and region degradation thresholds.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthSettings {
    /// How often region scores and orders are recomputed.
    pub score_interval: Duration,
    /// A region whose RTT or TTFT is this far above its own baseline is degraded.
    pub degraded_latency: Duration,
    /// A region whose error-rate EWMA is above this is degraded.
    pub degraded_error_rate: f64,
    /// A degraded region stays demoted at least this long (doubling while it degrades
    /// again on every retrial, up to 8×), so traffic does not flap.
    pub hold: Duration,
    /// Consecutive failed attempts that eject a worker.
    pub eject_consecutive_failures: u32,
    /// Error-rate EWMA that ejects a worker (once it has had `eject_min_attempts`).
    pub eject_error_rate: f64,
    /// Attempts a worker must have had before its error rate can eject it.
    pub eject_min_attempts: u64,
    /// First ejection time; doubles on each ejection in a row.
    pub eject_backoff_min: Duration,
    /// Longest ejection time.
    pub eject_backoff_max: Duration,
    /// Most of a region's workers ejected at once, percent (at least one may always be).
    pub max_ejected_percent: u32,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            score_interval: Duration::from_millis(250),
            degraded_latency: Duration::from_millis(150),
            degraded_error_rate: 0.25,
            hold: Duration::from_secs(5),
            eject_consecutive_failures: 5,
            eject_error_rate: 0.5,
            eject_min_attempts: 20,
            eject_backoff_min: Duration::from_secs(1),
            eject_backoff_max: Duration::from_secs(30),
            max_ejected_percent: 50,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub score_interval_ms: Option<Spanned<u64>>,
    pub degraded_latency_ms: Option<Spanned<u64>>,
    pub degraded_error_rate: Option<Spanned<f64>>,
    pub hold_ms: Option<Spanned<u64>>,
    pub eject_consecutive_failures: Option<Spanned<u64>>,
    pub eject_error_rate: Option<Spanned<f64>>,
    pub eject_min_attempts: Option<Spanned<u64>>,
    pub eject_backoff_min_ms: Option<Spanned<u64>>,
    pub eject_backoff_max_ms: Option<Spanned<u64>>,
    pub max_ejected_percent: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWeights {
    pub latency: Option<Spanned<f64>>,
    pub cost: Option<Spanned<f64>>,
    pub carbon: Option<Spanned<f64>>,
}

impl Ctx<'_> {
    /// A fraction in `0.0..=1.0` (`what` names it in the message).
    fn fraction(&mut self, v: Option<&Spanned<f64>>, what: &str, default: f64) -> f64 {
        self.float(v, what, 0.0..=1.0, default)
    }

    pub(super) fn health(&mut self, raw: Option<&RawHealth>) -> HealthSettings {
        let d = HealthSettings::default();
        let Some(h) = raw else { return d };
        let s = HealthSettings {
            score_interval: self.millis_min(
                h.score_interval_ms.as_ref(),
                "score_interval_ms",
                10,
                60_000,
                d.score_interval,
            ),
            degraded_latency: self.millis_min(
                h.degraded_latency_ms.as_ref(),
                "degraded_latency_ms",
                1,
                600_000,
                d.degraded_latency,
            ),
            degraded_error_rate: self.fraction(
                h.degraded_error_rate.as_ref(),
                "degraded_error_rate",
                d.degraded_error_rate,
            ),
            hold: self.millis(h.hold_ms.as_ref(), "hold_ms", 3_600_000, d.hold),
            eject_consecutive_failures: self.count(
                h.eject_consecutive_failures.as_ref(),
                "eject_consecutive_failures",
                1..1_001,
                d.eject_consecutive_failures.into(),
            ) as u32,
            eject_error_rate: self.fraction(
                h.eject_error_rate.as_ref(),
                "eject_error_rate",
                d.eject_error_rate,
            ),
            eject_min_attempts: self.count(
                h.eject_min_attempts.as_ref(),
                "eject_min_attempts",
                1..1_000_001,
                d.eject_min_attempts,
            ),
            eject_backoff_min: self.millis_min(
                h.eject_backoff_min_ms.as_ref(),
                "eject_backoff_min_ms",
                10,
                3_600_000,
                d.eject_backoff_min,
            ),
            eject_backoff_max: self.millis_min(
                h.eject_backoff_max_ms.as_ref(),
                "eject_backoff_max_ms",
                10,
                3_600_000,
                d.eject_backoff_max,
            ),
            max_ejected_percent: self.count(
                h.max_ejected_percent.as_ref(),
                "max_ejected_percent",
                0..101,
                d.max_ejected_percent.into(),
            ) as u32,
        };
        if s.eject_backoff_max < s.eject_backoff_min {
            let span = h.eject_backoff_max_ms.as_ref().map(|v| v.span());
            self.err(
                span,
                "eject_backoff_max_ms must not be below eject_backoff_min_ms",
            );
        }
        s
    }

    pub(super) fn objective(&mut self, v: Option<&Spanned<String>>) -> Objective {
        match v.map(|s| (s, s.get_ref().as_str())) {
            None | Some((_, "latency")) => Objective::Latency,
            Some((_, "cost")) => Objective::Cost,
            Some((_, "carbon")) => Objective::Carbon,
            Some((_, "balanced")) => Objective::Balanced,
            Some((s, other)) => {
                self.err(
                    Some(s.span()),
                    format!("objective `{other}` is not one of latency, cost, carbon, balanced"),
                );
                Objective::Latency
            }
        }
    }

    pub(super) fn weights(&mut self, v: Option<&Spanned<RawWeights>>) -> Weights {
        let d = Weights {
            latency: 1.0,
            cost: 1.0,
            carbon: 1.0,
        };
        let Some(w) = v else { return d };
        let one = |cx: &mut Self, f: Option<&Spanned<f64>>, what: &str, def: f64| {
            cx.float(f, &format!("weights.{what}"), 0.0..=1000.0, def)
        };
        let r = w.get_ref();
        let out = Weights {
            latency: one(self, r.latency.as_ref(), "latency", d.latency),
            cost: one(self, r.cost.as_ref(), "cost", d.cost),
            carbon: one(self, r.carbon.as_ref(), "carbon", d.carbon),
        };
        if out.latency + out.cost + out.carbon == 0.0 {
            self.err(Some(w.span()), "weights must not all be 0");
        }
        out
    }
}
