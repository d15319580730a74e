//! The routing table: a compiled, immutable view of the topology plus which workers were
//! healthy when it was built. Rebuilt off the hot path and published through an
//! [`RcuCell`](crate::sync::RcuCell). Everything the request path needs is precomputed
//! here: name lookups resolve to indices and bit masks, region capacities are summed, and
//! each region's ring carries its candidate table.

use super::fastmap::FastMap;
use super::hash::KeyedHash;
use super::ring::WorkerRing;
use super::state::WorkerState;
use crate::config::{Config, RegionId, RegionSet, WorkerId};

/// Most models a topology may serve (model sets are 64-bit masks).
pub const MAX_MODELS: usize = 64;

/// One region's compiled state.
#[derive(Debug)]
pub struct RegionTable {
    /// Ring over the region's healthy workers; `None` if none is healthy.
    pub ring: Option<WorkerRing>,
    /// Healthy workers of the region.
    pub healthy: Vec<WorkerId>,
    /// Models (bit per model index) served by at least one healthy worker.
    pub healthy_models: u64,
    /// Sum of the healthy workers' advertised capacities.
    pub capacity: u64,
}

/// A model's index and where it is served.
#[derive(Clone, Copy, Debug)]
pub struct ModelEntry {
    /// Bit index in model masks.
    pub index: u32,
    /// Regions with a configured worker (healthy or not) serving it.
    pub regions: RegionSet,
}

/// An immutable routing table.
#[derive(Debug)]
pub struct RoutingTable {
    /// Rebuild counter, for `/routes` and logs.
    pub epoch: u64,
    /// Per region, indexed by [`RegionId`].
    pub regions: Vec<RegionTable>,
    /// Area → full candidate order (preferred regions, then every other in config order).
    pub area_order: FastMap<String, Vec<RegionId>>,
    /// Order for areas with no preference list: config order.
    pub default_order: Vec<RegionId>,
    /// Model → index and regions.
    pub models: FastMap<String, ModelEntry>,
    /// Per worker, the models it serves (bit per model index).
    pub worker_models: Vec<u64>,
    /// Tenant → allowed regions of its residency policy (`ALL` if it has none).
    pub tenants: FastMap<String, RegionSet>,
    /// Residency policy → allowed regions.
    pub residency: FastMap<String, RegionSet>,
}

impl RoutingTable {
    /// Compiles `config` with the live `workers` state (health, capacity).
    pub fn build(
        config: &Config,
        hash: KeyedHash,
        epoch: u64,
        workers: &[std::sync::Arc<WorkerState>],
    ) -> Self {
        let default_order: Vec<RegionId> = (0..config.regions.len()).collect();
        let full_order = |preferred: &[RegionId]| {
            let mut order = preferred.to_vec();
            order.extend(default_order.iter().filter(|r| !preferred.contains(r)));
            order
        };
        let mut area_order: FastMap<String, Vec<RegionId>> = config
            .areas
            .iter()
            .map(|(a, pref)| (a.clone(), full_order(pref)))
            .collect();
        // Countries without their own list inherit their first group's list.
        for (country, groups) in &config.area_groups {
            if area_order.contains_key(country) {
                continue;
            }
            if let Some(pref) = groups.iter().find_map(|g| config.areas.get(g)) {
                area_order.insert(country.clone(), full_order(pref));
            }
        }
        let mut models: FastMap<String, ModelEntry> = FastMap::default();
        let mut worker_models = Vec::with_capacity(config.workers.len());
        for w in &config.workers {
            let mut mask = 0u64;
            for m in &w.models {
                let next = models.len() as u32;
                let e = models.entry(m.clone()).or_insert(ModelEntry {
                    index: next,
                    regions: RegionSet::default(),
                });
                e.regions.insert(w.region);
                mask |= 1 << e.index;
            }
            worker_models.push(mask);
        }
        let healthy = |w: WorkerId| workers[w].is_healthy();
        let regions = (0..config.regions.len())
            .map(|r| {
                let live: Vec<WorkerId> = (0..config.workers.len())
                    .filter(|w| config.workers[*w].region == r && healthy(*w))
                    .collect();
                let ring = WorkerRing::new(
                    hash,
                    live.iter().map(|id| {
                        (
                            *id,
                            config.workers[*id].name.as_str(),
                            config.workers[*id].weight,
                        )
                    }),
                    config.routing.vnodes_per_weight,
                );
                RegionTable {
                    ring,
                    healthy_models: live.iter().fold(0, |m, w| m | worker_models[*w]),
                    capacity: live.iter().map(|w| workers[*w].capacity()).sum(),
                    healthy: live,
                }
            })
            .collect();
        let residency: FastMap<String, RegionSet> = config
            .residency
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        let tenants = config
            .tenants
            .iter()
            .map(|(t, p)| {
                (
                    t.clone(),
                    p.as_ref().map_or(RegionSet::ALL, |p| residency[p]),
                )
            })
            .collect();
        RoutingTable {
            epoch,
            regions,
            area_order,
            default_order,
            models,
            worker_models,
            tenants,
            residency,
        }
    }

    /// The candidate order for `area` (`None` or unknown: config order).
    pub fn order(&self, area: Option<&str>) -> &[RegionId] {
        area.and_then(|a| self.area_order.get(a))
            .unwrap_or(&self.default_order)
    }
}
