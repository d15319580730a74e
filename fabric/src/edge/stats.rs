//! Edge counters (atomics; the admin `/metrics` endpoint of a later issue exports them).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use meridian_protocol::ErrorCode;

/// Edge-wide counters.
#[derive(Debug, Default)]
pub struct EdgeStats {
    /// Client connections accepted.
    pub connections: AtomicU64,
    /// Client connections refused at the connection limit.
    pub refused_connections: AtomicU64,
    /// Request streams accepted.
    pub requests: AtomicU64,
    /// TOKENS frames relayed.
    pub tokens: AtomicU64,
    /// Upstream attempts retried on another worker.
    pub retries: AtomicU64,
    /// Requests the client cancelled.
    pub cancelled: AtomicU64,
    /// Requests refused for residency.
    pub residency_rejections: AtomicU64,
    errors: [AtomicU64; 16],
}

impl EdgeStats {
    pub(crate) fn error(&self, code: ErrorCode) {
        let i = (code.0 as usize).min(self.errors.len() - 1);
        self.errors[i].fetch_add(1, Relaxed);
    }

    /// Errors sent to clients with `code` (codes ≥ 15 share the last slot).
    pub fn errors(&self, code: ErrorCode) -> u64 {
        self.errors[(code.0 as usize).min(self.errors.len() - 1)].load(Relaxed)
    }
}
