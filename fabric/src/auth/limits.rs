//! Per-tenant limits: requests per second and tokens per minute as GCRA buckets, concurrent
//! requests as an in-flight counter. One compare-and-swap each at admission, one atomic at
//! the end; no lock, no allocation.

use meridian_protocol::{ErrorCode, ErrorFrame};

use super::fleet::Fleet;
use crate::config::TenantLimits;
use crate::sync::{Bucket, InFlight, LoadGuard};

/// Tokens reserved for a request that gives no `max_tokens` (settled to the real count).
pub const DEFAULT_TOKEN_RESERVE: u64 = 1024;

const NS_PER_SEC: f64 = 1e9;

/// One tenant's live limit state.
#[derive(Debug)]
pub struct TenantState {
    name: String,
    /// The limits it enforces (a reload keeps the state of a tenant whose limits stayed).
    pub(super) limits: TenantLimits,
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
    concurrent: Option<(InFlight, u64)>,
    /// Fleet-wide state, with `[limits] redis`.
    pub(super) fleet: Option<Fleet>,
}

impl TenantState {
    pub(super) fn new(name: &str, limits: Option<&TenantLimits>, fleet: bool) -> Self {
        let l = limits.cloned().unwrap_or_default();
        let fleet = fleet
            .then(|| Fleet::new(l.requests_per_s, l.tokens_per_min))
            .flatten();
        TenantState {
            name: name.to_owned(),
            limits: l.clone(),
            requests: l.requests_per_s.map(|rate| {
                let burst = l
                    .burst
                    .map_or_else(|| rate.ceil().max(1.0) as u64, u64::from);
                Bucket::new((NS_PER_SEC / rate) as u64, burst)
            }),
            tokens: l
                .tokens_per_min
                .map(|per_min| Bucket::new((60.0 * NS_PER_SEC / per_min as f64) as u64, per_min)),
            concurrent: l.max_concurrent.map(|m| (InFlight::new(), u64::from(m))),
            fleet,
        }
    }

    /// Whether `limits` include one the fleet shares (with `[limits] redis`).
    pub(super) fn fleet_limited(limits: Option<&TenantLimits>) -> bool {
        limits.is_some_and(|l| l.requests_per_s.is_some() || l.tokens_per_min.is_some())
    }

    /// The tenant's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// An admitted request: holds its tenant's concurrency slot and token reservation until
/// dropped; [`Admission::settle`] corrects the reservation to the tokens really generated.
#[derive(Debug)]
pub struct Admission<'a> {
    tenant: Option<&'a TenantState>,
    _slot: Option<LoadGuard<'a>>,
    reserved: u64,
}

fn limited(what: &str, wait_ns: u64) -> ErrorFrame {
    let ms = wait_ns.div_ceil(1_000_000).max(1);
    ErrorFrame::new(
        ErrorCode::RATE_LIMITED,
        format!("tenant {what} limit reached; retry after {ms} ms"),
    )
    .retry_after(ms)
}

impl<'a> Admission<'a> {
    pub(super) fn new(
        tenant: Option<&'a TenantState>,
        max_tokens: Option<u64>,
        now_ns: u64,
    ) -> Result<Self, ErrorFrame> {
        let Some(t) = tenant else {
            return Ok(Admission {
                tenant: None,
                _slot: None,
                reserved: 0,
            });
        };
        if let Some(wait) = t.fleet.as_ref().map(|f| f.blocked_for(now_ns)) {
            if wait > 0 {
                return Err(limited("fleet-wide", wait));
            }
        }
        let slot = match &t.concurrent {
            Some((n, max)) => Some(n.try_acquire(*max).ok_or_else(|| {
                ErrorFrame::new(
                    ErrorCode::RATE_LIMITED,
                    format!("tenant concurrency limit of {max} requests reached"),
                )
                .retry_after(100)
            })?),
            None => None,
        };
        if let Some(b) = &t.requests {
            b.try_take(now_ns, 1)
                .map_err(|wait| limited("request rate", wait))?;
        }
        let mut reserved = 0;
        if let Some(b) = &t.tokens {
            let want = max_tokens.unwrap_or(DEFAULT_TOKEN_RESERVE).min(b.burst());
            if let Err(wait) = b.try_take(now_ns, want) {
                // The request-rate unit was spent; give it back so a refused request costs
                // nothing.
                if let Some(r) = &t.requests {
                    r.refund(1);
                }
                return Err(limited("tokens-per-minute", wait));
            }
            reserved = want;
        }
        if let Some(f) = &t.fleet {
            f.admitted();
        }
        Ok(Admission {
            tenant: Some(t),
            _slot: slot,
            reserved,
        })
    }

    /// The most tokens the request may generate under its tenant's tokens-per-minute limit:
    /// what was reserved for it (`None`: the tenant has no token limit).
    pub fn token_cap(&self) -> Option<u64> {
        self.tenant
            .and_then(|t| t.tokens.as_ref())
            .map(|_| self.reserved)
    }

    /// The admitted tenant (`None`: anonymous on an edge that allows it).
    pub fn tenant(&self) -> Option<&'a str> {
        self.tenant.map(TenantState::name)
    }

    /// Settles the token reservation at the `used` tokens really generated: the rest is
    /// given back; more than reserved is charged (it shows in the tenant's next admissions).
    pub fn settle(&mut self, used: u64) {
        if let Some(f) = self.tenant.and_then(|t| t.fleet.as_ref()) {
            f.generated(used);
        }
        let Some(b) = self.tenant.and_then(|t| t.tokens.as_ref()) else {
            return;
        };
        if used < self.reserved {
            b.refund(self.reserved - used);
        } else if used > self.reserved {
            b.charge(used - self.reserved);
        }
        self.reserved = 0;
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        // Not settled: nothing was generated (the request failed before its first token).
        self.settle(0);
    }
}
