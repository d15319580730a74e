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
pub mod topology;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use meridian_protocol::ErrorCode;

pub use explain::{Explanation, RegionVerdict};
pub use hash::KeyedHash;
pub use score::{Demotion, RegionStatus, Scored, Scorer};
pub use state::WorkerState;
pub use table::RoutingTable;
pub use topology::{Change, RegionState, Topology};

use crate::config::{Config, RegionId, RegionSet, WorkerEntry, WorkerId};
use crate::sync::RcuCell;

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
    /// Workers that already failed this request, by [`WorkerState::uid`].
    pub exclude: &'a [u64],
    /// The residency of the request's first decision, for its later attempts.
    pub pinned: Option<&'a Pinned>,
}

/// Where a request goes. Holds the worker's and the region's in-flight slots, and the
/// routing table (so the generation) it was decided on, until dropped.
#[derive(Debug)]
pub struct Decision {
    /// The region, in the decision's generation.
    pub region: RegionId,
    /// The worker, in the decision's generation.
    pub worker: WorkerId,
    /// The regions the request's residency policy allowed, in the decision's generation.
    pub allowed: RegionSet,
    table: Arc<RoutingTable>,
}

impl Decision {
    /// The generation the decision was made in.
    pub fn topology(&self) -> &Arc<Topology> {
        &self.table.topology
    }

    /// The chosen worker's live state.
    pub fn state(&self) -> &Arc<WorkerState> {
        &self.table.topology.workers[self.worker]
    }

    /// The chosen worker's config entry.
    pub fn entry(&self) -> &WorkerEntry {
        &self.table.topology.config.workers[self.worker]
    }

    /// The chosen region's name.
    pub fn region_name(&self) -> &str {
        &self.table.topology.config.regions[self.region].name
    }

    /// The chosen worker's uid (to exclude it from the request's later attempts).
    pub fn uid(&self) -> u64 {
        self.state().uid
    }
}

impl Drop for Decision {
    fn drop(&mut self) {
        let topo = &self.table.topology;
        topo.workers[self.worker].in_flight.leave();
        topo.regions[self.region].in_flight.leave();
    }
}

/// The residency a request was first routed under: its later attempts (retries,
/// resumptions) may only go where that *and* the policy in force then allow, so a reload in
/// between can never send it somewhere neither policy allows alone.
#[derive(Clone, Debug)]
pub struct Pinned {
    /// The generation of the first decision.
    pub topology: Arc<Topology>,
    /// The regions its policy allowed then.
    pub allowed: RegionSet,
}

impl Pinned {
    /// The pin of a first decision.
    pub fn of(d: &Decision) -> Pinned {
        Pinned {
            topology: d.topology().clone(),
            allowed: d.allowed,
        }
    }

    /// The pin of a request admitted by `topology`'s `Auth`: its tenant's and its own
    /// residency there. Its first decision, even on a newer table, stays inside it. An error
    /// if a name is unknown in that generation: refuse the request (a newer generation may
    /// know the name, but must not route it without this generation's policy).
    pub fn admitted(
        topology: &Arc<Topology>,
        tenant: Option<&str>,
        residency: Option<&str>,
    ) -> Result<Pinned, RouteError> {
        Ok(Pinned {
            allowed: topology.allowed(tenant, residency)?,
            topology: topology.clone(),
        })
    }
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
/// `meridian route` records them. `table` is the table the decision is made on.
pub trait Trace {
    /// The candidate order before filtering.
    fn order(&mut self, _table: &RoutingTable, _order: &[RegionId]) {}
    /// The verdict on one candidate region.
    fn region(&mut self, _table: &RoutingTable, _region: RegionId, _verdict: RegionVerdict) {}
    /// The worker picked inside the chosen region and how many ring candidates were passed.
    fn worker(&mut self, _table: &RoutingTable, _worker: WorkerId, _skipped: usize) {}
    /// Whether the decision is a real request's (counted in metrics) rather than an
    /// explanation's.
    fn counts(&self) -> bool {
        true
    }
}

impl Trace for () {}

/// The router: the current topology generation (config and live worker state) and its
/// routing table.
#[derive(Debug)]
pub struct Router {
    /// The current table, and through it the current generation (`RoutingTable::topology`):
    /// one store publishes both.
    table: RcuCell<RoutingTable>,
    epoch: AtomicU64,
    changed: tokio::sync::watch::Sender<u64>,
    /// Serialises table rebuilds, scoring and reloads (all off the hot path), so a slower
    /// rebuild that read older health — or an older generation — never overwrites a newer
    /// table; holds the scorer's state between ticks.
    control: std::sync::Mutex<Scorer>,
    /// The scorer's latest region status and orders (republished every tick; the table
    /// holds the orders it was built with).
    status: RcuCell<Scored>,
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
        let topology = Arc::new(Topology::first(config));
        let scored = Arc::new(Scored::initial(&topology));
        let table = RoutingTable::build(&topology, 0, scored.clone());
        let (changed, _) = tokio::sync::watch::channel(0);
        Router {
            table: RcuCell::new(Arc::new(table)),
            epoch: AtomicU64::new(0),
            changed,
            control: std::sync::Mutex::new(Scorer::default()),
            status: RcuCell::new(scored.clone()),
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

    /// The current generation.
    pub fn topology(&self) -> Arc<Topology> {
        self.table.read(|t| t.topology.clone())
    }

    /// The current configuration.
    pub fn config(&self) -> Arc<Config> {
        self.table.read(|t| t.topology.config.clone())
    }

    /// Changes a region's price and/or carbon intensity, by name, resolved in the
    /// generation it changes (a reload may have renumbered regions); the scorer uses them
    /// from its next tick. Values must be finite and non-negative (the admin API checks).
    /// Returns the new price and carbon, or `None` for an unknown region.
    pub fn set_region_price(
        &self,
        name: &str,
        price_per_mtok: Option<f64>,
        carbon: Option<f64>,
    ) -> Option<(f64, f64)> {
        self.table.read(|t| {
            let t = &t.topology;
            let region = &t.regions[t.config.region_id(name)?];
            region.set_price(price_per_mtok, carbon);
            Some((region.price(), region.carbon()))
        })
    }

    /// The scorer's latest orders and region status (region ids of its `generation`).
    pub fn scored(&self) -> Arc<Scored> {
        self.status.load()
    }

    /// The scorer's latest orders and region status, of `table`'s generation (the table's
    /// own until the scorer's first tick on a new generation).
    pub fn scored_in(&self, table: &RoutingTable) -> Arc<Scored> {
        let latest = self.status.load();
        if latest.generation == table.topology.generation {
            latest
        } else {
            table.scored.clone()
        }
    }

    fn control(&self) -> std::sync::MutexGuard<'_, Scorer> {
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Observes every region once (`route::score`) and publishes the new orders, rebuilding
    /// the table if an order or a demotion changed.
    pub fn tick(&self) {
        self.tick_at(self.now_ms());
    }

    /// [`Router::tick`] at `now_ms` on the router's clock (tests step time by hand).
    pub fn tick_at(&self, now_ms: u64) {
        let mut scorer = self.control();
        let table = self.table.load();
        let topo = &table.topology;
        let prev = self.scored_in(&table);
        let next = Arc::new(scorer.tick(self, topo, &prev, now_ms));
        let changed = prev.demoted != next.demoted
            || prev.default_order != next.default_order
            || next
                .area_order
                .iter()
                .any(|(a, o)| prev.area_order.get(a) != Some(o));
        self.status.store(next.clone());
        if changed {
            self.rebuild_locked(topo, next);
        }
    }

    /// Publishes the next generation for `config`: workers and regions that did not change
    /// keep their live state; the table is rebuilt and scored at once (orders carried over
    /// by region name), then swapped in with one RCU store. Returns what changed about the
    /// workers, for the caller to connect to new ones and drain retired ones. In-flight
    /// requests keep the decisions they hold.
    pub fn reload(&self, config: Arc<Config>) -> (Arc<Topology>, Change) {
        let mut scorer = self.control();
        let old = self.topology();
        let (next, change) = old.next(config);
        let next = Arc::new(next);
        let prev = self.table.read(|t| self.scored_in(t).translated(&next));
        let scored = Arc::new(scorer.tick(self, &next, &prev, self.now_ms()));
        self.status.store(scored.clone());
        self.rebuild_locked(&next, scored);
        // Retired only once no table routes to them: a request routed just before still
        // holds its decision (and finishes), none after finds them.
        for (state, _) in &change.retired {
            state.retired.trigger();
            state.set_healthy(false);
        }
        (next, change)
    }

    /// Records how an attempt on worker `w` of `topo` went; a failure may eject the worker
    /// (consecutive failures or error rate, `[health]`), at most `max_ejected_percent` of
    /// its region at once.
    pub fn record_attempt(&self, topo: &Topology, w: WorkerId, failed: bool) {
        let h = &topo.workers[w].health;
        let consecutive = h.outcome(failed);
        let s = &topo.config.health;
        let by_count = consecutive >= s.eject_consecutive_failures;
        let by_rate = h.recent_attempts() >= s.eject_min_attempts
            && h.error_rate().is_some_and(|e| e >= s.eject_error_rate);
        if !failed || !(by_count || by_rate) || h.is_ejected() {
            return;
        }
        let _serial = self.ejecting.lock().unwrap_or_else(|e| e.into_inner());
        let members = topo.members(topo.config.workers[w].region);
        // Disconnected workers do not count: they are out of the table anyway.
        let ejected = members
            .iter()
            .filter(|i| topo.workers[**i].is_healthy() && topo.workers[**i].health.is_ejected())
            .count();
        let cap = (members.len() * s.max_ejected_percent as usize / 100).max(1);
        if ejected >= cap {
            return;
        }
        let backoff = eject_backoff(topo, w);
        if h.eject(self.now_ms() + backoff.as_millis() as u64) {
            h.eject_streak.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                worker = %topo.config.workers[w].name,
                consecutive,
                error_rate = h.error_rate().unwrap_or(0.0),
                ?backoff,
                "worker ejected (outlier): probing it before readmission"
            );
            self.rebuild();
        }
    }

    /// Ejected workers of the current generation due for a probe now.
    pub fn due_probes(&self) -> (Arc<Topology>, Vec<WorkerId>) {
        let now = self.now_ms();
        let topo = self.topology();
        let due = (0..topo.workers.len())
            .filter(|w| {
                let h = &topo.workers[*w].health;
                h.is_ejected() && h.probe_at_ms.load(Ordering::Relaxed) <= now
            })
            .collect();
        (topo, due)
    }

    /// A probe of ejected worker `w` of `topo` ended: readmitted on success, ejected again
    /// (longer) otherwise.
    pub fn probed(&self, topo: &Topology, w: WorkerId, ok: bool) {
        let h = &topo.workers[w].health;
        if ok {
            h.readmit();
            tracing::info!(worker = %topo.config.workers[w].name, "probe succeeded: worker readmitted");
            self.rebuild();
        } else {
            let backoff = eject_backoff(topo, w);
            h.eject_streak.fetch_add(1, Ordering::Relaxed);
            h.probe_at_ms.store(
                self.now_ms() + backoff.as_millis() as u64,
                Ordering::Relaxed,
            );
            tracing::info!(worker = %topo.config.workers[w].name, ?backoff, "probe failed: worker stays ejected");
        }
    }

    /// Live state of worker `w` of the current generation.
    pub fn worker(&self, w: WorkerId) -> Arc<WorkerState> {
        self.table.read(|t| t.topology.workers[w].clone())
    }

    /// The current table.
    pub fn table(&self) -> Arc<RoutingTable> {
        self.table.load()
    }

    /// Rebuilds the table from current worker health and publishes it.
    pub fn rebuild(&self) {
        let _serial = self.control();
        let table = self.table.load();
        self.rebuild_locked(&table.topology, table.scored.clone());
    }

    /// Rebuilds the table of `topo` (the current generation) with `scored` (of the same
    /// generation); the caller holds `control`.
    fn rebuild_locked(&self, topo: &Arc<Topology>, scored: Arc<Scored>) {
        let epoch = self.epoch.fetch_add(1, Ordering::Relaxed) + 1;
        let table = RoutingTable::build(topo, epoch, scored);
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

    /// Healthy workers in the current table (what routing sees, not just the flags).
    pub fn healthy_workers(&self) -> usize {
        self.table
            .read(|t| t.regions.iter().map(|r| r.healthy.len()).sum())
    }

    /// Marks worker `w` of the current generation healthy or not, rebuilding the table if
    /// that changed.
    pub fn set_healthy(&self, w: WorkerId, healthy: bool) {
        self.set_worker_healthy(&self.worker(w), healthy);
    }

    /// Marks a worker healthy or not, rebuilding the table if that changed.
    pub fn set_worker_healthy(&self, state: &WorkerState, healthy: bool) {
        if state.set_healthy(healthy) {
            self.rebuild();
        }
    }

    /// Regions `req` may use under its tenant's and its own residency policies (and, for a
    /// later attempt, its first decision's), and whether any policy applies. No allocation
    /// unless the generation changed since the first decision.
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
        if let Some(pin) = req.pinned {
            if pin.allowed != RegionSet::ALL {
                let then = table.topology.translate(&pin.topology, pin.allowed);
                allowed = allowed.intersect(then);
                restricted = true;
            }
        }
        Ok((allowed, restricted))
    }

    /// The effective policy's name for error messages (`tenant-policy+request-policy`).
    fn policy_name(&self, table: &RoutingTable, req: &RouteRequest<'_>) -> String {
        let cfg = &table.topology.config;
        let tenant = req
            .tenant
            .and_then(|t| cfg.tenants.get(t))
            .and_then(|p| p.as_deref());
        let mut names: Vec<&str> = tenant.into_iter().collect();
        if let Some(p) = req.residency.filter(|p| Some(*p) != tenant) {
            names.push(p);
        }
        if req
            .pinned
            .is_some_and(|p| p.topology.generation != table.topology.generation)
        {
            names.push("the policy the request was admitted under");
        }
        names.join("+")
    }

    /// Routes a request. Lock-free and allocation-free on success (one RCU load of the
    /// table, which the decision keeps; a few hash-map probes, bit masks, one binary search
    /// on the region's ring, two atomic increments).
    pub fn route(&self, req: &RouteRequest<'_>) -> Result<Decision, RouteError> {
        self.route_traced(req, &mut ())
    }

    /// Routes a request, reporting each step to `trace`.
    pub fn route_traced(
        &self,
        req: &RouteRequest<'_>,
        trace: &mut impl Trace,
    ) -> Result<Decision, RouteError> {
        let table = self.table.load();
        let (region, worker, allowed) = self.route_in(&table, req, trace)?;
        let topo = &table.topology;
        topo.workers[worker].in_flight.enter();
        topo.regions[region].in_flight.enter();
        Ok(Decision {
            region,
            worker,
            allowed,
            table,
        })
    }

    fn route_in(
        &self,
        table: &RoutingTable,
        req: &RouteRequest<'_>,
        trace: &mut impl Trace,
    ) -> Result<(RegionId, WorkerId, RegionSet), RouteError> {
        let (allowed, restricted) = self.allowed(table, req)?;
        let topo = &table.topology;
        let model = *table
            .models
            .get(req.model)
            .ok_or_else(|| RouteError::ModelNotFound(req.model.to_owned()))?;
        let model_bit = 1u64 << model.index;
        let order = table.order(req.area);
        trace.order(table, order);
        let mut any_over_bound = false;
        // Why the first region this request could use was passed over, if it was.
        let mut passed: Option<Spill> = None;
        let mut first = true;
        // A worker's uid is read (another cache line) only when the request excludes some.
        let eligible = |w: WorkerId| {
            table.worker_models[w] & model_bit != 0
                && (req.exclude.is_empty() || !req.exclude.contains(&topo.workers[w].uid))
        };
        for &r in order {
            if !allowed.contains(r) {
                trace.region(table, r, RegionVerdict::NotAllowed);
                continue;
            }
            if !model.regions.contains(r) {
                trace.region(table, r, RegionVerdict::NoModel);
                continue;
            }
            let region = &table.regions[r];
            let live = region.healthy_models & model_bit != 0
                && (req.exclude.is_empty() || region.healthy.iter().any(|w| eligible(*w)));
            let Some(ring) = region.ring.as_ref().filter(|_| live) else {
                trace.region(table, r, RegionVerdict::Unhealthy);
                if std::mem::take(&mut first) {
                    passed = Some(Spill::Unhealthy);
                }
                continue;
            };
            let state = &topo.regions[r];
            let load = state.in_flight.current() + state.extra.load(Ordering::Relaxed);
            let capacity = region.capacity;
            if load >= capacity {
                any_over_bound = true;
                trace.region(table, r, RegionVerdict::OverBound { load, capacity });
                if std::mem::take(&mut first) {
                    passed = Some(Spill::OverBound);
                }
                continue;
            }
            let placement = ring
                .place(
                    req.shard_key,
                    topo.config.routing.load_factor,
                    state.in_flight.current(),
                    |w| topo.workers[w].local_in_flight(),
                    eligible,
                )
                .expect("the region has an eligible healthy worker");
            trace.region(table, r, RegionVerdict::Chosen { load, capacity });
            trace.worker(table, placement.worker, placement.skipped);
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
                && usable.intersect(preferred).intersect(table.scored.demoted)
                    != RegionSet::default()
            {
                passed = Some(Spill::Degraded);
            }
            if let Some(p) = passed.filter(|_| trace.counts()) {
                self.spills[p as usize].fetch_add(1, Ordering::Relaxed);
            }
            return Ok((r, placement.worker, allowed));
        }
        Err(if any_over_bound {
            RouteError::Overloaded
        } else if restricted {
            RouteError::ResidencyUnavailable {
                policy: self.policy_name(table, req),
                allowed: region_names(&topo.config, allowed),
            }
        } else {
            RouteError::Unavailable(req.model.to_owned())
        })
    }

    /// Records a worker's LOAD report and refreshes its region's share of load from other
    /// edges (off the hot path: once per report interval per worker).
    pub fn record_load(&self, state: &WorkerState, in_flight: u64, queue_depth: u64) {
        state.set_reported(in_flight, queue_depth);
        let topo = self.topology();
        let Some(w) = topo.position(state.uid) else {
            return; // retired
        };
        let r = topo.config.workers[w].region;
        let extra = (topo.members(r).iter())
            .map(|i| topo.workers[*i].reported_extra())
            .sum();
        topo.regions[r].extra.store(extra, Ordering::Relaxed);
    }
}

/// How long worker `w`'s next ejection lasts: doubling per ejection in a row.
fn eject_backoff(topo: &Topology, w: WorkerId) -> Duration {
    let s = &topo.config.health;
    let streak = topo.workers[w].health.eject_streak.load(Ordering::Relaxed);
    (s.eject_backoff_min * (1u32 << streak.min(16))).min(s.eject_backoff_max)
}

fn region_names(config: &Config, set: RegionSet) -> String {
    let names: Vec<_> = (config.regions.iter().enumerate())
        .filter(|(i, _)| set.contains(*i))
        .map(|(_, r)| r.name.as_str())
        .collect();
    names.join(", ")
}

#[cfg(test)]
mod reload_tests;
#[cfg(test)]
mod tests;
