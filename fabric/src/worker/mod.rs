//! The worker: a QUIC server (ALPN `meridian/1`) beside an inference backend. Each edge
//! connection carries one request per bidirectional stream and the worker's control stream
//! (SETTINGS, LOAD reports, GOAWAY when draining).

mod emit;
mod openai;
pub use openai::not_resumable;
mod request;
mod stats;
pub mod synthetic;

use std::net::SocketAddr;
use std::sync::Arc;

use meridian_protocol::{Frame, Load, Settings};
use tokio::sync::Semaphore;
use tracing::{debug, info};

pub use stats::{StatsSnapshot, WorkerStats};

use crate::config::WorkerConfig;
use crate::server::{self, ControlStream};
use crate::shutdown::Shutdown;
use crate::telemetry::{self, Tracer};
use crate::tls::{Identity, IdentityError};
use crate::transport;

pub use crate::server::DRAIN_TIMEOUT;

/// State shared by a worker's connections.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: WorkerConfig,
    pub stats: Arc<WorkerStats>,
    pub slots: Semaphore,
    /// The OpenAI-compatible upstream, for `Backend::OpenAi`.
    pub openai: Option<openai::OpenAiClient>,
    pub tracer: Tracer,
}

/// A running worker.
#[derive(Debug)]
pub struct WorkerHandle {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its counters.
    pub stats: Arc<WorkerStats>,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<()>,
    endpoint: quinn::Endpoint,
    tracer: Tracer,
}

impl WorkerHandle {
    /// QUIC connections open now (edges connect `connections_per_worker` each).
    pub fn connections(&self) -> usize {
        self.endpoint.open_connections()
    }

    /// Drains gracefully: GOAWAY to every edge, in-flight requests finish (up to
    /// [`DRAIN_TIMEOUT`]), then the endpoint closes.
    pub async fn stop(self) {
        self.shutdown.trigger();
        let _ = self.task.await;
        self.tracer.shutdown().await;
    }

    /// Dies at once, as a crashed process would look to its peers: connections close with
    /// INTERNAL and in-flight streams are cut mid-way.
    pub fn kill(self) {
        self.endpoint.close(
            varint_code(meridian_protocol::ErrorCode::INTERNAL),
            b"killed",
        );
        self.task.abort();
    }
}

pub(crate) fn varint_code(code: meridian_protocol::ErrorCode) -> quinn::VarInt {
    quinn::VarInt::from_u64(code.0).expect("error codes are small")
}

/// Binds `config.listen` and serves until `shutdown` fires (or the handle is stopped).
pub fn spawn(
    config: WorkerConfig,
    identity: &Identity,
    shutdown: Shutdown,
) -> Result<WorkerHandle, WorkerError> {
    let mut transport = transport::transport(config.max_concurrent.saturating_mul(2).max(16));
    transport::ack_frequency(&mut transport, config.ack_eliciting_threshold);
    transport::link(&mut transport, &config.link);
    let server = identity.server_config_verifying(
        &[meridian_protocol::ALPN],
        transport,
        config.client_ca.as_deref(),
    )?;
    let endpoint = quinn::Endpoint::server(server, config.listen)
        .map_err(|e| WorkerError::Bind(config.listen, e))?;
    let addr = endpoint
        .local_addr()
        .map_err(|e| WorkerError::Bind(config.listen, e))?;
    let stats = Arc::new(WorkerStats::default());
    let openai = match &config.backend {
        crate::config::Backend::OpenAi(b) => Some(openai::OpenAiClient::new(b.clone())),
        _ => None,
    };
    let instance = format!("{}@{addr}", config.name);
    let tracer = telemetry::start(config.telemetry.as_ref(), &instance);
    let shared = Arc::new(Shared {
        slots: Semaphore::new(config.max_concurrent as usize),
        config,
        stats: stats.clone(),
        openai,
        tracer: tracer.clone(),
    });
    info!(worker = %shared.config.name, region = %shared.config.region, %addr, "worker listening");
    let task = tokio::spawn(serve(endpoint.clone(), shared, shutdown.clone()));
    Ok(WorkerHandle {
        addr,
        stats,
        shutdown,
        task,
        endpoint,
        tracer,
    })
}

/// Why a worker could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The certificate could not be set up.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The UDP address could not be bound: is another process using it?
    #[error("binding {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

/// Longest an edge's handshake may take.
const WORKER_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn serve(endpoint: quinn::Endpoint, shared: Arc<Shared>, shutdown: Shutdown) {
    let accept = |incoming| connection(incoming, shared.clone(), shutdown.clone());
    let admit = |_: &quinn::Endpoint, _: &quinn::Incoming| server::Admit::Accept;
    server::accept_loop(&endpoint, &shutdown, &shared.config.name, admit, accept).await;
    endpoint.wait_idle().await;
}

async fn connection(incoming: quinn::Incoming, shared: Arc<Shared>, shutdown: Shutdown) {
    let Some(conn) = server::handshake(incoming, WORKER_HANDSHAKE_TIMEOUT, &shutdown).await else {
        return;
    };
    debug!(peer = %conn.remote_address(), "edge connected");
    let control = tokio::spawn(control_stream(
        conn.clone(),
        shared.clone(),
        shutdown.clone(),
    ));
    let uni = tokio::spawn(server::refuse_uni_streams(conn.clone()));
    let request = |send, recv| request::serve(send, recv, shared.clone());
    server::serve_streams(&conn, &shutdown, request).await;
    uni.abort();
    let _ = control.await;
}

/// The worker's control stream: SETTINGS, then LOAD whenever load changed (at most once per
/// report interval), then GOAWAY on shutdown. PROTOCOL.md §5.
async fn control_stream(conn: quinn::Connection, shared: Arc<Shared>, shutdown: Shutdown) {
    let settings = Settings {
        max_concurrent_requests: Some(shared.config.max_concurrent.into()),
        max_prompt_bytes: Some(shared.config.max_prompt_bytes as u64),
    };
    let Some(mut control) = ControlStream::open(&conn, settings).await else {
        return;
    };
    let mut tick = tokio::time::interval(shared.config.load_report);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Load::default();
    let mut last_tokens = shared.stats.snapshot().tokens;
    let per_s = 1000 / shared.config.load_report.as_millis().max(1) as u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let s = shared.stats.snapshot();
                let load = Load { in_flight: s.in_flight, queue_depth: s.queued, tokens_per_s: (s.tokens - last_tokens) * per_s.max(1) };
                last_tokens = s.tokens;
                if load == last {
                    continue;
                }
                last = load;
                if !control.send(&Frame::Load(load)).await {
                    return;
                }
            }
            _ = shutdown.wait() => return control.goaway().await,
            _ = conn.closed() => return,
        }
    }
}
