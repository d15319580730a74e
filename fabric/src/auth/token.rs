//! Signed tokens: compact JWTs (RFC 7519) signed with HMAC-SHA256 (`alg` `HS256`), verified
//! locally by every edge with a shared signing key, so a fleet of edges needs no database on
//! the request path. Header: `{"alg":"HS256","typ":"JWT","kid":"<signing key id>"}`; claims:
//! `sub` (tenant, required), `exp` (Unix seconds, required), optional `nbf` and `iat`.
//! Any JWT library can issue them; `meridian token` does too.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use ring::hmac;
use serde::{Deserialize, Serialize};

use super::AuthError;

/// Most clock skew tolerated for `nbf` (a token from a fast clock), seconds. `exp` is
/// enforced exactly.
pub const NBF_LEEWAY_SECS: u64 = 30;

#[derive(Deserialize, Serialize)]
struct Header<'a> {
    alg: &'a str,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<&'a str>,
    kid: &'a str,
}

#[derive(Deserialize, Serialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
}

/// A token's verified contents.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified {
    /// The tenant (`sub`).
    pub tenant: String,
    /// Expiry, Unix seconds.
    pub expires: u64,
}

/// Whether `s` is shaped like a JWT (three dot-separated parts).
pub fn looks_like_jwt(s: &str) -> bool {
    s.bytes().filter(|&b| b == b'.').count() == 2
}

/// The `kid` of a JWT, without verifying anything.
pub fn key_id(token: &str) -> Result<String, AuthError> {
    let (header, _) = token.split_once('.').ok_or(AuthError::Malformed)?;
    let raw = B64.decode(header).map_err(|_| AuthError::Malformed)?;
    let h: Header<'_> = serde_json::from_slice(&raw).map_err(|_| AuthError::Malformed)?;
    if h.alg != "HS256" {
        return Err(AuthError::UnsupportedAlgorithm);
    }
    Ok(h.kid.to_owned())
}

/// Verifies `token`'s signature with `key` and its time claims at `now` (Unix seconds).
pub fn verify(token: &str, key: &hmac::Key, now: u64) -> Result<Verified, AuthError> {
    let (signed, sig) = token.rsplit_once('.').ok_or(AuthError::Malformed)?;
    let sig = B64.decode(sig).map_err(|_| AuthError::Malformed)?;
    // Constant-time comparison inside ring.
    hmac::verify(key, signed.as_bytes(), &sig).map_err(|_| AuthError::BadSignature)?;
    let (_, claims) = signed.split_once('.').ok_or(AuthError::Malformed)?;
    let raw = B64.decode(claims).map_err(|_| AuthError::Malformed)?;
    let c: Claims = serde_json::from_slice(&raw).map_err(|_| AuthError::Malformed)?;
    if now >= c.exp {
        return Err(AuthError::Expired);
    }
    if c.nbf.is_some_and(|nbf| nbf > now + NBF_LEEWAY_SECS) {
        return Err(AuthError::NotYetValid);
    }
    Ok(Verified {
        tenant: c.sub,
        expires: c.exp,
    })
}

/// Issues a token for `tenant` signed by key `kid` (`secret`), valid from `now` until
/// `expires` (Unix seconds).
pub fn issue(kid: &str, secret: &[u8], tenant: &str, now: u64, expires: u64) -> String {
    let header = Header {
        alg: "HS256",
        typ: Some("JWT"),
        kid,
    };
    let claims = Claims {
        sub: tenant.to_owned(),
        exp: expires,
        nbf: None,
        iat: Some(now),
    };
    let enc = |v: &[u8]| B64.encode(v);
    let signed = format!(
        "{}.{}",
        enc(&serde_json::to_vec(&header).expect("serialisable")),
        enc(&serde_json::to_vec(&claims).expect("serialisable"))
    );
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let sig = hmac::sign(&key, signed.as_bytes());
    format!("{signed}.{}", enc(sig.as_ref()))
}

/// Reads a signing-key file: `hs256:<base64url secret>` (what `meridian keygen --signing`
/// writes). The secret must be at least 32 bytes.
pub fn parse_secret(text: &str) -> Result<Vec<u8>, String> {
    let body = text
        .trim()
        .strip_prefix("hs256:")
        .ok_or("a signing key file holds `hs256:<base64url secret>`")?;
    let secret = B64
        .decode(body)
        .map_err(|_| "the secret is not valid base64url")?;
    if secret.len() < 32 {
        return Err(format!(
            "the secret is {} bytes; HS256 needs at least 32",
            secret.len()
        ));
    }
    Ok(secret)
}

/// A signing-key file's text for `secret`.
pub fn format_secret(secret: &[u8]) -> String {
    format!("hs256:{}\n", B64.encode(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_verify_and_every_rejection() {
        let secret = [7u8; 32];
        let key = hmac::Key::new(hmac::HMAC_SHA256, &secret);
        let t = issue("fleet-1", &secret, "bund", 1_000, 2_000);
        assert!(looks_like_jwt(&t));
        assert_eq!(key_id(&t).unwrap(), "fleet-1");
        assert_eq!(
            verify(&t, &key, 1_500).unwrap(),
            Verified {
                tenant: "bund".into(),
                expires: 2_000
            }
        );
        assert_eq!(verify(&t, &key, 2_000), Err(AuthError::Expired));
        let other = hmac::Key::new(hmac::HMAC_SHA256, &[8u8; 32]);
        assert_eq!(verify(&t, &other, 1_500), Err(AuthError::BadSignature));
        // A changed claim breaks the signature.
        let (h, rest) = t.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        let forged_claims = B64.encode(br#"{"sub":"acme","exp":9999999999}"#);
        let forged = format!("{h}.{forged_claims}.{sig}");
        assert_eq!(verify(&forged, &key, 1_500), Err(AuthError::BadSignature));
        // alg "none" and others are refused before any key is looked up.
        let none = format!(
            "{}.{}.",
            B64.encode(br#"{"alg":"none","kid":"fleet-1"}"#),
            forged_claims
        );
        assert_eq!(key_id(&none), Err(AuthError::UnsupportedAlgorithm));
        assert_eq!(key_id("a.b.c"), Err(AuthError::Malformed));
        assert_eq!(parse_secret(&format_secret(&secret)).unwrap(), secret);
        assert!(parse_secret("hs256:c2hvcnQ").is_err());
    }
}
