//! The routing table: a compiled, immutable view of the topology plus which workers were
//! healthy when it was built. Rebuilt off the hot path and published through an
//! [`RcuCell`](crate::sync::RcuCell).

use std::collections::HashMap;

use super::hash::KeyedHash;
use super::ring::WorkerRing;
use crate::config::{Config, RegionId, RegionSet, WorkerId};

/// One region's compiled state.
#[derive(Debug)]
pub struct RegionTable {
    /// Ring over the region's healthy workers; `None` if none is healthy.
    pub ring: Option<WorkerRing>,
    /// Models any configured worker of the region serves (static).
    pub models: Vec<String>,
    /// Healthy workers of the region.
    pub healthy: Vec<WorkerId>,
}

/// An immutable routing table.
#[derive(Debug)]
pub struct RoutingTable {
    /// Rebuild counter, for `/routes` and logs.
    pub epoch: u64,
    /// Per region, indexed by [`RegionId`].
    pub regions: Vec<RegionTable>,
    /// Area → full candidate order (preferred regions, then every other in config order).
    pub area_order: HashMap<String, Vec<RegionId>>,
    /// Order for areas with no preference list: config order.
    pub default_order: Vec<RegionId>,
    /// Model → regions with a worker (healthy or not) serving it.
    pub model_regions: HashMap<String, RegionSet>,
}

impl RoutingTable {
    /// Compiles `config` with `healthy(w)` telling which workers are up.
    pub fn build(
        config: &Config,
        hash: KeyedHash,
        epoch: u64,
        healthy: impl Fn(WorkerId) -> bool,
    ) -> Self {
        let default_order: Vec<RegionId> = (0..config.regions.len()).collect();
        let full_order = |preferred: &[RegionId]| {
            let mut order = preferred.to_vec();
            order.extend(default_order.iter().filter(|r| !preferred.contains(r)));
            order
        };
        let mut area_order: HashMap<String, Vec<RegionId>> = config
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
        let mut model_regions: HashMap<String, RegionSet> = HashMap::new();
        let regions = (0..config.regions.len())
            .map(|r| {
                let members: Vec<_> = config
                    .workers
                    .iter()
                    .enumerate()
                    .filter(|(_, w)| w.region == r)
                    .collect();
                let mut models = Vec::new();
                for (_, w) in &members {
                    for m in &w.models {
                        model_regions.entry(m.clone()).or_default().insert(r);
                        if !models.contains(m) {
                            models.push(m.clone());
                        }
                    }
                }
                let healthy: Vec<WorkerId> = members
                    .iter()
                    .map(|(id, _)| *id)
                    .filter(|id| healthy(*id))
                    .collect();
                let ring = WorkerRing::new(
                    hash,
                    healthy.iter().map(|id| {
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
                    models,
                    healthy,
                }
            })
            .collect();
        RoutingTable {
            epoch,
            regions,
            area_order,
            default_order,
            model_regions,
        }
    }

    /// The candidate order for `area` (`None` or unknown: config order).
    pub fn order(&self, area: Option<&str>) -> &[RegionId] {
        area.and_then(|a| self.area_order.get(a))
            .unwrap_or(&self.default_order)
    }
}
