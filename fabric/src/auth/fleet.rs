//! Fleet-wide tenant limits through Redis (`[limits] redis`), for tenants whose
//! `requests_per_s` or `tokens_per_min` should hold across every edge rather than per edge.
//!
//! The request path never waits for Redis. Each admission adds one to a local atomic; a
//! background task on every edge, each `sync_interval`, adds what it admitted to the fleet's
//! counter for the current wall-clock window (`INCRBY`, one-second windows for requests,
//! one-minute windows for tokens) and reads the fleet total back. A tenant whose fleet total
//! reached its limit is blocked on this edge until the window ends (one atomic load per
//! admission). The local buckets keep enforcing the per-edge limit throughout.
//!
//! Failure: when Redis is down, slow (no answer within `timeout_ms`) or unreachable, edges
//! fail **open to their local limits** — each still admits at most the tenant's rate, so a
//! fleet of N edges admits at most N × the rate until Redis is back. Between syncs the fleet
//! can overshoot by what N edges admit in one sync interval.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tracing::{info, warn};

use super::Auth;
use crate::config::SharedLimitSettings;
use crate::redis::{cmd, Redis, RedisError, Reply};

/// One tenant's fleet-wide limit state on this edge.
#[derive(Debug)]
pub(crate) struct Fleet {
    /// Requests per one-second window, fleet-wide.
    requests: Option<u64>,
    /// Tokens per one-minute window, fleet-wide.
    tokens: Option<u64>,
    /// Admitted here since the last sync.
    pending_requests: AtomicU64,
    /// Tokens generated here since the last sync.
    pending_tokens: AtomicU64,
    /// Refuse until this instant (nanoseconds on the limits' clock): the fleet is at its limit.
    blocked_until: AtomicU64,
}

impl Fleet {
    pub(crate) fn new(requests_per_s: Option<f64>, tokens_per_min: Option<u64>) -> Option<Fleet> {
        (requests_per_s.is_some() || tokens_per_min.is_some()).then(|| Fleet {
            requests: requests_per_s.map(|r| r.ceil() as u64),
            tokens: tokens_per_min,
            pending_requests: AtomicU64::new(0),
            pending_tokens: AtomicU64::new(0),
            blocked_until: AtomicU64::new(0),
        })
    }

    /// Nanoseconds until the fleet admits this tenant again (0: it does).
    pub(crate) fn blocked_for(&self, now_ns: u64) -> u64 {
        self.blocked_until.load(Relaxed).saturating_sub(now_ns)
    }

    pub(crate) fn admitted(&self) {
        self.pending_requests.fetch_add(1, Relaxed);
    }

    pub(crate) fn generated(&self, tokens: u64) {
        let _ = self
            .pending_tokens
            .fetch_update(Relaxed, Relaxed, |p| Some(p.saturating_add(tokens)));
    }
}

impl Auth {
    /// One sync with Redis at wall-clock `now_unix_ms` and limits-clock `now_ns`: adds what
    /// this edge admitted since the last sync to the fleet's window counters and blocks each
    /// tenant whose fleet total reached its limit until its window ends. Without a
    /// connection (`None`), or on error, the counts since the last sync are dropped: an
    /// outage never lands in one later window (fail open to the local limits).
    pub async fn sync_fleet(
        &self,
        redis: Option<&mut Redis>,
        prefix: &str,
        now_unix_ms: u64,
        now_ns: u64,
    ) -> Result<(), RedisError> {
        let (sec, min) = (now_unix_ms / 1000, now_unix_ms / 60_000);
        let mut commands = Vec::new();
        let mut plan = Vec::new();
        for t in &self.tenants {
            let Some(f) = &t.fleet else { continue };
            // Redis counters are i64.
            let reqs = f.pending_requests.swap(0, Relaxed).min(i64::MAX as u64 / 2);
            let toks = f.pending_tokens.swap(0, Relaxed).min(i64::MAX as u64 / 2);
            // Per limit: add this edge's count to the window's counter (reading the fleet
            // total back), and let the counter expire after its window.
            let windows = [
                (f.requests.is_some(), "r", sec, reqs, &b"5000"[..]),
                (f.tokens.is_some(), "t", min, toks, &b"180000"[..]),
            ];
            for (_, kind, window, count, ttl_ms) in windows.into_iter().filter(|w| w.0) {
                let key = format!("{prefix}:{}:{kind}:{window}", t.name());
                let count = count.to_string();
                commands.push(cmd([b"INCRBY", key.as_bytes(), count.as_bytes()]));
                commands.push(cmd([b"PEXPIRE", key.as_bytes(), ttl_ms]));
            }
            plan.push(f);
        }
        let Some(redis) = redis else {
            return Err(RedisError::Io(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "no connection to redis",
            )));
        };
        if commands.is_empty() {
            return Ok(());
        }
        let replies = redis.pipeline(&commands).await?;
        let mut replies = replies.into_iter();
        let mut next_total = || match replies.next() {
            Some(Reply::Int(n)) => {
                let _ = replies.next(); // PEXPIRE's answer
                Ok(u64::try_from(n).unwrap_or(0))
            }
            _ => Err(RedisError::Protocol("INCRBY did not answer an integer")),
        };
        let ms = 1_000_000u64;
        for f in plan {
            let mut until = 0;
            if let Some(limit) = f.requests {
                if next_total()? >= limit {
                    until = now_ns + (1000 - now_unix_ms % 1000) * ms;
                }
            }
            if let Some(limit) = f.tokens {
                if next_total()? >= limit {
                    until = until.max(now_ns + (60_000 - now_unix_ms % 60_000) * ms);
                }
            }
            if until > 0 {
                f.blocked_until.fetch_max(until, Relaxed);
            }
        }
        Ok(())
    }
}

/// Syncs the running tenants' fleet counts with Redis every `settings.sync_interval` until `stop` resolves,
/// reconnecting after failures (logged once per outage).
pub(crate) async fn run(
    router: &crate::route::Router,
    settings: &SharedLimitSettings,
    epoch: tokio::time::Instant,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(settings.sync_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut conn: Option<Redis> = None;
    let mut up = true;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => return,
        }
        if conn.is_none() {
            conn = Redis::connect(&settings.addr, settings.timeout).await.ok();
        }
        let now_unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let now_ns = epoch.elapsed().as_nanos() as u64;
        // The tenants of the running config (a reload may have changed them).
        let result = router
            .topology()
            .auth
            .sync_fleet(conn.as_mut(), &settings.key_prefix, now_unix_ms, now_ns)
            .await;
        match result {
            Ok(()) if !up => {
                info!(redis = %settings.addr, "shared limits: redis reachable again");
                up = true;
            }
            Ok(()) => {}
            Err(e) => {
                conn = None;
                if up {
                    warn!(redis = %settings.addr, "shared limits: {e}; enforcing per-edge limits only until redis is back");
                    up = false;
                }
            }
        }
    }
}

/// Default interval between syncs.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_millis(100);
