//! `[auth]` (API keys, signing keys) and the per-tenant limits of `[tenants.NAME]`.

use std::collections::HashMap;

use toml::Spanned;

use super::ctx::Ctx;
use super::raw::{RawApiKey, RawAuth, RawLimits, RawSigningKey, RawTenant};
use crate::auth::{key, token};

/// `[auth]`: how the edge identifies tenants.
#[derive(Clone, Debug, Default)]
pub struct AuthSettings {
    /// Refuse requests without a credential (default `true`).
    pub required: bool,
    /// API keys (only their digests).
    pub api_keys: Vec<ApiKey>,
    /// Keys that verify signed tokens.
    pub signing_keys: Vec<SigningKey>,
}

/// One API key as configured: its id, tenant, SHA-256 digest and optional expiry.
#[derive(Clone, Debug)]
pub struct ApiKey {
    /// Key id (the `<id>` of `mk_<id>_<secret>`).
    pub id: String,
    /// The tenant it authenticates.
    pub tenant: String,
    /// SHA-256 of the whole key.
    pub sha256: [u8; 32],
    /// Expiry, Unix seconds.
    pub expires: Option<u64>,
}

/// An HS256 token-signing key.
#[derive(Clone)]
pub struct SigningKey {
    /// The `kid` tokens name.
    pub id: String,
    /// The shared secret (read from `secret_file`).
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// `[limits]`: tenants' `requests_per_s` and `tokens_per_min` hold across every edge that
/// shares this Redis (see `meridian_fabric::auth::fleet`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedLimitSettings {
    /// `host:port` of the Redis server.
    pub addr: String,
    /// How often each edge syncs its counts.
    pub sync_interval: std::time::Duration,
    /// Longest a Redis exchange may take before the edge treats Redis as down.
    pub timeout: std::time::Duration,
    /// Prefix of the counter keys.
    pub key_prefix: String,
}

/// A tenant's limits; `None` = unlimited.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TenantLimits {
    /// Sustained requests per second.
    pub requests_per_s: Option<f64>,
    /// Requests admitted at once after a quiet period (default: one second's worth).
    pub burst: Option<u32>,
    /// Requests in flight at once.
    pub max_concurrent: Option<u32>,
    /// Generated tokens per minute (reserved at admission as `max_tokens`, settled at the end).
    pub tokens_per_min: Option<u64>,
}

/// Unix seconds of a TOML offset date-time (`2027-01-31T00:00:00Z`).
fn unix_seconds(dt: &toml::value::Datetime) -> Option<u64> {
    let (date, time, offset) = (dt.date?, dt.time?, dt.offset?);
    // Days from the civil date (proleptic Gregorian), Howard Hinnant's algorithm.
    let (y, m, d) = (
        i64::from(date.year),
        i64::from(date.month),
        i64::from(date.day),
    );
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let offset_min = match offset {
        toml::value::Offset::Z => 0,
        toml::value::Offset::Custom { minutes } => i64::from(minutes),
    };
    let secs = days * 86_400
        + i64::from(time.hour) * 3600
        + i64::from(time.minute) * 60
        + i64::from(time.second)
        - offset_min * 60;
    u64::try_from(secs).ok()
}

impl Ctx<'_> {
    pub(super) fn auth(
        &mut self,
        raw: Option<&Spanned<RawAuth>>,
        tenants: &HashMap<String, Option<String>>,
    ) -> AuthSettings {
        let Some(raw) = raw else {
            self.err(Some(0..0), "no [auth] section: the edge requires credentials by default, so every request would be refused. Add API keys (`meridian keygen`) or signing keys under [auth], or set `[auth] required = false` on a trusted network");
            return AuthSettings::default();
        };
        let span = raw.span();
        let raw = raw.get_ref();
        let mut ids = HashMap::new();
        let api_keys: Vec<ApiKey> = raw
            .api_keys
            .iter()
            .filter_map(|k| self.api_key(k, tenants, &mut ids))
            .collect();
        let signing_keys: Vec<SigningKey> = raw
            .signing_keys
            .iter()
            .filter_map(|k| self.signing_key(k, &mut ids))
            .collect();
        let required = raw.required.unwrap_or(true);
        if required && raw.api_keys.is_empty() && raw.signing_keys.is_empty() {
            self.err(Some(span), "[auth] requires credentials but configures no `api_keys` or `signing_keys`: every request would be refused (add keys with `meridian keygen`, or set `required = false` on a trusted network)");
        }
        AuthSettings {
            required,
            api_keys,
            signing_keys,
        }
    }

    fn key_id(&mut self, id: &Spanned<String>, ids: &mut HashMap<String, ()>) {
        if !key::valid_id(id.get_ref()) {
            self.err(
                Some(id.span()),
                format!(
                    "key id `{}` must be 1-32 characters of a-z, 0-9, '-' or '.'",
                    id.get_ref()
                ),
            );
        }
        if ids.insert(id.get_ref().clone(), ()).is_some() {
            self.err(
                Some(id.span()),
                format!("duplicate key id `{}`", id.get_ref()),
            );
        }
    }

    fn api_key(
        &mut self,
        k: &Spanned<RawApiKey>,
        tenants: &HashMap<String, Option<String>>,
        ids: &mut HashMap<String, ()>,
    ) -> Option<ApiKey> {
        let k = k.get_ref();
        self.key_id(&k.id, ids);
        if !tenants.contains_key(k.tenant.get_ref()) {
            self.err(
                Some(k.tenant.span()),
                format!(
                    "API key `{}` is for unknown tenant `{}`: add it under [tenants]",
                    k.id.get_ref(),
                    k.tenant.get_ref()
                ),
            );
        }
        let sha256 = key::parse_digest(k.sha256.get_ref());
        if sha256.is_none() {
            self.err(
                Some(k.sha256.span()),
                "sha256 must be the 64 hex digits `meridian keygen` prints (the digest, never the key)",
            );
        }
        let expires = k.expires.as_ref().and_then(|e| {
            let secs = unix_seconds(e.get_ref());
            if secs.is_none() {
                self.err(
                    Some(e.span()),
                    "expires must be a date-time with an offset, e.g. 2027-01-31T00:00:00Z",
                );
            }
            secs
        });
        Some(ApiKey {
            id: k.id.get_ref().clone(),
            tenant: k.tenant.get_ref().clone(),
            sha256: sha256?,
            expires,
        })
    }

    fn signing_key(
        &mut self,
        k: &Spanned<RawSigningKey>,
        ids: &mut HashMap<String, ()>,
    ) -> Option<SigningKey> {
        let k = k.get_ref();
        self.key_id(&k.id, ids);
        let path = self.path(&k.secret_file);
        let secret = match std::fs::read_to_string(&path) {
            Ok(text) => token::parse_secret(&text),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        };
        match secret {
            Ok(secret) => Some(SigningKey {
                id: k.id.get_ref().clone(),
                secret,
            }),
            Err(msg) => {
                self.err(Some(k.secret_file.span()), format!("secret_file: {msg}"));
                None
            }
        }
    }

    pub(super) fn shared_limits(
        &mut self,
        raw: Option<&Spanned<RawLimits>>,
    ) -> Option<SharedLimitSettings> {
        let l = raw?.get_ref();
        let addr = l.redis.get_ref();
        let hostport = addr
            .strip_prefix("redis://")
            .unwrap_or(addr)
            .trim_end_matches('/');
        let ok = hostport
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if !ok {
            self.err(
                Some(l.redis.span()),
                "redis must be `host:port` or `redis://host:port`, e.g. \"127.0.0.1:6379\"",
            );
        }
        let ms = |cx: &mut Self,
                  v: &Option<Spanned<u64>>,
                  what: &str,
                  range: std::ops::Range<u64>,
                  d: u64| {
            std::time::Duration::from_millis(cx.count(v.as_ref(), what, range, d))
        };
        let prefix = l
            .key_prefix
            .as_ref()
            .map_or("meridian".to_owned(), |p| p.get_ref().clone());
        if prefix.is_empty() || prefix.contains(char::is_whitespace) {
            if let Some(p) = &l.key_prefix {
                self.err(
                    Some(p.span()),
                    "key_prefix must be non-empty without spaces",
                );
            }
        }
        Some(SharedLimitSettings {
            addr: hostport.to_owned(),
            sync_interval: ms(
                self,
                &l.sync_interval_ms,
                "sync_interval_ms",
                10..10_001,
                100,
            ),
            timeout: ms(self, &l.timeout_ms, "timeout_ms", 1..10_001, 50),
            key_prefix: prefix,
        })
    }

    pub(super) fn tenant_limits(&mut self, t: &RawTenant) -> TenantLimits {
        let requests_per_s = t.requests_per_s.as_ref().and_then(|r| {
            let v = *r.get_ref();
            if !(v.is_finite() && v > 0.0 && v <= 1e6) {
                self.err(
                    Some(r.span()),
                    "requests_per_s must be > 0 and at most 1000000",
                );
                return None;
            }
            Some(v)
        });
        let burst = t
            .burst
            .as_ref()
            .map(|b| self.count(Some(b), "burst", 1..1_000_001, 1) as u32);
        if burst.is_some() && requests_per_s.is_none() {
            if let Some(b) = &t.burst {
                self.err(Some(b.span()), "burst needs requests_per_s");
            }
        }
        TenantLimits {
            requests_per_s,
            burst,
            max_concurrent: t
                .max_concurrent
                .as_ref()
                .map(|m| self.count(Some(m), "max_concurrent", 1..1_000_001, 1) as u32),
            tokens_per_min: t
                .tokens_per_min
                .as_ref()
                .map(|m| self.count(Some(m), "tokens_per_min", 1..1_000_000_001, 1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_datetimes_to_unix_seconds() {
        let dt = |s: &str| s.parse::<toml::value::Datetime>().unwrap();
        assert_eq!(unix_seconds(&dt("1970-01-01T00:00:00Z")), Some(0));
        assert_eq!(
            unix_seconds(&dt("2027-01-31T12:30:00Z")),
            Some(1_801_398_600)
        );
        assert_eq!(
            unix_seconds(&dt("2027-01-31T14:30:00+02:00")),
            Some(1_801_398_600)
        );
        assert_eq!(unix_seconds(&dt("2027-01-31")), None, "no time");
        assert_eq!(unix_seconds(&dt("2027-01-31T00:00:00")), None, "no offset");
    }
}
