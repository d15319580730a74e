//! Routing policy (DESIGN.md "Routing"): candidate regions in the order `score` computed
//! (area preference, measured latency, price, carbon, demotion of degraded regions),
//! filtered by residency and model only; the first healthy candidate under its load bound
//! wins; fail-closed residency; a worker inside the region by consistent hash with bounded
//! load; outlier workers ejected (`health`).
//!
//! The request path reads the current [`RoutingTable`] from an [`RcuCell`] and per-worker
//! atomics; it takes no lock. Tables are rebuilt by [`Router::rebuild`] when health, an
//! ejection or the scored order changes.

mod explain;
pub mod fastmap;
pub mod hash;
pub mod health;
pub mod ring;
pub mod score;
mod state;
pub mod table;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use meridian_protocol::ErrorCode;

pub use explain::{Explanation, RegionVerdict};
pub use hash::KeyedHash;
pub use score::{Demotion, RegionStatus, Scored, Scorer};
pub use state::WorkerState;
pub use table::RoutingTable;

use crate::config::{Config, RegionId, RegionSet, WorkerId};
use crate::sync::{InFlight, LoadGuard, RcuCell};

/// What routing needs to know about a request.
#[derive(Clone, Copy, Debug, Default)]
pub struct RouteRequest<'a> {
    /// Model name.
    pub model: &'a str,
    /// Client area, if known.
    pub area: Option<&'a str>,
    /// Tenant, if any.
    pub tenant: Option<&'a str>,
    /// Request's residency policy, if any (narrows the tenant's).
    pub residency: Option<&'a str>,
    /// Shard key bytes (explicit session id, or the prompt's first bytes).
    pub shard_key: &'a [u8],
    /// Workers that already failed this request.
    pub exclude: &'a [WorkerId],
}

/// Where a request goes. Holds the worker's and the region's in-flight slots until dropped.
#[derive(Debug)]
pub struct Decision<'a> {
    /// The region.
    pub region: RegionId,
    /// The worker.
    pub worker: WorkerId,
    /// The worker's in-flight slot.
    pub guard: LoadGuard<'a>,
    /// The region's in-flight slot.
    pub region_guard: LoadGuard<'a>,
}

/// Why a request cannot be routed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// The tenant is not configured: the client must use a known tenant.
    #[error("unknown tenant `{0}`")]
    UnknownTenant(String),
    /// The residency policy is not configured: fix the request.
    #[error("unknown residency policy `{0}`")]
    UnknownResidency(String),
    /// No region serves the model: fix the model name.
    #[error("no region serves model `{0}`")]
    ModelNotFound(String),
    /// No allowed region can serve the request; it is never sent elsewhere. Retry later.
    #[error("no region allowed by residency policy `{policy}` can serve the request (allowed: {allowed}); not spilling outside the policy")]
    ResidencyUnavailable {
        /// The effective policy name(s).
        policy: String,
        /// The allowed regions.
        allowed: String,
    },
    /// Every candidate region is at its load bound: retry later.
    #[error("every candidate region is at its load bound")]
    Overloaded,
    /// No candidate region has a healthy worker for the model: retry later.
    #[error("no healthy worker serves model `{0}`")]
    Unavailable(String),
}

impl RouteError {
    /// The wire code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            RouteError::UnknownTenant(_) => ErrorCode::UNAUTHORIZED,
            RouteError::UnknownResidency(_) => ErrorCode::BAD_REQUEST,
            RouteError::ModelNotFound(_) => ErrorCode::MODEL_NOT_FOUND,
            RouteError::ResidencyUnavailable { .. } => ErrorCode::RESIDENCY_UNAVAILABLE,
            RouteError::Overloaded => ErrorCode::OVERLOADED,
            RouteError::Unavailable(_) => ErrorCode::UNAVAILABLE,
        }
    }
}

/// Receives the steps of a routing decision; the request path uses `()` (no cost),
/// `meridian route` records them.
pub trait Trace {
    /// The candidate order before filtering.
    fn order(&mut self, _order: &[RegionId]) {}
    /// The verdict on one candidate region.
    fn region(&mut self, _region: RegionId, _verdict: RegionVerdict) {}
    /// The worker picked inside the chosen region and how many ring candidates were passed.
    fn worker(&mut self, _worker: WorkerId, _skipped: usize) {}
    /// Whether the decision is a real request's (counted in metrics) rather than an
    /// explanation's.
    fn counts(&self) -> bool {
        true
    }
}

impl Trace for () {}

/// The router: configuration, live worker state, and the current routing table.
#[derive(Debug)]
pub struct Router {
    config: Arc<Config>,
    hash: KeyedHash,
    workers: Vec<Arc<WorkerState>>,
    /// In-flight requests per region (this edge's), for region bounds and ring bounds.
    region_in_flight: Vec<InFlight>,
    /// Per region, load other edges put on it (from LOAD reports; see `record_load`).
    region_extra: Vec<AtomicU64>,
    table: RcuCell<RoutingTable>,
    epoch: AtomicU64,
    changed: tokio::sync::watch::Sender<u64>,
    /// Serialises rebuilds (off the hot path), so a slower rebuild that read older health
    /// can never overwrite a newer table.
    rebuilding: std::sync::Mutex<()>,
    /// The scorer's latest orders and region status.
    scored: RcuCell<Scored>,
    /// Per region, price per million tokens and carbon intensity as `f64` bits (changed at
    /// run time through the admin API).
    prices: Vec<(AtomicU64, AtomicU64)>,
    /// Time base of ejection backoffs and demotion holds.
    clock: std::time::Instant,
    /// Serialises ejection decisions (failure path only), so concurrent failures cannot
    /// eject more of a region than `max_ejected_percent`.
    ejecting: std::sync::Mutex<()>,
    /// Requests that went past their first allowed region, by [`Spill`].
    pub spills: [AtomicU64; 3],
    /// Region demotions, by [`Demotion`].
    pub demotions: [AtomicU64; 4],
}

/// Why a request went past the first allowed region in its candidate order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spill {
    /// It had no healthy worker for the model.
    Unhealthy = 0,
    /// It was at its load bound.
    OverBound = 1,
    /// A preferred region was demoted (degraded).
    Degraded = 2,
}

impl Spill {
    /// Every reason with its metric label.
    pub const ALL: [(Spill, &'static str); 3] = [
        (Spill::Unhealthy, "unhealthy"),
        (Spill::OverBound, "over_bound"),
        (Spill::Degraded, "degraded"),
    ];
}

impl Router {
    /// A router over `config`; every worker starts unhealthy until marked otherwise.
    pub fn new(config: Arc<Config>) -> Self {
        let hash = config
            .routing
            .ring_key
            .map_or_else(KeyedHash::random, KeyedHash::new);
        let workers: Vec<_> = config
            .workers
            .iter()
            .map(|_| Arc::new(WorkerState::new()))
            .collect();
        let region_in_flight = config.regions.iter().map(|_| InFlight::new()).collect();
        let region_extra = config.regions.iter().map(|_| AtomicU64::new(0)).collect();
        let scored = Scored::initial(&config);
        let table = RoutingTable::build(&config, hash, 0, &workers, &scored);
        let (changed, _) = tokio::sync::watch::channel(0);
        let prices = config
            .regions
            .iter()
            .map(|r| {
                (
                    AtomicU64::new(r.price_per_mtok.to_bits()),
                    AtomicU64::new(r.carbon_g_per_kwh.to_bits()),
                )
            })
            .collect();
        Router {
            config,
            hash,
            workers,
            region_in_flight,
            region_extra,
            table: RcuCell::new(Arc::new(table)),
            epoch: AtomicU64::new(0),
            changed,
            rebuilding: std::sync::Mutex::new(()),
            scored: RcuCell::new(Arc::new(scored)),
            prices,
            clock: std::time::Instant::now(),
            ejecting: std::sync::Mutex::new(()),
            spills: Default::default(),
            demotions: Default::default(),
        }
    }

    /// Milliseconds since the router was made (the clock of backoffs and holds).
    pub fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    /// Region `r`'s current price per million tokens.
    pub fn price(&self, r: RegionId) -> f64 {
        f64::from_bits(self.prices[r].0.load(Ordering::Relaxed))
    }

    /// Region `r`'s current carbon intensity, g/kWh.
    pub fn carbon(&self, r: RegionId) -> f64 {
        f64::from_bits(self.prices[r].1.load(Ordering::Relaxed))
    }

    /// Changes region `r`'s price and/or carbon intensity; the scorer uses them from its
    /// next tick. Values must be finite and non-negative (the admin API checks).
    pub fn set_price(&self, r: RegionId, price_per_mtok: Option<f64>, carbon: Option<f64>) {
        if let Some(p) = price_per_mtok {
            self.prices[r].0.store(p.to_bits(), Ordering::Relaxed);
        }
        if let Some(c) = carbon {
            self.prices[r].1.store(c.to_bits(), Ordering::Relaxed);
        }
    }

    /// The scorer's latest orders and region status.
    pub fn scored(&self) -> Arc<Scored> {
        self.scored.load()
    }

    /// Publishes new orders; rebuilds the table if an order or a demotion changed.
    pub fn publish(&self, scored: Scored) {
        let old = self.scored.load();
        let changed = old.demoted != scored.demoted
            || old.default_order != scored.default_order
            || scored
                .area_order
                .iter()
                .any(|(a, o)| old.area_order.get(a) != Some(o));
        self.scored.store(Arc::new(scored));
        if changed {
            self.rebuild();
        }
    }

    /// Records how an attempt on worker `w` went; a failure may eject the worker
    /// (consecutive failures or error rate, `[health]`), at most `max_ejected_percent` of
    /// its region at once.
    pub fn record_attempt(&self, w: WorkerId, failed: bool) {
        let h = &self.workers[w].health;
        let consecutive = h.outcome(failed);
        let s = &self.config.health;
        let by_count = consecutive >= s.eject_consecutive_failures;
        let by_rate = h.recent_attempts() >= s.eject_min_attempts
            && h.error_rate().is_some_and(|e| e >= s.eject_error_rate);
        if !failed || !(by_count || by_rate) || h.is_ejected() {
            return;
        }
        let _serial = self.ejecting.lock().unwrap_or_else(|e| e.into_inner());
        let region = self.config.workers[w].region;
        let members: Vec<WorkerId> = (0..self.workers.len())
            .filter(|i| self.config.workers[*i].region == region)
            .collect();
        // Disconnected workers do not count: they are out of the table anyway.
        let ejected = members
            .iter()
            .filter(|i| self.workers[**i].is_healthy() && self.workers[**i].health.is_ejected())
            .count();
        let cap = (members.len() * s.max_ejected_percent as usize / 100).max(1);
        if ejected >= cap {
            return;
        }
        let backoff = self.eject_backoff(w);
        if h.eject(self.now_ms() + backoff.as_millis() as u64) {
            h.eject_streak.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                worker = %self.config.workers[w].name,
                consecutive,
                error_rate = h.error_rate().unwrap_or(0.0),
                ?backoff,
                "worker ejected (outlier): probing it before readmission"
            );
            self.rebuild();
        }
    }

    /// How long worker `w`'s next ejection lasts: doubling per ejection in a row.
    fn eject_backoff(&self, w: WorkerId) -> Duration {
        let s = &self.config.health;
        let streak = self.workers[w].health.eject_streak.load(Ordering::Relaxed);
        (s.eject_backoff_min * (1u32 << streak.min(16))).min(s.eject_backoff_max)
    }

    /// Ejected workers due for a probe now.
    pub fn due_probes(&self) -> Vec<WorkerId> {
        let now = self.now_ms();
        (0..self.workers.len())
            .filter(|w| {
                let h = &self.workers[*w].health;
                h.is_ejected() && h.probe_at_ms.load(Ordering::Relaxed) <= now
            })
            .collect()
    }

    /// A probe of ejected worker `w` ended: readmitted on success, ejected again (longer)
    /// otherwise.
    pub fn probed(&self, w: WorkerId, ok: bool) {
        let h = &self.workers[w].health;
        if ok {
            h.readmit();
            tracing::info!(worker = %self.config.workers[w].name, "probe succeeded: worker readmitted");
            self.rebuild();
        } else {
            let backoff = self.eject_backoff(w);
            h.eject_streak.fetch_add(1, Ordering::Relaxed);
            h.probe_at_ms.store(
                self.now_ms() + backoff.as_millis() as u64,
                Ordering::Relaxed,
            );
            tracing::info!(worker = %self.config.workers[w].name, ?backoff, "probe failed: worker stays ejected");
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// Live state of worker `w`.
    pub fn worker(&self, w: WorkerId) -> &Arc<WorkerState> {
        &self.workers[w]
    }

    /// The current table.
    pub fn table(&self) -> Arc<RoutingTable> {
        self.table.load()
    }

    /// Rebuilds the table from current worker health and publishes it.
    pub fn rebuild(&self) {
        let _serial = self.rebuilding.lock().unwrap_or_else(|e| e.into_inner());
        let epoch = self.epoch.fetch_add(1, Ordering::Relaxed) + 1;
        let scored = self.scored.load();
        let table = RoutingTable::build(&self.config, self.hash, epoch, &self.workers, &scored);
        self.table.store(Arc::new(table));
        self.changed.send_replace(epoch);
    }

    /// Waits until `pred` holds, re-checking after every table rebuild (health change).
    pub async fn wait_until(&self, pred: impl Fn(&Router) -> bool) {
        let mut rx = self.changed.subscribe();
        while !pred(self) {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Whether the current table has no healthy worker in `region`.
    pub fn region_down(&self, region: RegionId) -> bool {
        self.table.read(|t| t.regions[region].healthy.is_empty())
    }

    /// Requests this edge has in flight in region `r`.
    pub fn region_in_flight(&self, r: RegionId) -> u64 {
        self.region_in_flight[r].current()
    }

    /// Healthy workers in the current table (what routing sees, not just the flags).
    pub fn healthy_workers(&self) -> usize {
        self.table
            .read(|t| t.regions.iter().map(|r| r.healthy.len()).sum())
    }

    /// Marks worker `w` healthy or not, rebuilding the table if that changed.
    pub fn set_healthy(&self, w: WorkerId, healthy: bool) {
        if self.workers[w].set_healthy(healthy) {
            self.rebuild();
        }
    }

    /// Regions `req` may use under its tenant's and its own residency policies, and whether
    /// any policy applies. No allocation.
    fn allowed(
        &self,
        table: &RoutingTable,
        req: &RouteRequest<'_>,
    ) -> Result<(RegionSet, bool), RouteError> {
        let mut allowed = RegionSet::ALL;
        let mut restricted = false;
        if let Some(t) = req.tenant {
            let set = table
                .tenants
                .get(t)
                .ok_or_else(|| RouteError::UnknownTenant(t.to_owned()))?;
            allowed = allowed.intersect(*set);
            restricted |= *set != RegionSet::ALL;
        }
        if let Some(p) = req.residency {
            let set = table
                .residency
                .get(p)
                .ok_or_else(|| RouteError::UnknownResidency(p.to_owned()))?;
            allowed = allowed.intersect(*set);
            restricted = true;
        }
        Ok((allowed, restricted))
    }

    /// The effective policy's name for error messages (`tenant-policy+request-policy`).
    fn policy_name(&self, req: &RouteRequest<'_>) -> String {
        let tenant = req
            .tenant
            .and_then(|t| self.config.tenants.get(t))
            .and_then(|p| p.as_deref());
        let mut names: Vec<&str> = tenant.into_iter().collect();
        if let Some(p) = req.residency.filter(|p| Some(*p) != tenant) {
            names.push(p);
        }
        names.join("+")
    }

    /// Routes a request. Lock-free and allocation-free on success (one RCU read, a few
    /// hash-map probes, bit masks, one binary search on the region's ring, two atomic
    /// increments).
    pub fn route(&self, req: &RouteRequest<'_>) -> Result<Decision<'_>, RouteError> {
        self.route_traced(req, &mut ())
    }

    /// Routes a request, reporting each step to `trace`.
    pub fn route_traced(
        &self,
        req: &RouteRequest<'_>,
        trace: &mut impl Trace,
    ) -> Result<Decision<'_>, RouteError> {
        self.table.read(|table| self.route_in(table, req, trace))
    }

    fn route_in(
        &self,
        table: &RoutingTable,
        req: &RouteRequest<'_>,
        trace: &mut impl Trace,
    ) -> Result<Decision<'_>, RouteError> {
        let (allowed, restricted) = self.allowed(table, req)?;
        let model = *table
            .models
            .get(req.model)
            .ok_or_else(|| RouteError::ModelNotFound(req.model.to_owned()))?;
        let model_bit = 1u64 << model.index;
        let order = table.order(req.area);
        trace.order(order);
        let mut any_over_bound = false;
        // Why the first region this request could use was passed over, if it was.
        let mut passed: Option<Spill> = None;
        let mut first = true;
        let eligible =
            |w: WorkerId| table.worker_models[w] & model_bit != 0 && !req.exclude.contains(&w);
        for &r in order {
            if !allowed.contains(r) {
                trace.region(r, RegionVerdict::NotAllowed);
                continue;
            }
            if !model.regions.contains(r) {
                trace.region(r, RegionVerdict::NoModel);
                continue;
            }
            let region = &table.regions[r];
            let live = region.healthy_models & model_bit != 0
                && (req.exclude.is_empty() || region.healthy.iter().any(|w| eligible(*w)));
            let Some(ring) = region.ring.as_ref().filter(|_| live) else {
                trace.region(r, RegionVerdict::Unhealthy);
                if std::mem::take(&mut first) {
                    passed = Some(Spill::Unhealthy);
                }
                continue;
            };
            let load =
                self.region_in_flight[r].current() + self.region_extra[r].load(Ordering::Relaxed);
            let capacity = region.capacity;
            if load >= capacity {
                any_over_bound = true;
                trace.region(r, RegionVerdict::OverBound { load, capacity });
                if std::mem::take(&mut first) {
                    passed = Some(Spill::OverBound);
                }
                continue;
            }
            let placement = ring
                .place(
                    req.shard_key,
                    self.config.routing.load_factor,
                    self.region_in_flight[r].current(),
                    |w| self.workers[w].local_in_flight(),
                    eligible,
                )
                .expect("the region has an eligible healthy worker");
            trace.region(r, RegionVerdict::Chosen { load, capacity });
            trace.worker(placement.worker, placement.skipped);
            // A preferred region this request could have used was demoted: it spilled here.
            let usable = allowed.intersect(model.regions);
            let preferred = req
                .area
                .and_then(|a| table.preferred.get(a))
                .copied()
                .unwrap_or_default();
            // Counted when the request left its preference list for it.
            if passed.is_none()
                && !preferred.contains(r)
                && usable.intersect(preferred).intersect(table.demoted) != RegionSet::default()
            {
                passed = Some(Spill::Degraded);
            }
            if let Some(p) = passed.filter(|_| trace.counts()) {
                self.spills[p as usize].fetch_add(1, Ordering::Relaxed);
            }
            return Ok(Decision {
                region: r,
                worker: placement.worker,
                guard: self.workers[placement.worker].in_flight.acquire(),
                region_guard: self.region_in_flight[r].acquire(),
            });
        }
        Err(if any_over_bound {
            RouteError::Overloaded
        } else if restricted {
            RouteError::ResidencyUnavailable {
                policy: self.policy_name(req),
                allowed: self.region_names(allowed),
            }
        } else {
            RouteError::Unavailable(req.model.to_owned())
        })
    }

    /// Records worker `w`'s LOAD report and refreshes its region's share of load from other
    /// edges (off the hot path: once per report interval per worker).
    pub fn record_load(&self, w: WorkerId, in_flight: u64, queue_depth: u64) {
        self.workers[w].set_reported(in_flight, queue_depth);
        let r = self.config.workers[w].region;
        let extra = (0..self.workers.len())
            .filter(|i| self.config.workers[*i].region == r)
            .map(|i| self.workers[i].reported_extra())
            .sum();
        self.region_extra[r].store(extra, Ordering::Relaxed);
    }

    fn region_names(&self, set: RegionSet) -> String {
        let names: Vec<_> = self
            .config
            .regions
            .iter()
            .enumerate()
            .filter(|(i, _)| set.contains(*i))
            .map(|(_, r)| r.name.as_str())
            .collect();
        names.join(", ")
    }
}

#[cfg(test)]
mod tests;
