//! `meridian route`: a routing decision, step by step, with each candidate region's score
//! inputs (RTT, TTFT, error rate, price, carbon, ejections) and why it stands where it does.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{RouteError, RouteRequest, Router, RoutingTable, Trace};
use crate::config::{RegionId, WorkerId};

/// What routing concluded about one candidate region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum RegionVerdict {
    /// Removed by the residency policy.
    NotAllowed,
    /// Removed: no worker there serves the model.
    NoModel,
    /// Skipped: no healthy worker serves the model.
    Unhealthy,
    /// Skipped: at its load bound.
    OverBound {
        /// In-flight load.
        load: u64,
        /// Capacity.
        capacity: u64,
    },
    /// Chosen.
    Chosen {
        /// In-flight load.
        load: u64,
        /// Capacity.
        capacity: u64,
    },
}

/// One candidate region and its verdict.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegionStep {
    /// Region name.
    pub region: String,
    /// Verdict.
    #[serde(flatten)]
    pub verdict: RegionVerdict,
}

/// A candidate region's place in the order, with the inputs that put it there.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Candidate {
    /// Region name.
    pub region: String,
    /// Why it stands here: `preferred #1`, `by rtt`, `by score`, `demoted: …`.
    pub placed: String,
    /// The scorer's inputs and verdict for it.
    #[serde(flatten)]
    pub status: super::RegionStatus,
}

/// A full routing explanation.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Explanation {
    /// The objective regions are scored by.
    pub objective: String,
    /// Candidate order before filtering.
    pub candidates: Vec<String>,
    /// Each candidate's score inputs, in order.
    pub scores: Vec<Candidate>,
    /// Each examined region, in order.
    pub steps: Vec<RegionStep>,
    /// Chosen region.
    pub region: Option<String>,
    /// Chosen worker.
    pub worker: Option<String>,
    /// Ring candidates passed over (bounded load) before the chosen worker.
    pub ring_skipped: Option<usize>,
    /// Error code name, if routing failed.
    pub error: Option<String>,
    /// Error message, if routing failed.
    pub message: Option<String>,
}

struct Recorder<'a> {
    router: &'a Router,
    /// The request's area.
    area: Option<String>,
    /// The request area's preference list.
    preferred: Vec<RegionId>,
    out: Explanation,
}

impl Trace for Recorder<'_> {
    fn order(&mut self, table: &RoutingTable, order: &[RegionId]) {
        let cfg = &table.topology.config;
        self.out.candidates = order.iter().map(|r| cfg.regions[*r].name.clone()).collect();
        self.preferred = (self.area.as_deref())
            .and_then(|a| {
                super::score::preferences(cfg)
                    .into_iter()
                    .find(|(name, _)| name == a)
            })
            .map(|(_, p)| p)
            .unwrap_or_default();
        self.out.objective = format!("{:?}", cfg.routing.objective).to_lowercase();
        let scored = self.router.scored_in(table);
        let pref = self.preferred.clone();
        let latency = cfg.routing.objective == crate::config::Objective::Latency;
        self.out.scores = order
            .iter()
            .map(|&r| {
                let status = scored.regions[r].clone();
                let placed = match (&status.demoted, pref.iter().position(|p| *p == r)) {
                    (Some(_), _) => format!("demoted: {}", status.why.as_deref().unwrap_or("")),
                    (None, Some(i)) if latency => format!("preferred #{}", i + 1),
                    (None, Some(_)) => "preferred, by score".into(),
                    (None, None) if latency && status.rtt_ms.is_none() => {
                        "not preferred, unmeasured (config order)".into()
                    }
                    (None, None) if latency => "not preferred, by rtt".into(),
                    (None, None) => "not preferred, by score".into(),
                };
                Candidate {
                    region: cfg.regions[r].name.clone(),
                    placed,
                    status,
                }
            })
            .collect();
    }

    fn region(&mut self, table: &RoutingTable, region: RegionId, verdict: RegionVerdict) {
        self.out.steps.push(RegionStep {
            region: table.topology.config.regions[region].name.clone(),
            verdict,
        });
    }

    fn counts(&self) -> bool {
        false
    }

    fn worker(&mut self, table: &RoutingTable, worker: WorkerId, skipped: usize) {
        self.out.worker = Some(table.topology.config.workers[worker].name.clone());
        self.out.ring_skipped = Some(skipped);
    }
}

impl Router {
    /// Routes `req` and records every step. The in-flight slot is released at once.
    pub fn explain(&self, req: &RouteRequest<'_>) -> Explanation {
        let mut rec = Recorder {
            router: self,
            area: req.area.map(str::to_owned),
            preferred: Vec::new(),
            out: Explanation {
                objective: format!("{:?}", self.config().routing.objective).to_lowercase(),
                ..Default::default()
            },
        };
        match self.route_traced(req, &mut rec) {
            Ok(d) => rec.out.region = Some(d.region_name().to_owned()),
            Err(e) => rec.out.fail(&e),
        }
        rec.out
    }
}

impl Explanation {
    fn fail(&mut self, e: &RouteError) {
        self.error = e.code().name().map(str::to_owned);
        self.message = Some(e.to_string());
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "candidates (objective {}): {}",
            self.objective,
            self.candidates.join(" → ")
        )?;
        let num =
            |v: Option<f64>, unit: &str| v.map_or("-".to_owned(), |v| format!("{v:.0}{unit}"));
        writeln!(
            f,
            "  {:<22} {:>7} {:>7} {:>6} {:>5} {:>6} {:>7} {:>7} {:>7}  placed",
            "region", "rtt", "ttft", "errors", "queue", "price", "carbon", "ejected", "score"
        )?;
        for c in &self.scores {
            let s = &c.status;
            writeln!(
                f,
                "  {:<22} {:>7} {:>7} {:>6} {:>5} {:>6.2} {:>7.0} {:>7} {:>7}  {}",
                c.region,
                num(s.rtt_ms, "ms"),
                num(s.ttft_ms, "ms"),
                num(s.error_rate.map(|e| e * 100.0), "%"),
                s.queue_depth,
                s.price_per_mtok,
                s.carbon_g_per_kwh,
                format!("{}/{}", s.ejected, s.workers),
                s.score.map_or("-".to_owned(), |v| format!("{v:.3}")),
                c.placed
            )?;
        }
        for s in &self.steps {
            let v = match s.verdict {
                RegionVerdict::NotAllowed => {
                    "filtered: not allowed by residency policy".to_string()
                }
                RegionVerdict::NoModel => "filtered: no worker serves the model".to_string(),
                RegionVerdict::Unhealthy => "skipped: no healthy worker".to_string(),
                RegionVerdict::OverBound { load, capacity } => {
                    format!("skipped: at load bound ({load}/{capacity})")
                }
                RegionVerdict::Chosen { load, capacity } => {
                    format!("chosen (load {load}/{capacity})")
                }
            };
            writeln!(f, "  {:<22} {v}", s.region)?;
        }
        match (&self.region, &self.worker, &self.error) {
            (Some(r), Some(w), _) => write!(
                f,
                "→ region {r}, worker {w} (ring candidates passed over: {})",
                self.ring_skipped.unwrap_or(0)
            ),
            (_, _, Some(code)) => write!(
                f,
                "→ error {code}: {}",
                self.message.as_deref().unwrap_or("")
            ),
            _ => write!(f, "→ no decision"),
        }
    }
}

impl RouteRequest<'_> {
    /// A request for `model` with everything else empty.
    pub fn for_model(model: &str) -> RouteRequest<'_> {
        RouteRequest {
            model,
            ..Default::default()
        }
    }
}
