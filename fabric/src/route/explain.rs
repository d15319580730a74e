//! `meridian route`: a routing decision, step by step.

use std::fmt;

use serde::Serialize;

use super::{RouteError, RouteRequest, Router, Trace};
use crate::config::{RegionId, WorkerId};

/// What routing concluded about one candidate region.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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
#[derive(Clone, Debug, Serialize)]
pub struct RegionStep {
    /// Region name.
    pub region: String,
    /// Verdict.
    #[serde(flatten)]
    pub verdict: RegionVerdict,
}

/// A full routing explanation.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Explanation {
    /// Candidate order before filtering.
    pub candidates: Vec<String>,
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
    out: Explanation,
}

impl Trace for Recorder<'_> {
    fn order(&mut self, order: &[RegionId]) {
        self.out.candidates = order
            .iter()
            .map(|r| self.router.config.regions[*r].name.clone())
            .collect();
    }

    fn region(&mut self, region: RegionId, verdict: RegionVerdict) {
        self.out.steps.push(RegionStep {
            region: self.router.config.regions[region].name.clone(),
            verdict,
        });
    }

    fn worker(&mut self, worker: WorkerId, skipped: usize) {
        self.out.worker = Some(self.router.config.workers[worker].name.clone());
        self.out.ring_skipped = Some(skipped);
    }
}

impl Router {
    /// Routes `req` and records every step. The in-flight slot is released at once.
    pub fn explain(&self, req: &RouteRequest<'_>) -> Explanation {
        let mut rec = Recorder {
            router: self,
            out: Explanation::default(),
        };
        match self.route_traced(req, &mut rec) {
            Ok(d) => rec.out.region = Some(self.config.regions[d.region].name.clone()),
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
            "candidates (area order, then the rest): {}",
            self.candidates.join(" → ")
        )?;
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
