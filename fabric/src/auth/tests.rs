use std::path::Path;

use meridian_protocol::{Credential, ErrorCode, RequestHeaders};
use proptest::prelude::*;

use super::*;
use crate::config::parse_config;

const NOW: u64 = 1_800_000_000;

fn config(extra: &str) -> (Config, Vec<(String, String)>) {
    let keys: Vec<(String, String)> = [("a1", "alpha"), ("a2", "alpha"), ("b1", "beta")]
        .iter()
        .map(|(id, t)| (key::generate(id), (*t).to_owned()))
        .collect();
    let mut toml = String::from(
        r#"
[[region]]
name = "r1"
[[region]]
name = "r2"
[residency]
only-r2 = ["r2"]
[tenants]
alpha = { requests_per_s = 5, burst = 2, max_concurrent = 3, tokens_per_min = 600 }
beta = { residency = "only-r2" }
[auth]
"#,
    );
    toml += extra;
    for (k, tenant) in &keys {
        let id = key::key_id(k).unwrap();
        toml += &format!(
            "[[auth.api_keys]]\nid = \"{id}\"\ntenant = \"{tenant}\"\nsha256 = \"{}\"\n",
            key::hex(&key::digest(k))
        );
    }
    toml += "[[auth.api_keys]]\nid = \"old\"\ntenant = \"alpha\"\nsha256 = \"";
    toml += &key::hex(&key::digest("mk_old_secret"));
    toml += "\"\nexpires = 2020-01-01T00:00:00Z\n";
    let cfg = parse_config(&toml, Path::new("auth.toml")).expect("valid");
    (cfg, keys)
}

fn headers(credential: Option<&str>, tenant: Option<&str>) -> RequestHeaders {
    let mut h = RequestHeaders::new("m");
    h.credential = credential.map(|c| Credential(c.into()));
    h.tenant = tenant.map(Into::into);
    h
}

fn code(r: Result<Admission<'_>, ErrorFrame>) -> ErrorCode {
    r.expect_err("refused").code
}

#[test]
fn keys_identify_their_tenant_and_every_bad_credential_is_unauthorized() {
    let (cfg, keys) = config("");
    let auth = Auth::new(&cfg);
    let a = auth
        .admit(&headers(Some(&keys[1].0), None), NOW, 0)
        .unwrap();
    assert_eq!(a.tenant(), Some("alpha"), "a second active key (rotation)");
    drop(a);
    let b = auth
        .admit(&headers(Some(&keys[2].0), Some("beta")), NOW, 0)
        .unwrap();
    assert_eq!(b.tenant(), Some("beta"));
    let mut wrong_secret = keys[0].0.clone();
    wrong_secret.push('x');
    for (cred, claim, why) in [
        (None, None, "missing"),
        (Some("hello"), None, "malformed"),
        (Some("mk_zz_secret"), None, "unknown id"),
        (Some(wrong_secret.as_str()), None, "wrong secret"),
        (Some("mk_old_secret"), None, "expired"),
        (
            Some(keys[2].0.as_str()),
            Some("alpha"),
            "claims another tenant",
        ),
    ] {
        let r = auth.admit(&headers(cred, claim), NOW, 0);
        assert_eq!(code(r), ErrorCode::UNAUTHORIZED, "{why}");
    }
    assert_eq!(
        auth.authenticate("mk_old_secret", NOW),
        Err(AuthError::Expired)
    );
}

#[test]
fn tokens_verify_against_configured_signing_keys() {
    let dir = std::env::temp_dir().join(format!("meridian-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = key::random::<32>();
    std::fs::write(dir.join("fleet.key"), token::format_secret(&secret)).unwrap();
    let file = dir.join("edge.toml");
    let toml = "[[region]]\nname = \"r1\"\n[tenants]\nalpha = {}\n[auth]\n\
                [[auth.signing_keys]]\nid = \"fleet-1\"\nsecret_file = \"fleet.key\"\n";
    let cfg = parse_config(toml, &file).expect("valid");
    let auth = Auth::new(&cfg);
    let good = token::issue("fleet-1", &secret, "alpha", NOW, NOW + 60);
    assert_eq!(auth.authenticate(&good, NOW), Ok(0));
    assert_eq!(auth.authenticate(&good, NOW + 60), Err(AuthError::Expired));
    let other_kid = token::issue("fleet-2", &secret, "alpha", NOW, NOW + 60);
    assert_eq!(
        auth.authenticate(&other_kid, NOW),
        Err(AuthError::UnknownSigningKey)
    );
    let forged = token::issue("fleet-1", &[1u8; 32], "alpha", NOW, NOW + 60);
    assert_eq!(
        auth.authenticate(&forged, NOW),
        Err(AuthError::BadSignature)
    );
    let stranger = token::issue("fleet-1", &secret, "mallory", NOW, NOW + 60);
    assert_eq!(
        auth.authenticate(&stranger, NOW),
        Err(AuthError::UnknownTenant("mallory".into()))
    );
}

#[test]
fn limits_refuse_with_retry_after_and_release() {
    let (cfg, keys) = config("");
    let auth = Auth::new(&cfg);
    let mut h = headers(Some(&keys[0].0), None);
    h.max_tokens = Some(1);
    // Burst 2 at 5/s: two at once, the third waits 200 ms.
    let a1 = auth.admit(&h, NOW, 0).unwrap();
    let a2 = auth.admit(&h, NOW, 0).unwrap();
    let e = auth.admit(&h, NOW, 0).unwrap_err();
    assert_eq!(
        (e.code, e.retry_after_ms),
        (ErrorCode::RATE_LIMITED, Some(200))
    );
    drop((a1, a2));
    // Concurrency 3.
    let s = 1_000_000_000;
    let held: Vec<_> = (0..3)
        .map(|i| auth.admit(&h, NOW, s * (10 + i)).unwrap())
        .collect();
    assert_eq!(code(auth.admit(&h, NOW, s * 20)), ErrorCode::RATE_LIMITED);
    drop(held);
    // Tokens per minute 600: a 500-token reservation settled at 100 leaves 500.
    let mut big = headers(Some(&keys[0].0), None);
    big.max_tokens = Some(500);
    let t = s * 100;
    let mut a = auth.admit(&big, NOW, t).unwrap();
    a.settle(100);
    drop(a);
    let _b = auth.admit(&big, NOW, t + s).unwrap();
    assert_eq!(
        code(auth.admit(&big, NOW, t + s * 2)),
        ErrorCode::RATE_LIMITED
    );
}

#[test]
fn without_required_auth_a_claim_is_used_but_a_credential_still_decides() {
    let (cfg, keys) = config("required = false\n");
    let auth = Auth::new(&cfg);
    let anon = auth.admit(&headers(None, None), NOW, 0).unwrap();
    assert_eq!(anon.tenant(), None);
    let claimed = auth.admit(&headers(None, Some("beta")), NOW, 0).unwrap();
    assert_eq!(claimed.tenant(), Some("beta"));
    assert_eq!(
        code(auth.admit(&headers(None, Some("nobody")), NOW, 0)),
        ErrorCode::UNAUTHORIZED
    );
    assert_eq!(
        code(auth.admit(&headers(Some(&keys[0].0), Some("beta")), NOW, 0)),
        ErrorCode::UNAUTHORIZED
    );
}

proptest! {
    /// Whatever a request claims, a credential for one tenant only ever admits that tenant:
    /// never another's residency policy or limit state.
    #[test]
    fn a_credential_never_reaches_another_tenant(
        which in 0usize..3,
        claim in proptest::option::of(prop_oneof![
            Just("alpha".to_owned()), Just("beta".to_owned()), "[a-z]{1,8}"
        ]),
        tamper in proptest::option::of((0usize..60, any::<u8>())),
    ) {
        let (cfg, keys) = config("");
        let auth = Auth::new(&cfg);
        let (mut cred, owner) = keys[which].clone();
        if let Some((pos, byte)) = tamper {
            let mut b = cred.into_bytes();
            let pos = pos % b.len();
            b[pos] = b'a' + byte % 26;
            cred = String::from_utf8(b).unwrap();
        }
        let real = auth.authenticate(&cred, NOW).ok();
        let admitted = auth
            .admit(&headers(Some(&cred), claim.as_deref()), NOW, 0)
            .map(|a| a.tenant().map(str::to_owned));
        match admitted {
            Ok(tenant) => {
                prop_assert_eq!(tenant.as_deref(), Some(owner.as_str()));
                prop_assert_eq!(real.map(|t| auth.tenants[t].name()), Some(owner.as_str()));
                prop_assert!(claim.is_none() || claim.as_deref() == Some(owner.as_str()));
            }
            Err(e) => prop_assert!(matches!(e.code, ErrorCode::UNAUTHORIZED | ErrorCode::RATE_LIMITED)),
        }
    }
}

#[test]
fn concurrent_admissions_never_exceed_one_burst() {
    // 8 threads race 200 admissions each at one instant against a burst of 2 (alpha:
    // requests_per_s = 5, burst = 2, max_concurrent = 3): exactly the burst is admitted.
    let (cfg, keys) = config("");
    let auth = Auth::new(&cfg);
    let mut h = headers(Some(&keys[0].0), None);
    h.max_tokens = Some(1);
    let admitted = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..200 {
                    if auth.admit(&h, NOW, 5_000_000_000).is_ok() {
                        admitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert_eq!(admitted.into_inner(), 2);
}
