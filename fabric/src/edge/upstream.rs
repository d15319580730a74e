//! The edge's upstream connections: `connections_per_worker` long-lived QUIC connections per
//! configured worker (requests spread round-robin over the live ones, so one lossy
//! connection's congestion window does not hold every stream), each reconnected with
//! exponential backoff. A worker is healthy while at least one of its connections is up and
//! it has not sent GOAWAY; its control streams feed capacity (SETTINGS) and load (LOAD). A
//! sampler per connection records the path's RTT and losses for routing (`route::health`).

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use meridian_protocol::client::tls::ClientIdentity;
use meridian_protocol::client::{ClientConfig, Trust};
use meridian_protocol::io::{FrameReader, ReadFrameError};
use meridian_protocol::{varint, ErrorCode, Frame, CONTROL_STREAM_TYPE};
use tracing::{debug, info, warn};

use crate::config::{UpstreamSettings, UpstreamTrust, WorkerEntry, WorkerId};
use crate::route::{Router, Topology, WorkerState};
use crate::shutdown::Shutdown;
use crate::sync::{Arc as SyncArc, RcuCell};
use crate::transport;

/// How often each upstream connection's path statistics are sampled.
pub const PATH_SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

/// One worker's connections, readable without locks: each slot holds the connection the
/// slot's task keeps up, and is emptied as soon as it drains or ends.
#[derive(Debug)]
pub struct Links {
    conns: Box<[RcuCell<Option<quinn::Connection>>]>,
    /// Round-robin cursor over `conns`.
    next: AtomicUsize,
    /// Connections whose SETTINGS arrived and that have not ended or sent GOAWAY.
    live: AtomicU32,
    /// Serialises changes of `live` with the worker's health flag (connection events only).
    changing: std::sync::Mutex<()>,
}

impl Links {
    /// `n` empty slots.
    pub fn new(n: usize) -> Links {
        Links {
            conns: (0..n.max(1))
                .map(|_| RcuCell::new(SyncArc::new(None)))
                .collect(),
            next: AtomicUsize::new(0),
            live: AtomicU32::new(0),
            changing: std::sync::Mutex::new(()),
        }
    }

    /// A live connection, if any: the next one round-robin.
    pub fn connection(&self) -> Option<quinn::Connection> {
        let n = self.conns.len();
        let start = self.next.fetch_add(1, Relaxed);
        // A slot is emptied as soon as its connection drains or ends (`Link::down`, then
        // `maintain`), so no per-request check of the connection's state (a lock in quinn).
        (0..n).find_map(|i| self.conns[(start + i) % n].load().as_ref().clone())
    }

    /// How many connection slots the worker has.
    pub fn slots(&self) -> usize {
        self.conns.len()
    }

    fn close(&self, reason: &[u8]) {
        for c in self.conns.iter() {
            if let Some(conn) = c.load().as_ref() {
                conn.close(0u32.into(), reason);
            }
        }
    }
}

/// Starts, drains and closes the edge's upstream connections as workers join and leave the
/// topology.
#[derive(Debug)]
pub struct Upstreams {
    router: Arc<Router>,
    endpoint: quinn::Endpoint,
    shutdown: Shutdown,
}

impl Upstreams {
    /// Starts the connection tasks for every worker of the router's current topology.
    pub fn spawn(
        router: Arc<Router>,
        endpoint: quinn::Endpoint,
        shutdown: Shutdown,
    ) -> Arc<Upstreams> {
        let ups = Arc::new(Upstreams {
            router,
            endpoint,
            shutdown,
        });
        let topo = ups.router.topology();
        for w in 0..topo.workers.len() {
            ups.start(&topo, w);
        }
        ups
    }

    /// Starts the connection tasks of worker `w` of `topo` (new in that generation).
    pub fn start(&self, topo: &Topology, w: WorkerId) {
        let state = topo.workers[w].clone();
        for slot in 0..state.links.slots() {
            let link = Link {
                state: state.clone(),
                entry: topo.config.workers[w].clone(),
                settings: topo.config.upstream.clone(),
                slot,
                router: self.router.clone(),
            };
            tokio::spawn(maintain(link, self.endpoint.clone(), self.shutdown.clone()));
        }
    }

    /// Closes every connection of the current topology (edge shutdown).
    pub fn close_all(&self) {
        for state in &self.router.topology().workers {
            state.links.close(b"edge shutting down");
        }
    }
}

/// One connection slot of one worker.
struct Link {
    state: Arc<WorkerState>,
    entry: WorkerEntry,
    settings: UpstreamSettings,
    slot: usize,
    router: Arc<Router>,
}

impl Link {
    /// Takes the upstream settings from the running config (a reload may have changed the
    /// `[upstream]` tuning: each connection uses the values of the moment it is made; a new
    /// trust or identity makes a new worker). False once the worker left the topology.
    fn refresh(&mut self) -> bool {
        let topo = self.router.topology();
        let Some(w) = topo.position(self.state.uid) else {
            return false;
        };
        self.entry = topo.config.workers[w].clone();
        self.settings = topo.config.upstream.clone();
        true
    }

    fn links(&self) -> &Links {
        &self.state.links
    }

    /// This connection's SETTINGS arrived: the worker is routable.
    fn up(&self) {
        let _serial = self
            .links()
            .changing
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.links().live.fetch_add(1, Relaxed);
        self.router.set_worker_healthy(&self.state, true);
    }

    /// This connection no longer takes new requests (its streams in flight go on); the
    /// worker is unhealthy once none does.
    fn down(&self) {
        self.links().conns[self.slot].store(SyncArc::new(None));
        let _serial = self
            .links()
            .changing
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if self.links().live.fetch_sub(1, Relaxed) == 1 {
            self.router.set_worker_healthy(&self.state, false);
        }
    }
}

/// Resolves once the worker left the topology and every request this edge had in flight on
/// it ended.
async fn retired_and_drained(state: &WorkerState) {
    state.retired.wait().await;
    while state.local_in_flight() > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The TLS part of a worker's client config, kept across reconnects and shared by the
/// worker's connections (no certificate files re-read, no verifier rebuilt per connection);
/// rebuilt after a failed attempt so that a changed trust file is read again.
fn crypto(
    entry: &WorkerEntry,
    identity: Option<&(std::path::PathBuf, std::path::PathBuf)>,
) -> Result<quinn::ClientConfig, String> {
    let trust = match &entry.trust {
        UpstreamTrust::Ca(p) => Trust::ca_file(p),
        UpstreamTrust::Pin(p) => Trust::pin_file(p),
    }
    .map_err(|e| e.to_string())?;
    let mut cfg = ClientConfig::new(trust);
    cfg.server_name = entry.server_name.clone();
    if let Some((cert, key)) = identity {
        let id = ClientIdentity::from_files(cert, key).map_err(|e| e.to_string())?;
        cfg.identity = Some(Arc::new(id));
    }
    cfg.quinn_config().map_err(|e| e.to_string())
}

/// This attempt's transport: the RTT last measured to the worker, if any, as the initial RTT.
fn transport_for(
    settings: &UpstreamSettings,
    last_rtt: Option<Duration>,
) -> quinn::TransportConfig {
    // An RTT inflated by the outage that broke the connection must not stretch the
    // handshake's retransmission timers past the connect timeout.
    let cap = settings.initial_rtt.max(settings.connect_timeout / 4);
    let initial_rtt = last_rtt.map_or(settings.initial_rtt, |r| r.min(cap));
    transport::upstream_transport(settings.idle_timeout, initial_rtt, &settings.link)
}

/// Keeps one connection slot of a worker connected until shutdown, or until the worker
/// leaves the topology (then the connection drains and closes).
async fn maintain(mut link: Link, endpoint: quinn::Endpoint, shutdown: Shutdown) {
    let state = link.state.clone();
    let retired = state.retired.clone();
    let mut backoff = link.settings.backoff_min;
    let mut tls: Option<quinn::ClientConfig> = None;
    // The last connect error, logged as a warning when it first appears or changes (a
    // missing pin file, a refused certificate), then only at debug level while it repeats.
    let mut last_error: Option<String> = None;
    loop {
        if shutdown.is_triggered() || retired.is_triggered() || !link.refresh() {
            return;
        }
        let (entry, settings) = (&link.entry, &link.settings);
        // Trust is read again after a failure: a dev worker may write its certificate after
        // we start.
        let attempt = async {
            let mut cfg = match tls.take() {
                Some(c) => c,
                None => crypto(entry, settings.client_identity.as_ref())?,
            };
            let last_rtt = state.health.path_rtt();
            cfg.transport_config(Arc::new(transport_for(settings, last_rtt)));
            let connecting = endpoint
                .connect_with(cfg.clone(), entry.address, &entry.server_name)
                .map_err(|e| e.to_string())?;
            match tokio::time::timeout(settings.connect_timeout, connecting).await {
                Ok(Ok(conn)) => Ok((conn, cfg)),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!(
                    "no handshake within {:?}",
                    settings.connect_timeout
                )),
            }
        };
        let conn = tokio::select! {
            r = attempt => r,
            _ = shutdown.wait() => return,
            _ = retired.wait() => return,
        };
        match conn {
            Ok((conn, cfg)) => {
                tls = Some(cfg);
                last_error = None;
                info!(worker = %entry.name, slot = link.slot, addr = %entry.address, "upstream connected");
                backoff = settings.backoff_min;
                link.links().conns[link.slot].store(SyncArc::new(Some(conn.clone())));
                // The worker becomes routable once its SETTINGS (capacity) arrived: see `control`.
                let mut counted = false;
                let reason = tokio::select! {
                    r = control(&link, &conn, &mut counted) => r,
                    e = conn.closed() => e.to_string(),
                    _ = sample_path(&state, &conn) => unreachable!("the sampler runs until dropped"),
                    _ = shutdown.wait() => "edge shutting down".into(),
                    _ = retired.wait() => "worker left the topology".into(),
                };
                if counted {
                    link.down();
                }
                info!(worker = %entry.name, slot = link.slot, %reason, "upstream unavailable for new requests");
                // A draining worker finishes in-flight streams on this connection; new ones go
                // elsewhere: wait for it to close before reconnecting. A retired worker's
                // connection is closed by us once its streams ended: drained, never cut.
                tokio::select! {
                    _ = conn.closed() => {}
                    _ = shutdown.wait() => return,
                    _ = retired_and_drained(&state) => conn.close(0u32.into(), b"removed from the topology"),
                }
                link.links().conns[link.slot].store(SyncArc::new(None));
                if retired.is_triggered() {
                    info!(worker = %entry.name, slot = link.slot, "retired worker's connection closed");
                    return;
                }
            }
            Err(e) => {
                if last_error.as_deref() != Some(e.as_str()) {
                    warn!(worker = %entry.name, addr = %entry.address, "cannot connect (retrying with backoff): {e}");
                    last_error = Some(e);
                } else {
                    debug!(worker = %entry.name, addr = %entry.address, "connect failed: {e}");
                }
            }
        }
        let jitter = Duration::from_millis(
            u64::from(std::process::id() % 7) * 3 + (state.uid % 5) * 2 + link.slot as u64 * 7,
        );
        tokio::select! {
            _ = tokio::time::sleep(backoff + jitter) => {}
            _ = shutdown.wait() => return,
            _ = retired.wait() => return,
        }
        backoff = (backoff * 2).min(settings.backoff_max);
    }
}

/// Records the connection's path RTT and loss counters every [`PATH_SAMPLE_INTERVAL`].
async fn sample_path(state: &WorkerState, conn: &quinn::Connection) {
    let health = &state.health;
    let mut tick = tokio::time::interval(PATH_SAMPLE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = conn.stats().path;
    loop {
        tick.tick().await;
        let now = conn.stats().path;
        health.record_path(
            conn.rtt(),
            now.lost_packets.saturating_sub(last.lost_packets),
            now.sent_packets.saturating_sub(last.sent_packets),
        );
        last = now;
    }
}

/// Reads the worker's control stream until it ends or says GOAWAY; returns why. The worker
/// is marked healthy when its SETTINGS arrive (PROTOCOL.md §5.2: they carry its capacity);
/// `counted` records that this connection counts as live.
async fn control(link: &Link, conn: &quinn::Connection, counted: &mut bool) -> String {
    let (state, router, name) = (&link.state, &*link.router, &link.entry.name);
    let recv = loop {
        let Ok(mut recv) = conn.accept_uni().await else {
            return "connection closed".into();
        };
        let mut ty = [0u8; 1];
        if recv.read_exact(&mut ty).await.is_err() {
            return "control stream ended".into();
        }
        let len = varint::size_from_first(ty[0]);
        let mut rest = [0u8; 7];
        if len > 1 && recv.read_exact(&mut rest[..len - 1]).await.is_err() {
            return "control stream ended".into();
        }
        let mut all = [0u8; 8];
        all[0] = ty[0];
        all[1..len].copy_from_slice(&rest[..len - 1]);
        match varint::peek(&all[..len]) {
            Some((CONTROL_STREAM_TYPE, _)) => break recv,
            _ => {
                let _ = recv.stop(0u32.into());
            }
        }
    };
    let mut reader = FrameReader::new(recv);
    let mut first = true;
    loop {
        match reader.next().await {
            Ok(Some(Frame::Settings(s))) if first => {
                if let Some(c) = s.max_concurrent_requests {
                    state.set_capacity(c);
                }
                // Healthy from here: the table rebuild this triggers includes the capacity.
                link.up();
                *counted = true;
            }
            Ok(Some(Frame::Load(l))) if !first => {
                router.record_load(state, l.in_flight, l.queue_depth)
            }
            Ok(Some(Frame::GoAway(_))) if !first => return "worker sent GOAWAY (draining)".into(),
            Ok(Some(Frame::Unknown(_))) if !first => {}
            Ok(Some(f)) => {
                let reason = format!("unexpected {} frame on the control stream", f.ty().name());
                return protocol_violation(name, conn, ErrorCode::PROTOCOL_ERROR, reason);
            }
            Err(ReadFrameError::Decode(e)) => {
                return protocol_violation(name, conn, e.code(), e.to_string())
            }
            Ok(None) | Err(_) => return "control stream ended (draining)".into(),
        }
        first = false;
    }
}

/// Closes a worker connection whose control stream broke the protocol (PROTOCOL.md §5.1).
fn protocol_violation(
    worker: &str,
    conn: &quinn::Connection,
    code: ErrorCode,
    reason: String,
) -> String {
    warn!(worker, %reason, "closing upstream connection: control stream protocol error");
    conn.close(
        quinn::VarInt::from_u64(code.0).expect("error codes are small"),
        reason.as_bytes(),
    );
    reason
}
