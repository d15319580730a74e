//! The edge's upstream connections: one long-lived QUIC connection per configured worker,
//! reconnected with exponential backoff. A worker is healthy while its connection is up and
//! it has not sent GOAWAY; its control stream feeds capacity (SETTINGS) and load (LOAD).

use std::sync::Arc;
use std::time::Duration;

use meridian_protocol::client::tls::ClientIdentity;
use meridian_protocol::client::{ClientConfig, Trust};
use meridian_protocol::io::{FrameReader, ReadFrameError};
use meridian_protocol::{varint, ErrorCode, Frame, CONTROL_STREAM_TYPE};
use tracing::{debug, info, warn};

use crate::config::{UpstreamTrust, WorkerEntry, WorkerId};
use crate::route::Router;
use crate::shutdown::Shutdown;
use crate::sync::{Arc as SyncArc, RcuCell};
use crate::transport;

/// The current connection of each worker, readable without locks.
#[derive(Debug)]
pub struct Upstreams {
    conns: Vec<RcuCell<Option<quinn::Connection>>>,
}

impl Upstreams {
    /// The live connection to worker `w`, if any.
    pub fn connection(&self, w: WorkerId) -> Option<quinn::Connection> {
        self.conns[w].load().as_ref().clone()
    }

    /// Starts one connection task per worker of `router`'s config.
    pub fn spawn(
        router: Arc<Router>,
        endpoint: quinn::Endpoint,
        shutdown: Shutdown,
    ) -> Arc<Upstreams> {
        let n = router.config().workers.len();
        let ups = Arc::new(Upstreams {
            conns: (0..n).map(|_| RcuCell::new(SyncArc::new(None))).collect(),
        });
        for w in 0..n {
            tokio::spawn(maintain(
                w,
                router.clone(),
                ups.clone(),
                endpoint.clone(),
                shutdown.clone(),
            ));
        }
        ups
    }

    /// Closes every connection (edge shutdown).
    pub fn close_all(&self) {
        for c in &self.conns {
            if let Some(conn) = c.load().as_ref() {
                conn.close(0u32.into(), b"edge shutting down");
            }
        }
    }
}

fn client_config(
    entry: &WorkerEntry,
    idle_timeout: Duration,
    identity: Option<&(std::path::PathBuf, std::path::PathBuf)>,
) -> Result<quinn::ClientConfig, String> {
    let trust = match &entry.trust {
        UpstreamTrust::Ca(p) => Trust::ca_file(p),
        UpstreamTrust::Pin(p) => Trust::pin_file(p),
    }
    .map_err(|e| e.to_string())?;
    let mut cfg = ClientConfig::new(trust);
    cfg.server_name = entry.server_name.clone();
    cfg.transport = Some(Arc::new(transport::upstream_transport(idle_timeout)));
    if let Some((cert, key)) = identity {
        let id = ClientIdentity::from_files(cert, key).map_err(|e| e.to_string())?;
        cfg.identity = Some(Arc::new(id));
    }
    cfg.quinn_config().map_err(|e| e.to_string())
}

/// Keeps worker `w` connected until shutdown.
async fn maintain(
    w: WorkerId,
    router: Arc<Router>,
    ups: Arc<Upstreams>,
    endpoint: quinn::Endpoint,
    shutdown: Shutdown,
) {
    let entry = router.config().workers[w].clone();
    let settings = router.config().upstream.clone();
    let mut backoff = settings.backoff_min;
    // The last connect error, logged as a warning when it first appears or changes (a
    // missing pin file, a refused certificate), then only at debug level while it repeats.
    let mut last_error: Option<String> = None;
    loop {
        if shutdown.is_triggered() {
            return;
        }
        // Re-read trust each attempt: a dev worker may write its certificate after we start.
        let attempt = async {
            let cfg = client_config(
                &entry,
                settings.idle_timeout,
                settings.client_identity.as_ref(),
            )?;
            let connecting = endpoint
                .connect_with(cfg, entry.address, &entry.server_name)
                .map_err(|e| e.to_string())?;
            match tokio::time::timeout(settings.connect_timeout, connecting).await {
                Ok(Ok(conn)) => Ok(conn),
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
            Ok(conn) => {
                last_error = None;
                info!(worker = %entry.name, addr = %entry.address, "upstream connected");
                backoff = settings.backoff_min;
                ups.conns[w].store(SyncArc::new(Some(conn.clone())));
                // The worker becomes routable once its SETTINGS (capacity) arrived: see `control`.
                let reason = tokio::select! {
                    r = control(w, &router, &conn) => r,
                    e = conn.closed() => e.to_string(),
                    _ = shutdown.wait() => "edge shutting down".into(),
                };
                router.set_healthy(w, false);
                info!(worker = %entry.name, %reason, "upstream unavailable for new requests");
                // A draining worker finishes in-flight streams on this connection; new ones go
                // elsewhere. Wait for it to close before reconnecting.
                tokio::select! {
                    _ = conn.closed() => {}
                    _ = shutdown.wait() => return,
                }
                ups.conns[w].store(SyncArc::new(None));
            }
            Err(e) => {
                if last_error.as_deref() != Some(e.as_str()) {
                    warn!(worker = %entry.name, addr = %entry.address, "cannot connect (retrying with backoff): {e}");
                    last_error = Some(e);
                } else {
                    debug!(worker = %entry.name, addr = %entry.address, "connect failed: {e}");
                }
                if router.worker(w).is_healthy() {
                    router.set_healthy(w, false);
                }
            }
        }
        let jitter =
            Duration::from_millis(u64::from(std::process::id() % 7) * 3 + (w as u64 % 5) * 2);
        tokio::select! {
            _ = tokio::time::sleep(backoff + jitter) => {}
            _ = shutdown.wait() => return,
        }
        backoff = (backoff * 2).min(settings.backoff_max);
    }
}

/// Reads the worker's control stream until it ends or says GOAWAY; returns why. The worker
/// is marked healthy when its SETTINGS arrive (PROTOCOL.md §5.2: they carry its capacity).
async fn control(w: WorkerId, router: &Router, conn: &quinn::Connection) -> String {
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
                router.set_healthy(w, true);
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
