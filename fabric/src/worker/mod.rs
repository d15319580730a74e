//! The worker: a QUIC server (ALPN `meridian/1`) beside an inference backend. Each edge
//! connection carries one request per bidirectional stream and the worker's control stream
//! (SETTINGS, LOAD reports, GOAWAY when draining).

mod request;
mod stats;
pub mod synthetic;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use meridian_protocol::{varint, Frame, GoAway, Load, Settings, CONTROL_STREAM_TYPE};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

pub use stats::{StatsSnapshot, WorkerStats};

use crate::config::WorkerConfig;
use crate::shutdown::Shutdown;
use crate::tls::{Identity, IdentityError};
use crate::transport;

/// How long a draining worker lets in-flight requests finish.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// State shared by a worker's connections.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: WorkerConfig,
    pub stats: Arc<WorkerStats>,
    pub slots: Semaphore,
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
}

impl WorkerHandle {
    /// Drains gracefully: GOAWAY to every edge, in-flight requests finish (up to
    /// [`DRAIN_TIMEOUT`]), then the endpoint closes.
    pub async fn stop(self) {
        self.shutdown.trigger();
        let _ = self.task.await;
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
    let server = identity.server_config(&[meridian_protocol::ALPN], transport)?;
    let endpoint = quinn::Endpoint::server(server, config.listen)
        .map_err(|e| WorkerError::Bind(config.listen, e))?;
    let addr = endpoint
        .local_addr()
        .map_err(|e| WorkerError::Bind(config.listen, e))?;
    let stats = Arc::new(WorkerStats::default());
    let shared = Arc::new(Shared {
        slots: Semaphore::new(config.max_concurrent as usize),
        config,
        stats: stats.clone(),
    });
    info!(worker = %shared.config.name, region = %shared.config.region, %addr, "worker listening");
    let task = tokio::spawn(serve(endpoint.clone(), shared, shutdown.clone()));
    Ok(WorkerHandle {
        addr,
        stats,
        shutdown,
        task,
        endpoint,
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

async fn serve(endpoint: quinn::Endpoint, shared: Arc<Shared>, shutdown: Shutdown) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                conns.spawn(connection(incoming, shared.clone(), shutdown.clone()));
            }
            _ = shutdown.wait() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    // Drain: connections saw the signal, sent GOAWAY, and finish their requests.
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!(worker = %shared.config.name, "drain timed out; closing with requests in flight");
    }
    endpoint.close(0u32.into(), b"worker shutting down");
    endpoint.wait_idle().await;
}

async fn connection(incoming: quinn::Incoming, shared: Arc<Shared>, shutdown: Shutdown) {
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            debug!("handshake failed: {e}");
            return;
        }
    };
    debug!(peer = %conn.remote_address(), "edge connected");
    let control = tokio::spawn(control(conn.clone(), shared.clone(), shutdown.clone()));
    let mut requests = JoinSet::new();
    loop {
        tokio::select! {
            stream = conn.accept_bi() => match stream {
                Ok((send, recv)) => { requests.spawn(request::serve(send, recv, shared.clone())); }
                Err(e) => { debug!("connection ended: {e}"); break; }
            },
            _ = shutdown.wait() => break,
            Some(_) = requests.join_next(), if !requests.is_empty() => {}
        }
    }
    while requests.join_next().await.is_some() {}
    let _ = control.await;
}

/// The worker's control stream: SETTINGS, then LOAD whenever load changed (at most once per
/// report interval), then GOAWAY on shutdown. PROTOCOL.md §5.
async fn control(conn: quinn::Connection, shared: Arc<Shared>, shutdown: Shutdown) {
    let Ok(mut send) = conn.open_uni().await else {
        return;
    };
    let mut buf = BytesMut::new();
    varint::encode(CONTROL_STREAM_TYPE, &mut buf);
    Frame::Settings(Settings {
        max_concurrent_requests: Some(shared.config.max_concurrent.into()),
        max_prompt_bytes: Some(shared.config.max_prompt_bytes as u64),
    })
    .encode(&mut buf);
    if send.write_chunk(buf.split().freeze()).await.is_err() {
        return;
    }
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
                Frame::Load(load).encode(&mut buf);
                if send.write_chunk(buf.split().freeze()).await.is_err() {
                    return;
                }
            }
            _ = shutdown.wait() => {
                Frame::GoAway(GoAway).encode(&mut buf);
                let _ = send.write_chunk(buf.split().freeze()).await;
                return;
            }
            _ = conn.closed() => return,
        }
    }
}
