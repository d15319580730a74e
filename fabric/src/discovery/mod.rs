//! Worker discovery (`[[discovery]]`): sources that keep a set of workers up to date beside
//! the static `[[worker]]` list — DNS (a headless Service's A/AAAA records, or SRV records),
//! re-resolved every `interval_ms`, and Kubernetes EndpointSlices, watched. Each time a
//! source's set changes, the edge recomposes its topology (`edge::reload`): new workers are
//! connected to, workers gone are drained (their streams finish), the rest keep their
//! connections and health. A source that cannot be reached keeps its last set.
//!
//! Discovered workers are named `<source>/<pod name or address>`, the same on every edge, so
//! a shard key maps to the same worker whichever edge it enters.

#[cfg(feature = "discovery")]
mod dns;
#[cfg(feature = "discovery")]
mod kubernetes;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

#[cfg(feature = "discovery")]
use crate::config::DiscoveryKind;
use crate::config::{Config, DiscoverySource, UpstreamTrust, WorkerEntry};
use crate::edge::EdgeShared;
use crate::shutdown::Shutdown;
use crate::telemetry::metrics::{Data, Metric};

#[cfg(feature = "discovery")]
pub use kubernetes::{endpoint_slice_workers, MODEL_LABEL, REGION_LABEL};

/// One worker a source found; its region is resolved when the topology is composed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discovered {
    /// `<source>/<pod name or address>`.
    pub name: String,
    /// Region name.
    pub region: String,
    /// QUIC address.
    pub address: SocketAddr,
    /// Models it serves.
    pub models: Vec<String>,
    /// Ring weight.
    pub weight: u32,
    /// TLS server name.
    pub server_name: String,
    /// Certificate trust.
    pub trust: UpstreamTrust,
}

impl Discovered {
    /// A worker at `address` found by `source`, named after `id` (a pod name or the address).
    pub fn new(
        source: &DiscoverySource,
        id: &str,
        region: &str,
        models: &[String],
        address: SocketAddr,
    ) -> Self {
        Discovered {
            name: format!("{}/{id}", source.name),
            region: region.to_owned(),
            address,
            models: models.to_vec(),
            weight: source.weight,
            server_name: source.server_name.clone(),
            trust: source.trust.clone(),
        }
    }

    /// Takes `new`'s settings (weight, TLS, and its models where the worker had `old`'s
    /// rather than a label's): the source changed but still follows the same pool.
    pub fn restamp(&mut self, old: &DiscoverySource, new: &DiscoverySource) {
        self.weight = new.weight;
        self.server_name = new.server_name.clone();
        self.trust = new.trust.clone();
        if self.models == old.models {
            self.models = new.models.clone();
        }
    }

    /// The worker entry in `config`, or `None` if its region is not configured there.
    pub fn entry(&self, config: &Config) -> Option<WorkerEntry> {
        Some(WorkerEntry {
            name: self.name.clone(),
            region: config.region_id(&self.region)?,
            address: self.address,
            server_name: self.server_name.clone(),
            models: self.models.clone(),
            weight: self.weight,
            trust: self.trust.clone(),
        })
    }
}

/// What one running source did, for `/metrics` and OTLP: a source that keeps failing keeps
/// its last set, so only these show it (`meridian_discovery_*`).
#[derive(Debug, Default)]
pub struct SourceStats {
    /// Workers in the last set the edge applied.
    workers: AtomicU64,
    /// Failed resolutions, watch errors and failed setups.
    errors: AtomicU64,
    /// When the source last answered (a resolution, a watch event), Unix seconds; 0: never.
    last_answer_s: AtomicU64,
}

impl SourceStats {
    /// The source answered (whether or not its set changed).
    pub fn answered(&self) {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        (self.last_answer_s).store(now.map_or(0, |d| d.as_secs()), Relaxed);
    }

    /// The source failed to answer.
    pub fn failed(&self) {
        self.errors.fetch_add(1, Relaxed);
    }

    /// The edge applied a set of `n` workers.
    pub fn applied(&self, n: usize) {
        self.workers.store(n as u64, Relaxed);
    }
}

/// Every running source's [`SourceStats`], by source name.
pub type DiscoveryStats = Mutex<BTreeMap<String, Arc<SourceStats>>>;

/// The `meridian.discovery.*` metrics of the running sources.
pub fn metrics(stats: &DiscoveryStats) -> Vec<Metric> {
    let sources = stats.lock().unwrap_or_else(|e| e.into_inner());
    let points = |f: &dyn Fn(&SourceStats) -> u64| {
        (sources.iter())
            .map(|(name, s)| (vec![("meridian.discovery.source", name.clone())], f(s)))
            .collect::<Vec<_>>()
    };
    let gauge = |v: Vec<(_, u64)>| v.into_iter().map(|(a, n)| (a, n as i64)).collect();
    vec![
        Metric {
            name: "meridian.discovery.workers",
            description: "Workers in the discovery source's last applied set.",
            unit: "{worker}",
            data: Data::Gauge(gauge(points(&|s| s.workers.load(Relaxed)))),
        },
        Metric {
            name: "meridian.discovery.errors",
            description: "Failed resolutions, watch errors and setups of the discovery source (it keeps its last set meanwhile).",
            unit: "{error}",
            data: Data::Counter(points(&|s| s.errors.load(Relaxed))),
        },
        Metric {
            name: "meridian.discovery.last_answer_timestamp",
            description: "When the discovery source last answered, Unix time (0: never).",
            unit: "s",
            data: Data::Gauge(gauge(points(&|s| s.last_answer_s.load(Relaxed)))),
        },
    ]
}

/// The running sources of an edge, restarted as the config's `[[discovery]]` list changes.
#[derive(Debug, Default)]
pub(crate) struct Sources {
    running: Vec<(DiscoverySource, Shutdown)>,
}

impl Sources {
    /// Stops the sources not in `wanted` (or changed) and starts the new ones; returns the
    /// names of the sources stopped (their workers leave the topology).
    pub(crate) fn sync(
        &mut self,
        wanted: &[DiscoverySource],
        edge: &Arc<EdgeShared>,
    ) -> Vec<String> {
        let mut stopped = Vec::new();
        let mut stats = (edge.stats.discovery.lock()).unwrap_or_else(|e| e.into_inner());
        self.running.retain(|(s, stop)| {
            let keep = wanted.contains(s);
            if !keep {
                stop.trigger();
                stopped.push(s.name.clone());
                stats.remove(&s.name);
            }
            keep
        });
        for s in wanted {
            if self.running.iter().any(|(r, _)| r == s) {
                continue;
            }
            let stop = Shutdown::new();
            let counts = Arc::new(SourceStats::default());
            stats.insert(s.name.clone(), counts.clone());
            tokio::spawn(run(s.clone(), edge.clone(), counts, stop.clone()));
            self.running.push((s.clone(), stop));
        }
        stopped
    }
}

/// Retries `setup` with doubling backoff (1 s to 30 s) until it succeeds, logging the first
/// failure and each new one: a source that cannot start yet (no API server, no resolver
/// config) starts once it can, keeping the workers it had meanwhile.
#[cfg(feature = "discovery")]
async fn retrying<T, E, F, Fut>(source: &str, stats: &SourceStats, what: &str, setup: F) -> T
where
    E: std::fmt::Display,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut backoff = std::time::Duration::from_secs(1);
    let mut last = String::new();
    loop {
        match setup().await {
            Ok(v) => return v,
            Err(e) => {
                stats.failed();
                let e = e.to_string();
                if e != last {
                    tracing::warn!(source, "discovery cannot {what} (retrying): {e}");
                    last = e;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(std::time::Duration::from_secs(30));
    }
}

/// Runs one source until it is stopped or the edge shuts down.
async fn run(
    source: DiscoverySource,
    edge: Arc<EdgeShared>,
    stats: Arc<SourceStats>,
    stop: Shutdown,
) {
    let found = |workers: Vec<Discovered>| {
        let (edge, source, stats) = (edge.clone(), source.clone(), stats.clone());
        async move {
            // Logged and counted by the edge; a failure leaves the topology as it was, and the
            // source sends the same set again on its next round.
            let n = workers.len();
            let applied = crate::edge::reload::discovered(&edge, &source, workers)
                .await
                .is_ok();
            if applied {
                stats.applied(n);
            }
            applied
        }
    };
    #[cfg(feature = "discovery")]
    let work = async {
        match &source.kind {
            DiscoveryKind::Dns { .. } => dns::run(&source, &stats, found).await,
            DiscoveryKind::Kubernetes { .. } => kubernetes::run(&source, &stats, found).await,
        }
    };
    #[cfg(not(feature = "discovery"))]
    let work = async {
        let _ = (found, &stats);
        tracing::error!(source = %source.name, "built without the `discovery` feature: the source does not run");
        std::future::pending::<()>().await
    };
    tokio::select! {
        _ = work => {}
        _ = stop.wait() => {}
        _ = edge.shutdown.wait() => {}
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{DiscoveryKind, DnsTarget};

    fn source(weight: u32, models: &[&str], pin: &str) -> DiscoverySource {
        DiscoverySource {
            name: "pool".into(),
            kind: DiscoveryKind::Dns {
                target: DnsTarget::Srv("_m._udp.pool".into()),
                resolver: None,
            },
            region: Some("r".into()),
            models: models.iter().map(|m| m.to_string()).collect(),
            weight,
            server_name: "localhost".into(),
            trust: UpstreamTrust::Pin(pin.into()),
            interval: Duration::from_secs(5),
        }
    }

    #[test]
    fn a_changed_source_restamps_what_it_found() {
        let (old, new) = (source(1, &["m"], "a.pem"), source(3, &["m", "n"], "b.pem"));
        let addr = "127.0.0.1:1".parse().unwrap();
        let mut from_source = Discovered::new(&old, "x", "r", &old.models, addr);
        from_source.restamp(&old, &new);
        assert_eq!((from_source.weight, from_source.models.len()), (3, 2));
        assert_eq!(from_source.trust, UpstreamTrust::Pin("b.pem".into()));
        // Models a label gave stay the label's.
        let mut labelled = Discovered::new(&old, "y", "r", &["qwen".to_owned()], addr);
        labelled.restamp(&old, &new);
        assert_eq!(labelled.models, ["qwen"]);
    }
}
