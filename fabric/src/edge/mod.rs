//! The edge: terminates client QUIC connections (ALPN `meridian/1`), routes each request
//! stream, forwards it on the chosen worker's long-lived upstream connection, and relays the
//! tokens back. Bounded everywhere: connection limit, per-connection stream limit (QUIC
//! flow control), prompt limit; drains on shutdown.

mod attempts;
mod forward;
pub mod genai_metrics;
mod health;
mod health_metrics;
mod intake;
mod observe;
mod relay;
pub(crate) mod reload;
mod resume;
mod sink;
mod stats;
mod submit;
pub mod track;
pub mod upstream;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use meridian_protocol::Settings;
use tracing::info;

pub use observe::error_type;
pub use reload::{certificate_bytes, ReloadError, ReloadFailure, ReloadReport};
pub use resume::{FrameGate, ResumeStats, Transcript};
pub use sink::Delivery;
pub use stats::{EdgeStats, Histogram, Latencies, ReloadResult};
pub use submit::{Submission, SubmitError, Submitter};
pub use track::{ResponseTracker, UpstreamViolation};
pub use upstream::Upstreams;

use crate::config::Config;
use crate::route::Router;
use crate::server::{self, ControlStream};
use crate::shutdown::Shutdown;
use crate::telemetry::{self, TraceStats, Tracer};
use crate::tls::{Identity, IdentityError};

pub use crate::server::DRAIN_TIMEOUT;

/// State shared by every connection and request of an edge.
#[derive(Debug)]
pub(crate) struct EdgeShared {
    pub router: Arc<Router>,
    pub upstreams: Arc<Upstreams>,
    pub stats: Arc<EdgeStats>,
    pub h3: Option<H3Handler>,
    pub tracer: Tracer,
    /// The POP's name (`[edge] pop`, bound at start like the tracer's instance name).
    pub pop: String,
    /// Fired when the edge starts draining (in-process submissions are refused after it).
    pub shutdown: Shutdown,
    /// In-process submissions in flight.
    pub submissions: submit::InFlight,
    /// The client-facing endpoint (a reload gives it a new server config).
    pub endpoint: quinn::Endpoint,
    /// The HTTPS front door's TLS config (`[edge] http_tls`), renewed with the certificate.
    pub http_tls: crate::sync::RcuCell<Option<Arc<rustls::ServerConfig>>>,
    /// The certificate and key files' bytes the running server config was built from (a
    /// reload rebuilds it only when they changed).
    pub tls_files: std::sync::Mutex<Vec<u8>>,
    /// The running config's parts (file, discovered workers); serialises reloads.
    pub composition: tokio::sync::Mutex<reload::Composition>,
    /// Time base of the tenants' rate limits.
    pub epoch: tokio::time::Instant,
    /// Fired once the edge has drained (the metrics exporter's last export follows).
    pub stopped: Shutdown,
    /// The OTLP metrics exporter, awaited on stop.
    pub metrics_task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// ALPN of HTTP/3, served beside `meridian/1` on the same UDP port when an [`H3Handler`] is
/// given.
pub const H3_ALPN: &[u8] = b"h3";

/// Serves one HTTP/3 connection (the front door lives in the binary); gets a [`Submitter`]
/// to hand requests to this edge.
#[derive(Clone)]
pub struct H3Handler(
    #[allow(clippy::type_complexity)]
    pub  Arc<
        dyn Fn(
                quinn::Connection,
                Submitter,
            ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
            + Send
            + Sync,
    >,
);

impl std::fmt::Debug for H3Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("H3Handler")
    }
}

/// A running edge.
#[derive(Debug)]
pub struct EdgeHandle {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// The router (routing table and worker health).
    pub router: Arc<Router>,
    /// Counters.
    pub stats: Arc<EdgeStats>,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<()>,
    shared: Arc<EdgeShared>,
}

impl EdgeHandle {
    /// A handle to submit requests in process (the HTTP front door).
    pub fn submitter(&self) -> Submitter {
        Submitter {
            shared: self.shared.clone(),
        }
    }

    /// Span export counters, when tracing is configured.
    pub fn trace_stats(&self) -> Option<Arc<TraceStats>> {
        self.shared.tracer.stats().cloned()
    }

    /// Drains gracefully: GOAWAY to clients, in-flight requests — QUIC streams, then requests
    /// submitted in process — finish (up to [`DRAIN_TIMEOUT`] each), upstream connections
    /// close, the last spans are exported.
    pub async fn stop(self) {
        self.shutdown.trigger();
        let _ = self.task.await;
        // The last metric export counts every request the drain finished.
        self.shared.stopped.trigger();
        let metrics = (self.shared.metrics_task.lock())
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(task) = metrics {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
        }
        self.shared.tracer.shutdown().await;
    }
}

/// Why an edge could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EdgeError {
    /// The certificate could not be set up.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// A UDP socket could not be bound.
    #[error("binding {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

/// Binds `config.edge.listen`, connects to every worker, and serves until `shutdown`.
pub fn spawn(
    config: Arc<Config>,
    identity: &Identity,
    shutdown: Shutdown,
) -> Result<EdgeHandle, EdgeError> {
    spawn_with_h3(config, identity, shutdown, None)
}

/// [`spawn`], also serving HTTP/3 (ALPN `h3`) on the same UDP port through `h3`.
pub fn spawn_with_h3(
    config: Arc<Config>,
    identity: &Identity,
    shutdown: Shutdown,
    h3: Option<H3Handler>,
) -> Result<EdgeHandle, EdgeError> {
    let listen = config.edge.listen;
    let server = reload::server_config(&config, identity, h3.is_some())?;
    let mut endpoint_config = quinn::EndpointConfig::default();
    if let Some(lb) = config.quic_lb.clone() {
        // Connection IDs an L4 balancer can route by (`[quic_lb]`).
        endpoint_config.cid_generator(move || Box::new(crate::quic_lb::QuicLbCids::new(&lb)));
    }
    let socket = std::net::UdpSocket::bind(listen).map_err(|e| EdgeError::Bind(listen, e))?;
    let runtime = quinn::default_runtime().ok_or_else(|| {
        EdgeError::Bind(listen, std::io::Error::other("no async runtime for quinn"))
    })?;
    let endpoint = quinn::Endpoint::new(endpoint_config, Some(server), socket, runtime)
        .map_err(|e| EdgeError::Bind(listen, e))?;
    let addr = endpoint
        .local_addr()
        .map_err(|e| EdgeError::Bind(listen, e))?;
    let bind: SocketAddr = if addr.is_ipv6() {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let upstream_ep = quinn::Endpoint::client(bind).map_err(|e| EdgeError::Bind(bind, e))?;
    let router = Arc::new(Router::new(config.clone()));
    let upstreams = Upstreams::spawn(router.clone(), upstream_ep.clone(), shutdown.clone());
    let stats = Arc::new(EdgeStats::new(&config));
    let instance = format!("{}@{addr}", config.edge.pop);
    let shared = Arc::new(EdgeShared {
        router: router.clone(),
        upstreams,
        stats: stats.clone(),
        h3,
        tracer: telemetry::start(config.telemetry.as_ref(), &instance),
        pop: config.edge.pop.clone(),
        shutdown: shutdown.clone(),
        submissions: submit::InFlight::default(),
        endpoint: endpoint.clone(),
        http_tls: crate::sync::RcuCell::new(Arc::new(reload::http_tls(&config, identity)?)),
        tls_files: std::sync::Mutex::new(reload::certificate_bytes(&config)),
        composition: tokio::sync::Mutex::new(reload::Composition::new(config.clone())),
        epoch: tokio::time::Instant::now(),
        stopped: Shutdown::new(),
        metrics_task: std::sync::Mutex::new(None),
    });
    if let Some(settings) = config.shared_limits.clone() {
        let (shared, stop) = (shared.clone(), shutdown.clone());
        tokio::spawn(async move {
            crate::auth::fleet::run(&shared.router, &settings, shared.epoch, stop.wait()).await
        });
    }
    tokio::spawn(health::run(shared.clone(), shutdown.clone()));
    if let Some(t) = config.telemetry.clone() {
        let s = shared.clone();
        let instance = instance.clone();
        let task = tokio::spawn(async move {
            let collect = || genai_metrics::collect(&s.stats, &s.router.topology(), true);
            let stats = s.tracer.stats().cloned();
            crate::telemetry::push::run(t, instance, stats, collect, s.stopped.wait()).await
        });
        *shared
            .metrics_task
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(task);
    }
    shared
        .composition
        .try_lock()
        .expect("nothing else holds the new edge's composition")
        .sync_sources(&shared);
    info!(pop = %config.edge.pop, %addr, workers = config.workers.len(), "edge listening");
    let task = tokio::spawn(serve(
        endpoint,
        upstream_ep,
        shared.clone(),
        shutdown.clone(),
    ));
    Ok(EdgeHandle {
        addr,
        router,
        stats,
        shutdown,
        task,
        shared,
    })
}

async fn serve(
    endpoint: quinn::Endpoint,
    upstream_ep: quinn::Endpoint,
    shared: Arc<EdgeShared>,
    shutdown: Shutdown,
) {
    // Half-open handshakes are counted apart from connections: they never take a
    // connection slot, and past `validate_addresses_above` of them an unvalidated source
    // gets a stateless Retry (a spoofed one never comes back), so a flood of Initial
    // packets cannot lock real clients out.
    let admit = |ep: &quinn::Endpoint, incoming: &quinn::Incoming| {
        // The running config's limits (a reload may change them).
        let (max, validate_above) = shared.router.config().edge.admission_limits();
        let handshaking = shared.stats.handshaking.load(Relaxed).max(0) as usize;
        let established = ep.open_connections().saturating_sub(handshaking);
        if established >= max {
            shared.stats.refused_connections.fetch_add(1, Relaxed);
            return server::Admit::Refuse;
        }
        if !incoming.remote_address_validated() && handshaking >= validate_above {
            shared.stats.address_retries.fetch_add(1, Relaxed);
            return server::Admit::Retry;
        }
        if handshaking >= max {
            shared.stats.refused_connections.fetch_add(1, Relaxed);
            return server::Admit::Refuse;
        }
        shared.stats.handshaking.fetch_add(1, Relaxed);
        server::Admit::Accept
    };
    let accept = |incoming| connection(incoming, shared.clone(), shutdown.clone());
    server::accept_loop(&endpoint, &shutdown, "edge", admit, accept).await;
    // HTTP front-door requests finish too (new ones are refused with UNAVAILABLE).
    if tokio::time::timeout(DRAIN_TIMEOUT, shared.submissions.idle())
        .await
        .is_err()
    {
        tracing::warn!("drain timed out; closing with front-door requests in flight");
    }
    shared.upstreams.close_all();
    upstream_ep.close(0u32.into(), b"edge shutting down");
    endpoint.wait_idle().await;
}

async fn connection(incoming: quinn::Incoming, shared: Arc<EdgeShared>, shutdown: Shutdown) {
    let limit = shared.router.config().edge.handshake_timeout;
    let conn = server::handshake(incoming, limit, &shutdown).await;
    shared.stats.handshaking.fetch_sub(1, Relaxed);
    let Some(conn) = conn else {
        return;
    };
    if server::alpn(&conn).as_deref() == Some(H3_ALPN) {
        if let Some(h3) = &shared.h3 {
            let submitter = Submitter {
                shared: shared.clone(),
            };
            return (h3.0)(conn, submitter).await;
        }
    }
    shared.stats.connections.fetch_add(1, Relaxed);
    shared.stats.active_connections.fetch_add(1, Relaxed);
    let control = tokio::spawn(control_stream(
        conn.clone(),
        shared.clone(),
        shutdown.clone(),
    ));
    let uni = tokio::spawn(server::refuse_uni_streams(conn.clone()));
    let request = |send, recv| relay::serve(send, recv, shared.clone());
    server::serve_streams(&conn, &shutdown, request).await;
    uni.abort();
    shared.stats.active_connections.fetch_sub(1, Relaxed);
    control.abort();
}

/// The edge's control stream to a client: SETTINGS, then GOAWAY on shutdown.
async fn control_stream(conn: quinn::Connection, shared: Arc<EdgeShared>, shutdown: Shutdown) {
    let cfg = shared.router.config();
    let settings = Settings {
        max_concurrent_requests: Some(cfg.edge.max_streams_per_connection.into()),
        max_prompt_bytes: Some(cfg.edge.max_prompt_bytes as u64),
    };
    let Some(control) = ControlStream::open(&conn, settings).await else {
        return;
    };
    tokio::select! {
        _ = shutdown.wait() => control.goaway().await,
        _ = conn.closed() => {}
    }
}
