//! The edge's health loop (off the request path): every `[health] score_interval_ms` it
//! probes ejected workers whose backoff has passed and publishes the scorer's region orders
//! (`route::score`) through the routing table's RCU cell.
//!
//! A probe is a real one-token request for the worker's first model, sent on one of its
//! upstream connections: the worker is readmitted only if it answers with END, which checks
//! the worker *and* its inference backend (a ping would only check the QUIC path).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use meridian_protocol::{Frame, RequestHeaders};

use super::track::ResponseTracker;
use super::EdgeShared;
use crate::config::WorkerId;
use crate::route::Topology;
use crate::shutdown::Shutdown;

/// Longest a probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs until shutdown.
pub(crate) async fn run(edge: Arc<EdgeShared>, shutdown: Shutdown) {
    let router = edge.router.clone();
    loop {
        // Read every round: a reload may change it.
        let every = router.config().health.score_interval;
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait() => return,
        }
        let (topo, due) = router.due_probes();
        for w in due {
            let state = topo.workers[w].clone();
            if state.probing.swap(true, Relaxed) {
                continue;
            }
            let (edge, topo) = (edge.clone(), topo.clone());
            tokio::spawn(async move {
                let ok = probe(&topo, w).await;
                edge.router.probed(&topo, w, ok);
                state.probing.store(false, Relaxed);
            });
        }
        router.tick();
    }
}

/// Sends worker `w` of `topo` a one-token request; true if it ends with END.
async fn probe(topo: &Topology, w: WorkerId) -> bool {
    let entry = &topo.config.workers[w];
    let Some(model) = entry.models.first() else {
        return false;
    };
    let Some(conn) = topo.workers[w].links.connection() else {
        return false;
    };
    let mut headers = RequestHeaders::new(model.clone());
    headers.max_tokens = Some(1);
    let mut chunks = [
        Frame::Headers(headers).to_bytes(),
        Frame::Body(Bytes::from_static(b"meridian health probe")).to_bytes(),
    ];
    let exchange = async {
        let (mut send, mut recv) = conn.open_bi().await.ok()?;
        send.write_all_chunks(&mut chunks).await.ok()?;
        send.finish().ok()?;
        let mut tracker = ResponseTracker::new();
        while let Some(chunk) = recv.read_chunk(usize::MAX, true).await.ok()? {
            tracker.on_chunk(&chunk.bytes).ok()?;
        }
        Some(tracker.complete() && !tracker.ended_with_error())
    };
    let ok = tokio::time::timeout(PROBE_TIMEOUT, exchange)
        .await
        .ok()
        .flatten()
        .unwrap_or(false);
    tracing::debug!(worker = %entry.name, ok, "probe");
    ok
}
