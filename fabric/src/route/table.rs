//! The routing table: a compiled, immutable view of the topology plus which workers were
//! healthy when it was built. Rebuilt off the hot path and published through an
//! [`RcuCell`](crate::sync::RcuCell). Everything the request path needs is precomputed
//! here: name lookups resolve to indices and bit masks, region capacities are summed, and
//! each region's ring carries its candidate table.

use std::sync::Arc;

use super::fastmap::FastMap;
use super::ring::WorkerRing;
use super::score::Scored;
use super::topology::Topology;
use crate::config::{RegionId, RegionSet, WorkerId};

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
    /// The generation it was built from: the config and live state its ids refer to.
    pub topology: Arc<Topology>,
    /// The scorer's orders and demotions it was built with.
    pub scored: Arc<Scored>,
    /// Rebuild counter, for `/routes` and logs.
    pub epoch: u64,
    /// Per region, indexed by [`RegionId`].
    pub regions: Vec<RegionTable>,
    /// Area → its preferred regions.
    pub preferred: FastMap<String, RegionSet>,
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
    /// Compiles `topology` with its workers' live state (health, capacity) and `scored`'s
    /// orders (of the same generation).
    pub fn build(topology: &Arc<Topology>, epoch: u64, scored: Arc<Scored>) -> Self {
        debug_assert_eq!(scored.generation, topology.generation);
        let config = &*topology.config;
        let workers = &topology.workers;
        let hash = topology.hash;
        let preferred = super::score::preferences(config)
            .into_iter()
            .map(|(a, pref)| {
                let mut set = RegionSet::default();
                pref.iter().for_each(|r| set.insert(*r));
                (a, set)
            })
            .collect();
        // A discovery source's models are known even while it has no worker: a request for
        // one is UNAVAILABLE (retry), never MODEL_NOT_FOUND (fix the name). Validation and
        // composition keep them within MAX_MODELS.
        let mut models: FastMap<String, ModelEntry> = (config.models().into_iter().enumerate())
            .map(|(i, m)| {
                let entry = ModelEntry {
                    index: i as u32,
                    regions: RegionSet::default(),
                };
                (m.to_owned(), entry)
            })
            .collect();
        debug_assert!(models.len() <= MAX_MODELS);
        let mut worker_models = Vec::with_capacity(config.workers.len());
        for w in &config.workers {
            let mut mask = 0u64;
            for m in &w.models {
                let e = models.get_mut(m).expect("every worker model is listed");
                e.regions.insert(w.region);
                mask |= 1 << e.index;
            }
            worker_models.push(mask);
        }
        for source in &config.discovery {
            if let Some(r) = source.region.as_deref().and_then(|r| config.region_id(r)) {
                for m in &source.models {
                    models
                        .get_mut(m)
                        .expect("every source model is listed")
                        .regions
                        .insert(r);
                }
            }
        }
        // Ejected workers are left out like unhealthy ones until a probe readmits them.
        let healthy = |w: WorkerId| workers[w].is_healthy() && !workers[w].health.is_ejected();
        let regions = (0..config.regions.len())
            .map(|r| {
                let live: Vec<WorkerId> = (topology.members(r).iter().copied())
                    .filter(|w| healthy(*w))
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
            topology: topology.clone(),
            scored,
            epoch,
            regions,
            preferred,
            models,
            worker_models,
            tenants,
            residency,
        }
    }

    /// The candidate order for `area` (`None` or unknown: config order).
    pub fn order(&self, area: Option<&str>) -> &[RegionId] {
        area.and_then(|a| self.scored.area_order.get(a))
            .unwrap_or(&self.scored.default_order)
    }
}
