//! `meridian demo`: the embedded topology on loopback (five regions, two synthetic workers
//! each, one edge) and the scenario that shows routing, stickiness, failover and
//! fail-closed residency. Returns structured outcomes; the binary prints them.

mod scenario;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use scenario::{run_scenario, StepOutcome};

use crate::config::{
    parse_config, Backend, Config, ConfigErrors, ServerTls, SyntheticBackend, UpstreamTrust,
    WorkerConfig,
};
use crate::edge::{self, EdgeHandle};
use crate::shutdown::Shutdown;
use crate::tls::{Identity, IdentityError};
use crate::worker::{self, WorkerHandle};

/// The embedded topology (`fabric/src/demo/topology.toml`).
pub const TOPOLOGY: &str = include_str!("topology.toml");

/// The model every demo worker serves.
pub const MODEL: &str = "llama-3-8b";

/// The demo's API keys, `(tenant, key)`. They are public — the embedded topology holds their
/// SHA-256 digests — so never use them outside the demo.
pub const DEMO_KEYS: [(&str, &str); 2] = [
    (
        "acme",
        "mk_demo-acme_ZGVtby1vbmx5LWFjbWUta2V5LW5ldmVyLWluLXByb2Q",
    ),
    (
        "bund",
        "mk_demo-bund_ZGVtby1vbmx5LWJ1bmQta2V5LW5ldmVyLWluLXByb2Q",
    ),
];

/// The demo API key of `tenant` (`acme` or `bund`).
pub fn demo_key(tenant: &str) -> Option<&'static str> {
    DEMO_KEYS
        .iter()
        .find(|(t, _)| *t == tenant)
        .map(|(_, k)| *k)
}

/// A running demo topology.
#[derive(Debug)]
pub struct Demo {
    /// The edge.
    pub edge: EdgeHandle,
    /// Workers by config index; `None` once stopped.
    pub workers: Vec<Option<WorkerHandle>>,
    /// The topology with real worker addresses.
    pub config: Arc<Config>,
    /// The certificate clients pin.
    pub cert_path: PathBuf,
}

/// Why the demo could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    /// The embedded topology is invalid (a bug).
    #[error("embedded topology: {0}")]
    Config(#[from] ConfigErrors),
    /// Certificates could not be set up.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// A worker failed to start.
    #[error(transparent)]
    Worker(#[from] worker::WorkerError),
    /// The edge failed to start.
    #[error(transparent)]
    Edge(#[from] edge::EdgeError),
    /// Workers did not become reachable.
    #[error("only {ready} of {total} workers became reachable within {timeout:?}")]
    NotReady {
        /// Healthy workers.
        ready: usize,
        /// All workers.
        total: usize,
        /// How long we waited.
        timeout: Duration,
    },
}

impl Demo {
    /// Starts the topology: writes a fresh self-signed certificate to `cert_dir`, binds the
    /// workers and the edge (`edge_listen`, port 0 for any) on loopback, and waits until the
    /// edge is connected to every worker.
    pub async fn start(
        cert_dir: &Path,
        edge_listen: std::net::SocketAddr,
        backend: SyntheticBackend,
    ) -> Result<Demo, DemoError> {
        Demo::start_with_h3(cert_dir, edge_listen, backend, None).await
    }

    /// [`Demo::start`], with the edge also serving HTTP/3 through `h3`.
    pub async fn start_with_h3(
        cert_dir: &Path,
        edge_listen: std::net::SocketAddr,
        backend: SyntheticBackend,
        h3: Option<edge::H3Handler>,
    ) -> Result<Demo, DemoError> {
        let mut config = parse_config(TOPOLOGY, Path::new("<embedded demo topology>"))?;
        let mut identity = Identity::self_signed()?;
        identity.write(cert_dir)?;
        let cert_path = identity.cert_path.clone().expect("written above");
        let mut workers = Vec::new();
        // `OTEL_EXPORTER_OTLP_ENDPOINT` turns tracing on for the edge (parse_config reads
        // it) and for the demo's workers.
        let worker_telemetry = config.telemetry.clone().map(|mut t| {
            if t.service_name == "meridian-edge" {
                t.service_name = "meridian-worker".into();
            }
            t
        });
        for entry in config.workers.iter_mut() {
            let wc = WorkerConfig {
                name: entry.name.clone(),
                region: config.regions[entry.region].name.clone(),
                listen: "127.0.0.1:0".parse().expect("valid"),
                models: entry.models.clone(),
                max_concurrent: 64,
                max_prompt_bytes: meridian_protocol::limits::DEFAULT_MAX_PROMPT_BYTES,
                load_report: Duration::from_millis(100),
                health: None,
                ack_eliciting_threshold: None,
                link: Default::default(),
                tls: ServerTls::Dev {
                    dir: cert_dir.into(),
                },
                client_ca: None,
                backend: Backend::Synthetic(backend.clone()),
                telemetry: worker_telemetry.clone(),
            };
            let handle = worker::spawn(wc, &identity, Shutdown::new())?;
            entry.address = handle.addr;
            entry.trust = UpstreamTrust::Pin(cert_path.clone());
            workers.push(Some(handle));
        }
        config.edge.listen = edge_listen;
        let config = Arc::new(config);
        let edge = edge::spawn_with_h3(config.clone(), &identity, Shutdown::new(), h3)?;
        let total = config.workers.len();
        let timeout = Duration::from_secs(10);
        let ready = tokio::time::timeout(
            timeout,
            edge.router.wait_until(|r| r.healthy_workers() == total),
        )
        .await;
        if ready.is_err() {
            return Err(DemoError::NotReady {
                ready: edge.router.healthy_workers(),
                total,
                timeout,
            });
        }
        Ok(Demo {
            edge,
            workers,
            config,
            cert_path,
        })
    }

    /// Stops every worker of `region` gracefully and waits until the edge routes around them.
    pub async fn stop_region(&mut self, region: &str) {
        let id = self.config.region_id(region).expect("demo regions exist");
        for (i, w) in self.config.workers.iter().enumerate() {
            if w.region == id {
                if let Some(h) = self.workers[i].take() {
                    h.stop().await;
                }
            }
        }
        self.edge.router.wait_until(|r| r.region_down(id)).await;
    }

    /// Stops everything.
    pub async fn shutdown(self) {
        self.edge.stop().await;
        for w in self.workers.into_iter().flatten() {
            w.stop().await;
        }
    }
}
