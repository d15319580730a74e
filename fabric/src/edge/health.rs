//! The edge's health loop (off the request path): every `[health] score_interval_ms` it
//! probes ejected workers whose backoff has passed and publishes the scorer's region orders
//! (`route::score`) through the routing table's RCU cell.
//!
//! A probe is a real one-token request for the worker's first model, sent on one of its
//! upstream connections: the worker is readmitted only if it answers with END, which checks
//! the worker *and* its inference backend (a ping would only check the QUIC path).

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use meridian_protocol::{Frame, RequestHeaders};

use super::track::ResponseTracker;
use super::EdgeShared;
use crate::config::WorkerId;
use crate::route::Scorer;
use crate::shutdown::Shutdown;

/// Longest a probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs until shutdown.
pub(crate) async fn run(edge: Arc<EdgeShared>, shutdown: Shutdown) {
    let router = edge.router.clone();
    let mut scorer = Scorer::new(router.config());
    let probing: Arc<Vec<AtomicBool>> = Arc::new(
        (0..router.config().workers.len())
            .map(|_| AtomicBool::new(false))
            .collect(),
    );
    let mut tick = tokio::time::interval(router.config().health.score_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait() => return,
        }
        for w in router.due_probes() {
            if probing[w].swap(true, Relaxed) {
                continue;
            }
            let (edge, probing) = (edge.clone(), probing.clone());
            tokio::spawn(async move {
                let ok = probe(&edge, w).await;
                edge.router.probed(w, ok);
                probing[w].store(false, Relaxed);
            });
        }
        let prev = router.scored();
        let next = scorer.tick(&router, &prev, router.now_ms());
        router.publish(next);
    }
}

/// Sends worker `w` a one-token request; true if it ends with END.
async fn probe(edge: &EdgeShared, w: WorkerId) -> bool {
    let cfg = edge.router.config();
    let Some(model) = cfg.workers[w].models.first() else {
        return false;
    };
    let Some(conn) = edge.upstreams.connection(w) else {
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
    tracing::debug!(worker = %cfg.workers[w].name, ok, "probe");
    ok
}
