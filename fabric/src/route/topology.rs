//! Topology generations. A [`Topology`] is one validated config together with the live state
//! of its workers and regions; a reload (or a discovery update) makes the next generation
//! from the previous one, keeping the live state of every worker and region that did not
//! change — its health, load, connections and counters — so a reload moves nothing that
//! stayed the same. Workers that left are returned as retired: the edge drains them.
//!
//! A generation is immutable once built and is read through the routing table
//! (`RoutingTable::topology`), so one routing decision always sees one config.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::fastmap::FastMap;
use super::hash::KeyedHash;
use super::state::WorkerState;
use crate::config::{Config, RegionId, RegionSet, WorkerEntry, WorkerId};
use crate::edge::Latencies;
use crate::sync::InFlight;

/// One region's live state, kept across generations while the region keeps its name.
#[derive(Debug)]
pub struct RegionState {
    /// The region's name.
    pub name: String,
    /// Requests this edge has in flight in the region.
    pub in_flight: InFlight,
    /// Load other edges put on the region (from its workers' LOAD reports).
    pub extra: AtomicU64,
    /// Requests routed to the region.
    pub routes: AtomicU64,
    /// Current price per million tokens and carbon intensity, as `f64` bits.
    price: AtomicU64,
    carbon: AtomicU64,
    /// The config file's values when they were last applied, as `f64` bits: a reload applies
    /// the file's price only when the file changed it, keeping a run-time change otherwise.
    configured: (AtomicU64, AtomicU64),
}

impl RegionState {
    fn new(name: &str, price: f64, carbon: f64) -> Self {
        RegionState {
            name: name.to_owned(),
            in_flight: InFlight::new(),
            extra: AtomicU64::new(0),
            routes: AtomicU64::new(0),
            price: AtomicU64::new(price.to_bits()),
            carbon: AtomicU64::new(carbon.to_bits()),
            configured: (
                AtomicU64::new(price.to_bits()),
                AtomicU64::new(carbon.to_bits()),
            ),
        }
    }

    /// Current price per million tokens.
    pub fn price(&self) -> f64 {
        f64::from_bits(self.price.load(Relaxed))
    }

    /// Current carbon intensity, g/kWh.
    pub fn carbon(&self) -> f64 {
        f64::from_bits(self.carbon.load(Relaxed))
    }

    /// Changes the price and/or carbon intensity (admin API).
    pub fn set_price(&self, price_per_mtok: Option<f64>, carbon: Option<f64>) {
        if let Some(p) = price_per_mtok {
            self.price.store(p.to_bits(), Relaxed);
        }
        if let Some(c) = carbon {
            self.carbon.store(c.to_bits(), Relaxed);
        }
    }

    /// A reload's configured values: each applies if the file changed it.
    fn reconfigure(&self, price: f64, carbon: f64) {
        if self.configured.0.swap(price.to_bits(), Relaxed) != price.to_bits() {
            self.price.store(price.to_bits(), Relaxed);
        }
        if self.configured.1.swap(carbon.to_bits(), Relaxed) != carbon.to_bits() {
            self.carbon.store(carbon.to_bits(), Relaxed);
        }
    }
}

/// One generation: a config and the live state of its workers and regions.
#[derive(Debug)]
pub struct Topology {
    /// The validated config.
    pub config: Arc<Config>,
    /// 0 for the first, one more per reload.
    pub generation: u64,
    /// The ring hash (kept across reloads unless `ring_key` changes, so keys stay put).
    pub hash: KeyedHash,
    /// Per worker, indexed by [`WorkerId`] of this generation.
    pub workers: Vec<Arc<WorkerState>>,
    /// Per region, indexed by [`RegionId`] of this generation.
    pub regions: Vec<Arc<RegionState>>,
    /// Per region, its workers.
    members: Vec<Vec<WorkerId>>,
    /// Per region, latency histograms and spend by model.
    latencies: Vec<FastMap<String, Arc<Latencies>>>,
    /// Per model, the metrics of requests that failed before reaching a region.
    unrouted: FastMap<String, Arc<Latencies>>,
    /// Tenant identity and limits of this generation: a request is admitted and first routed
    /// by the same generation, so a reload never pairs one generation's key → tenant mapping
    /// with another's tenant → residency policy.
    pub auth: Arc<crate::auth::Auth>,
}

/// What a new generation changed about the workers.
#[derive(Debug, Default)]
pub struct Change {
    /// Workers new in this generation (to connect to).
    pub added: Vec<WorkerId>,
    /// Workers gone (or changed so much they are new ones): to drain, then close.
    pub retired: Vec<(Arc<WorkerState>, WorkerEntry)>,
    /// Workers kept as they were.
    pub kept: usize,
}

/// Whether `a` (of `ca`) and `b` (of `cb`) are the same worker: same name, region and
/// address, verified the same way (server name, trust, the edge's client certificate).
/// Anything else is a new worker: the old one drains and a new connection is made — so a
/// rotated pin or CA never keeps a connection to the old peer for new requests. A changed
/// `[upstream]` tuning (timeouts, congestion control, backoff) keeps the worker and its
/// connections: each connection is made with the values of its moment.
fn same_worker(ca: &Config, a: &WorkerEntry, cb: &Config, b: &WorkerEntry) -> bool {
    a.name == b.name
        && ca.regions[a.region].name == cb.regions[b.region].name
        && a.address == b.address
        && a.server_name == b.server_name
        && a.trust == b.trust
        && ca.upstream.client_identity == cb.upstream.client_identity
}

impl Topology {
    /// The first generation of `config`: every worker new and unhealthy.
    pub fn first(config: Arc<Config>) -> Topology {
        let hash = config
            .routing
            .ring_key
            .map_or_else(KeyedHash::random, KeyedHash::new);
        Self::build(config, 0, hash, None).0
    }

    /// The generation after `self` for `config`, keeping what did not change.
    pub fn next(&self, config: Arc<Config>) -> (Topology, Change) {
        let hash = match config.routing.ring_key {
            k if k == self.config.routing.ring_key => self.hash,
            Some(k) => KeyedHash::new(k),
            None => KeyedHash::random(),
        };
        Self::build(config, self.generation + 1, hash, Some(self))
    }

    fn build(
        config: Arc<Config>,
        generation: u64,
        hash: KeyedHash,
        prev: Option<&Topology>,
    ) -> (Topology, Change) {
        let links = config.upstream.connections_per_worker.max(1) as usize;
        let mut change = Change::default();
        let mut kept_uids = std::collections::HashSet::new();
        let prev_index: std::collections::HashMap<&str, WorkerId> = (prev.iter())
            .flat_map(|p| p.config.workers.iter().enumerate())
            .map(|(i, e)| (e.name.as_str(), i))
            .collect();
        let workers: Vec<Arc<WorkerState>> = (config.workers.iter().enumerate())
            .map(|(w, entry)| {
                let old = prev.and_then(|p| {
                    let i = *prev_index.get(entry.name.as_str())?;
                    same_worker(&p.config, &p.config.workers[i], &config, entry)
                        .then(|| p.workers[i].clone())
                });
                match old {
                    Some(state) => {
                        change.kept += 1;
                        kept_uids.insert(state.uid);
                        state
                    }
                    None => {
                        change.added.push(w);
                        Arc::new(WorkerState::with_links(links))
                    }
                }
            })
            .collect();
        if let Some(p) = prev {
            for (w, state) in p.workers.iter().enumerate() {
                if !kept_uids.contains(&state.uid) {
                    change
                        .retired
                        .push((state.clone(), p.config.workers[w].clone()));
                }
            }
        }
        let regions: Vec<Arc<RegionState>> = (config.regions.iter())
            .map(|r| {
                let old = prev.and_then(|p| p.regions.iter().find(|s| s.name == r.name));
                match old {
                    Some(state) => {
                        state.reconfigure(r.price_per_mtok, r.carbon_g_per_kwh);
                        state.clone()
                    }
                    None => Arc::new(RegionState::new(
                        &r.name,
                        r.price_per_mtok,
                        r.carbon_g_per_kwh,
                    )),
                }
            })
            .collect();
        let members: Vec<Vec<WorkerId>> = (0..config.regions.len())
            .map(|r| {
                (0..config.workers.len())
                    .filter(|w| config.workers[*w].region == r)
                    .collect()
            })
            .collect();
        let latencies = (config.regions.iter().enumerate())
            .map(|(r, region)| {
                let mut models: FastMap<String, Arc<Latencies>> = FastMap::default();
                for m in members[r].iter().flat_map(|w| &config.workers[*w].models) {
                    if models.contains_key(m) {
                        continue;
                    }
                    let old = prev
                        .and_then(|p| Some((p, p.config.region_id(&region.name)?)))
                        .and_then(|(p, old_r)| p.latencies[old_r].get(m).cloned());
                    models.insert(m.clone(), old.unwrap_or_default());
                }
                models
            })
            .collect();
        let unrouted = (config.models().into_iter())
            .map(|m| {
                let old = prev.and_then(|p| p.unrouted.get(m).cloned());
                (m.to_owned(), old.unwrap_or_default())
            })
            .collect();
        // Tenants whose limits did not change keep their limit state.
        let auth = Arc::new(crate::auth::Auth::carry(&config, prev.map(|p| &*p.auth)));
        let topology = Topology {
            auth,
            config,
            generation,
            hash,
            workers,
            regions,
            members,
            latencies,
            unrouted,
        };
        (topology, change)
    }

    /// The index in this generation of the worker whose [`WorkerState::uid`] is `uid`;
    /// `None` once it left the topology.
    pub fn position(&self, uid: u64) -> Option<WorkerId> {
        self.workers.iter().position(|s| s.uid == uid)
    }

    /// The workers of region `r`.
    pub fn members(&self, r: RegionId) -> &[WorkerId] {
        &self.members[r]
    }

    /// The latency histograms of `(region, model)`; `None` if no worker of the region serves
    /// the model.
    pub fn latencies(&self, r: RegionId, model: &str) -> Option<&Latencies> {
        self.latencies[r].get(model).map(|l| &**l)
    }

    /// The metrics of `model`'s requests that failed before reaching a region; `None` for a
    /// model the topology does not serve.
    pub fn unrouted(&self, model: &str) -> Option<&Latencies> {
        self.unrouted.get(model).map(|l| &**l)
    }

    /// Every model with the metrics of its requests that reached no region, by name.
    pub fn all_unrouted(&self) -> Vec<(&str, &Latencies)> {
        let mut v: Vec<_> = self
            .unrouted
            .iter()
            .map(|(m, l)| (m.as_str(), &**l))
            .collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v
    }

    /// Every `(region, model)` with its histograms, regions in config order.
    pub fn all_latencies(&self) -> impl Iterator<Item = (RegionId, &str, &Latencies)> {
        self.latencies.iter().enumerate().flat_map(|(r, m)| {
            let mut models: Vec<_> = m.iter().collect();
            models.sort_by(|a, b| a.0.cmp(b.0));
            models.into_iter().map(move |(k, v)| (r, k.as_str(), &**v))
        })
    }

    /// The regions `tenant`'s policy, narrowed by the request's `residency`, allows in this
    /// generation (`ALL` without either); the routing error for a name unknown here.
    pub fn allowed(
        &self,
        tenant: Option<&str>,
        residency: Option<&str>,
    ) -> Result<RegionSet, super::RouteError> {
        use super::RouteError::{UnknownResidency, UnknownTenant};
        let cfg = &self.config;
        let policy = |p: &str| (cfg.residency.get(p)).ok_or_else(|| UnknownResidency(p.into()));
        let mut set = RegionSet::ALL;
        if let Some(t) = tenant {
            let tenant_policy = cfg.tenants.get(t).ok_or_else(|| UnknownTenant(t.into()))?;
            if let Some(p) = tenant_policy.as_deref() {
                set = set.intersect(*policy(p)?);
            }
        }
        if let Some(p) = residency {
            set = set.intersect(*policy(p)?);
        }
        Ok(set)
    }

    /// The regions of this generation that `set` (regions of `other`, an older or the same
    /// generation) names: regions are matched by name across generations.
    pub fn translate(&self, other: &Topology, set: RegionSet) -> RegionSet {
        if other.generation == self.generation {
            return set;
        }
        let mut out = RegionSet::default();
        for (r, region) in self.config.regions.iter().enumerate() {
            if other
                .config
                .region_id(&region.name)
                .is_some_and(|old| set.contains(old))
            {
                out.insert(r);
            }
        }
        out
    }
}
