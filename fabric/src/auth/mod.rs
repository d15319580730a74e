//! Tenant identity and per-tenant limits at the edge (PROTOCOL.md §4.9).
//!
//! A request's tenant — and so its residency policy — comes from its credential, never from
//! what it claims: an API key (`mk_<id>_<secret>`, configs hold only its SHA-256) or a signed
//! token (an HS256 JWT verified locally). A claimed `tenant` that disagrees with the
//! credential is refused. Admission then applies the tenant's limits — requests per second,
//! concurrent requests, tokens per minute (reserved at admission, settled at the end) — with
//! lock-free atomics only ([`crate::sync::Bucket`], [`crate::sync::InFlight`]). Nothing here
//! runs per token.

pub mod fleet;
pub mod key;
mod limits;
pub mod token;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use meridian_protocol::{ErrorCode, ErrorFrame, RequestHeaders};
use ring::hmac;

pub use limits::{Admission, TenantState};

use crate::config::Config;

/// Why a credential was refused. Every variant answers UNAUTHORIZED (HTTP 401); the
/// message says what to fix, never anything about other tenants' keys.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No credential, and the edge requires one: send an API key or token.
    #[error("authentication required: send an API key or a signed token (`Authorization: Bearer …` on HTTP, the `credential` field on meridian/1)")]
    Missing,
    /// Neither an API key nor a token: check what is being sent.
    #[error("credential is neither an API key (mk_…) nor a signed token (JWT)")]
    Malformed,
    /// An API key whose id is not configured (or was revoked): use a current key.
    #[error("unknown or revoked API key")]
    UnknownKey,
    /// The key's id is known but the secret does not match: use the right key.
    #[error("invalid API key")]
    BadKey,
    /// The key or token has expired: rotate it.
    #[error("credential expired")]
    Expired,
    /// The token's `nbf` is in the future: check the issuer's clock.
    #[error("token not valid yet")]
    NotYetValid,
    /// The token's signature does not verify: it was not issued by a configured key.
    #[error("token signature does not verify")]
    BadSignature,
    /// Only HS256 tokens are accepted.
    #[error("token algorithm not accepted (HS256 only)")]
    UnsupportedAlgorithm,
    /// The token names a signing key this edge does not have.
    #[error("token signed by an unknown key")]
    UnknownSigningKey,
    /// The credential's tenant is not configured on this edge.
    #[error("credential names unknown tenant `{0}`")]
    UnknownTenant(String),
    /// The request claims another tenant than its credential's: drop the claim or use that
    /// tenant's credential.
    #[error("request claims tenant `{claimed}` but its credential is for another tenant")]
    TenantMismatch {
        /// The claimed tenant.
        claimed: String,
    },
}

struct KeyRecord {
    digest: [u8; 32],
    tenant: usize,
    expires: Option<u64>,
}

/// The edge's authenticator and per-tenant limit state.
pub struct Auth {
    required: bool,
    keys: HashMap<String, KeyRecord>,
    signing: HashMap<String, hmac::Key>,
    tenants: Vec<Arc<TenantState>>,
    tenant_ids: HashMap<String, usize>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("required", &self.required)
            .field("api_keys", &self.keys.len())
            .field("signing_keys", &self.signing.len())
            .field("tenants", &self.tenants.len())
            .finish()
    }
}

/// The wall clock in Unix seconds (credential expiry).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Auth {
    /// The authenticator for `config`'s `[auth]` and tenants.
    pub fn new(config: &Config) -> Auth {
        Self::carry(config, None)
    }

    /// The authenticator for `config` after a reload from `prev`: a tenant whose limits did
    /// not change keeps its limit state (buckets, requests in flight, fleet counts), so a
    /// reload neither resets nor tightens anyone's rate by itself.
    pub fn carry(config: &Config, prev: Option<&Auth>) -> Auth {
        let mut names: Vec<&String> = config.tenants.keys().collect();
        names.sort();
        let tenant_ids: HashMap<String, usize> = names
            .iter()
            .enumerate()
            .map(|(i, n)| ((*n).clone(), i))
            .collect();
        let fleet = config.shared_limits.is_some();
        let tenants = names
            .iter()
            .map(|n| {
                let limits = config.tenant_limits.get(*n);
                let kept = prev
                    .and_then(|p| p.tenant_ids.get(*n).map(|i| &p.tenants[*i]))
                    .filter(|t| {
                        t.limits == limits.cloned().unwrap_or_default()
                            && t.fleet.is_some() == (fleet && TenantState::fleet_limited(limits))
                    });
                kept.cloned()
                    .unwrap_or_else(|| Arc::new(TenantState::new(n, limits, fleet)))
            })
            .collect();
        let keys = config
            .auth
            .api_keys
            .iter()
            .filter_map(|k| {
                let tenant = *tenant_ids.get(&k.tenant)?;
                Some((
                    k.id.clone(),
                    KeyRecord {
                        digest: k.sha256,
                        tenant,
                        expires: k.expires,
                    },
                ))
            })
            .collect();
        let signing = config
            .auth
            .signing_keys
            .iter()
            .map(|k| (k.id.clone(), hmac::Key::new(hmac::HMAC_SHA256, &k.secret)))
            .collect();
        Auth {
            required: config.auth.required,
            keys,
            signing,
            tenants,
            tenant_ids,
        }
    }

    /// Whether requests without a credential are refused.
    pub fn required(&self) -> bool {
        self.required
    }

    /// The tenant a credential proves, at wall-clock time `now` (Unix seconds).
    pub fn authenticate(&self, credential: &str, now: u64) -> Result<usize, AuthError> {
        if let Some(id) = key::key_id(credential) {
            let rec = self.keys.get(id).ok_or(AuthError::UnknownKey)?;
            // Constant-time comparison of the digests.
            let got = key::digest(credential);
            if !key::digests_equal(&got, &rec.digest) {
                return Err(AuthError::BadKey);
            }
            if rec.expires.is_some_and(|e| now >= e) {
                return Err(AuthError::Expired);
            }
            return Ok(rec.tenant);
        }
        if token::looks_like_jwt(credential) {
            let kid = token::key_id(credential)?;
            let key = self.signing.get(&kid).ok_or(AuthError::UnknownSigningKey)?;
            let v = token::verify(credential, key, now)?;
            return self
                .tenant_ids
                .get(&v.tenant)
                .copied()
                .ok_or(AuthError::UnknownTenant(v.tenant));
        }
        Err(AuthError::Malformed)
    }

    /// Identifies a request's tenant and admits it under that tenant's limits. The error is
    /// the ERROR frame to answer with (UNAUTHORIZED, or RATE_LIMITED with a retry-after).
    /// `now_ns` is any monotonic clock in nanoseconds (the limits' time base).
    pub fn admit(
        &self,
        headers: &RequestHeaders,
        now_unix: u64,
        now_ns: u64,
    ) -> Result<Admission<'_>, ErrorFrame> {
        let tenant = self.identify(headers, now_unix)?;
        let state = tenant.map(|t| &*self.tenants[t]);
        Admission::new(state, headers.max_tokens, now_ns)
    }

    /// The tenant a request runs as (index into the tenants), or the UNAUTHORIZED answer.
    /// Cheap enough to run as soon as HEADERS arrive, before a prompt is buffered.
    pub fn identify(
        &self,
        headers: &RequestHeaders,
        now_unix: u64,
    ) -> Result<Option<usize>, ErrorFrame> {
        let unauthorized = |e: AuthError| ErrorFrame::new(ErrorCode::UNAUTHORIZED, e.to_string());
        let claimed = headers.tenant.as_deref();
        let tenant = match &headers.credential {
            Some(c) => {
                let t = self.authenticate(&c.0, now_unix).map_err(unauthorized)?;
                if claimed.is_some_and(|name| name != self.tenants[t].name()) {
                    return Err(unauthorized(AuthError::TenantMismatch {
                        claimed: claimed.unwrap_or_default().to_owned(),
                    }));
                }
                Some(t)
            }
            None if self.required => return Err(unauthorized(AuthError::Missing)),
            // `[auth] required = false`: an unauthenticated request runs as the tenant it
            // claims (a trusted network), or as no tenant.
            None => match claimed {
                Some(name) => Some(*self.tenant_ids.get(name).ok_or_else(|| {
                    ErrorFrame::new(ErrorCode::UNAUTHORIZED, format!("unknown tenant `{name}`"))
                })?),
                None => None,
            },
        };
        Ok(tenant)
    }
}

#[cfg(test)]
mod tests;
