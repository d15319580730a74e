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
use crate::route::Router;
use crate::shutdown::Shutdown;
use crate::sync::{Arc as SyncArc, RcuCell};
use crate::transport;

/// How often each upstream connection's path statistics are sampled.
pub const PATH_SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

/// One worker's connections.
#[derive(Debug)]
struct Slots {
    conns: Vec<RcuCell<Option<quinn::Connection>>>,
    /// Round-robin cursor over `conns`.
    next: AtomicUsize,
    /// Connections whose SETTINGS arrived and that have not ended or sent GOAWAY.
    live: AtomicU32,
    /// Serialises changes of `live` with the worker's health flag (connection events only).
    changing: std::sync::Mutex<()>,
}

/// The current connections of each worker, readable without locks.
#[derive(Debug)]
pub struct Upstreams {
    workers: Vec<Slots>,
}

impl Upstreams {
    /// A live connection to worker `w`, if any: the next one round-robin.
    pub fn connection(&self, w: WorkerId) -> Option<quinn::Connection> {
        let slots = &self.workers[w];
        let n = slots.conns.len();
        let start = slots.next.fetch_add(1, Relaxed);
        // A slot is emptied as soon as its connection drains or ends (`Link::down`, then
        // `maintain`), so no per-request check of the connection's state (a lock in quinn).
        (0..n).find_map(|i| slots.conns[(start + i) % n].load().as_ref().clone())
    }

    /// Starts the connection tasks for every worker of `router`'s config.
    pub fn spawn(
        router: Arc<Router>,
        endpoint: quinn::Endpoint,
        shutdown: Shutdown,
    ) -> Arc<Upstreams> {
        let cfg = router.config();
        let per = cfg.upstream.connections_per_worker.max(1) as usize;
        let ups = Arc::new(Upstreams {
            workers: (0..cfg.workers.len())
                .map(|_| Slots {
                    conns: (0..per).map(|_| RcuCell::new(SyncArc::new(None))).collect(),
                    next: AtomicUsize::new(0),
                    live: AtomicU32::new(0),
                    changing: std::sync::Mutex::new(()),
                })
                .collect(),
        });
        for w in 0..cfg.workers.len() {
            for slot in 0..per {
                let link = Link {
                    w,
                    slot,
                    router: router.clone(),
                    ups: ups.clone(),
                };
                tokio::spawn(maintain(link, endpoint.clone(), shutdown.clone()));
            }
        }
        ups
    }

    /// Closes every connection (edge shutdown).
    pub fn close_all(&self) {
        for c in self.workers.iter().flat_map(|s| &s.conns) {
            if let Some(conn) = c.load().as_ref() {
                conn.close(0u32.into(), b"edge shutting down");
            }
        }
    }
}

/// One connection slot of one worker.
struct Link {
    w: WorkerId,
    slot: usize,
    router: Arc<Router>,
    ups: Arc<Upstreams>,
}

impl Link {
    fn slots(&self) -> &Slots {
        &self.ups.workers[self.w]
    }

    /// This connection's SETTINGS arrived: the worker is routable.
    fn up(&self) {
        let _serial = self
            .slots()
            .changing
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        self.slots().live.fetch_add(1, Relaxed);
        self.router.set_healthy(self.w, true);
    }

    /// This connection no longer takes new requests (its streams in flight go on); the
    /// worker is unhealthy once none does.
    fn down(&self) {
        self.slots().conns[self.slot].store(SyncArc::new(None));
        let _serial = self
            .slots()
            .changing
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if self.slots().live.fetch_sub(1, Relaxed) == 1 {
            self.router.set_healthy(self.w, false);
        }
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

/// Keeps one connection slot of worker `w` connected until shutdown.
async fn maintain(link: Link, endpoint: quinn::Endpoint, shutdown: Shutdown) {
    let (w, router) = (link.w, link.router.clone());
    let entry = router.config().workers[w].clone();
    let settings = router.config().upstream.clone();
    let mut backoff = settings.backoff_min;
    let mut tls: Option<quinn::ClientConfig> = None;
    // The last connect error, logged as a warning when it first appears or changes (a
    // missing pin file, a refused certificate), then only at debug level while it repeats.
    let mut last_error: Option<String> = None;
    loop {
        if shutdown.is_triggered() {
            return;
        }
        // Trust is read again after a failure: a dev worker may write its certificate after
        // we start.
        let attempt = async {
            let mut cfg = match tls.take() {
                Some(c) => c,
                None => crypto(&entry, settings.client_identity.as_ref())?,
            };
            let last_rtt = router.worker(w).health.path_rtt();
            cfg.transport_config(Arc::new(transport_for(&settings, last_rtt)));
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
        };
        match conn {
            Ok((conn, cfg)) => {
                tls = Some(cfg);
                last_error = None;
                info!(worker = %entry.name, slot = link.slot, addr = %entry.address, "upstream connected");
                backoff = settings.backoff_min;
                link.slots().conns[link.slot].store(SyncArc::new(Some(conn.clone())));
                // The worker becomes routable once its SETTINGS (capacity) arrived: see `control`.
                let mut counted = false;
                let reason = tokio::select! {
                    r = control(&link, &conn, &mut counted) => r,
                    e = conn.closed() => e.to_string(),
                    _ = sample_path(w, &router, &conn) => unreachable!("the sampler runs until dropped"),
                    _ = shutdown.wait() => "edge shutting down".into(),
                };
                if counted {
                    link.down();
                }
                info!(worker = %entry.name, slot = link.slot, %reason, "upstream unavailable for new requests");
                // A draining worker finishes in-flight streams on this connection; new ones go
                // elsewhere. Wait for it to close before reconnecting.
                tokio::select! {
                    _ = conn.closed() => {}
                    _ = shutdown.wait() => return,
                }
                link.slots().conns[link.slot].store(SyncArc::new(None));
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
            u64::from(std::process::id() % 7) * 3 + (w as u64 % 5) * 2 + link.slot as u64 * 7,
        );
        tokio::select! {
            _ = tokio::time::sleep(backoff + jitter) => {}
            _ = shutdown.wait() => return,
        }
        backoff = (backoff * 2).min(settings.backoff_max);
    }
}

/// Records the connection's path RTT and loss counters every [`PATH_SAMPLE_INTERVAL`].
async fn sample_path(w: WorkerId, router: &Router, conn: &quinn::Connection) {
    let health = &router.worker(w).health;
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
    let (w, router) = (link.w, &*link.router);
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
                    router.worker(w).set_capacity(c);
                }
                // Healthy from here: the table rebuild this triggers includes the capacity.
                link.up();
                *counted = true;
            }
            Ok(Some(Frame::Load(l))) if !first => router.record_load(w, l.in_flight, l.queue_depth),
            Ok(Some(Frame::GoAway(_))) if !first => return "worker sent GOAWAY (draining)".into(),
            Ok(Some(Frame::Unknown(_))) if !first => {}
            Ok(Some(f)) => {
                let reason = format!("unexpected {} frame on the control stream", f.ty().name());
                return protocol_violation(w, conn, ErrorCode::PROTOCOL_ERROR, reason);
            }
            Err(ReadFrameError::Decode(e)) => {
                return protocol_violation(w, conn, e.code(), e.to_string())
            }
            Ok(None) | Err(_) => return "control stream ended (draining)".into(),
        }
        first = false;
    }
}

/// Closes a worker connection whose control stream broke the protocol (PROTOCOL.md §5.1).
fn protocol_violation(
    w: WorkerId,
    conn: &quinn::Connection,
    code: ErrorCode,
    reason: String,
) -> String {
    warn!(worker = w, %reason, "closing upstream connection: control stream protocol error");
    conn.close(
        quinn::VarInt::from_u64(code.0).expect("error codes are small"),
        reason.as_bytes(),
    );
    reason
}
