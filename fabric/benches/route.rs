//! Route decision and ring lookup micro-benchmarks: 5 regions × 64 workers, residency
//! filtering, bounded-load placement through the precomputed candidate table, against the
//! `consistent_hash` ring walk it fronts.

use std::fmt::Write;
use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use meridian_fabric::config::parse_config;
use meridian_fabric::route::ring::WorkerRing;
use meridian_fabric::route::{KeyedHash, RouteRequest, Router};
use std::hint::black_box;

const REGIONS: [&str; 5] = [
    "seoul",
    "tokyo",
    "frankfurt",
    "frankfurt-sovereign",
    "us-east",
];

fn topology() -> String {
    let mut s = String::from("[routing]\nring_key = \"000102030405060708090a0b0c0d0e0f\"\n");
    for r in REGIONS {
        let _ = write!(s, "[[region]]\nname = \"{r}\"\n");
    }
    s += "[areas]\njp = [\"seoul\", \"tokyo\"]\nde = [\"frankfurt\"]\n";
    s += "[residency]\nde-sovereign = [\"frankfurt-sovereign\"]\neu = [\"frankfurt\", \"frankfurt-sovereign\"]\n";
    s += "[tenants]\nbund = { residency = \"de-sovereign\" }\nacme = {}\n";
    s += "[auth]\nrequired = false\n";
    for (ri, r) in REGIONS.iter().enumerate() {
        for w in 0..64 {
            let _ = write!(
                s,
                "[[worker]]\nname = \"{r}-{w}\"\nregion = \"{r}\"\naddress = \"127.{ri}.{w}.1:4433\"\nmodels = [\"llama-3-8b\"]\npin = \"c.pem\"\n"
            );
        }
    }
    s
}

fn route(c: &mut Criterion) {
    let config = Arc::new(parse_config(&topology(), Path::new("bench.toml")).expect("valid"));
    let router = Router::new(config.clone());
    for w in 0..config.workers.len() {
        router.worker(w).set_healthy(true);
    }
    router.rebuild();
    let key = b"session-1234567890";
    let plain = RouteRequest {
        model: "llama-3-8b",
        area: Some("jp"),
        shard_key: key,
        ..Default::default()
    };
    c.bench_function("route/jp", |b| {
        b.iter(|| drop(black_box(router.route(black_box(&plain)).unwrap())))
    });
    // The sovereign tenant from Japan: two preferred regions filtered out by residency.
    let sovereign = RouteRequest {
        tenant: Some("bund"),
        ..plain
    };
    c.bench_function("route/jp_sovereign_tenant", |b| {
        b.iter(|| drop(black_box(router.route(black_box(&sovereign)).unwrap())))
    });

    let names: Vec<String> = (0..64).map(|i| format!("w{i}")).collect();
    let ring = WorkerRing::new(
        KeyedHash::new([3; 16]),
        names.iter().enumerate().map(|(i, n)| (i, n.as_str(), 1)),
        64,
    )
    .expect("non-empty");
    let loads = vec![0u64; 64];
    c.bench_function("ring/place_bounded_table", |b| {
        b.iter(|| black_box(ring.place(black_box(key), 1.25, 0, |w| loads[w], |_| true)))
    });
    c.bench_function("ring/consistent_hash_calc_candidates", |b| {
        b.iter(|| black_box(ring.order(black_box(key)).next()))
    });
}

/// Identity and limits per request (`Auth::admit`): an API key (SHA-256 + constant-time
/// compare), the same tenant with request-rate, concurrency and token limits, and an HS256
/// token (base64url + JSON + HMAC).
fn admission(c: &mut Criterion) {
    use meridian_fabric::auth::{token, Auth};
    use meridian_protocol::{Credential, RequestHeaders};
    let dir = std::env::temp_dir().join(format!("meridian-bench-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = [9u8; 32];
    std::fs::write(dir.join("fleet.key"), token::format_secret(&secret)).unwrap();
    let topo = meridian_fabric::demo::TOPOLOGY
        .replace(
            "acme = {}",
            "acme = { requests_per_s = 1000000, burst = 1000000, max_concurrent = 1000000, tokens_per_min = 1000000000 }",
        )
        .replace(
            "required = true",
            "required = true\n[[auth.signing_keys]]\nid = \"fleet\"\nsecret_file = \"fleet.key\"",
        );
    let cfg = parse_config(&topo, &dir.join("edge.toml")).unwrap();
    let auth = Auth::new(&cfg);
    let now = meridian_fabric::auth::unix_now();
    let headers = |cred: &str| {
        let mut h = RequestHeaders::new("llama-3-8b");
        h.credential = Some(Credential(cred.to_owned()));
        h.max_tokens = Some(16);
        h
    };
    let bund = headers(meridian_fabric::demo::demo_key("bund").unwrap());
    let acme = headers(meridian_fabric::demo::demo_key("acme").unwrap());
    let jwt = headers(&token::issue("fleet", &secret, "bund", now, now + 3600));
    let mut t = 0u64;
    let mut g = c.benchmark_group("admission");
    g.bench_function("api_key", |b| {
        b.iter(|| drop(black_box(auth.admit(black_box(&bund), now, 0).unwrap())))
    });
    g.bench_function("api_key_with_limits", |b| {
        b.iter(|| {
            t += 1_000;
            let mut a = auth.admit(black_box(&acme), now, t).unwrap();
            a.settle(16);
        })
    });
    g.bench_function("hs256_token", |b| {
        b.iter(|| drop(black_box(auth.admit(black_box(&jwt), now, 0).unwrap())))
    });
    g.finish();
}

criterion_group!(benches, route, admission);
criterion_main!(benches);
