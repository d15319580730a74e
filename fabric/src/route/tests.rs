use std::path::Path;

use proptest::prelude::*;

use super::*;
use crate::config::parse_config;

const TOPOLOGY: &str = include_str!("../demo/topology.toml");

fn router() -> Router {
    let config =
        parse_config(TOPOLOGY, Path::new("topology.toml")).expect("demo topology is valid");
    let router = Router::new(Arc::new(config));
    for w in 0..router.config().workers.len() {
        router.set_healthy(w, true);
    }
    router
}

fn req<'a>(area: Option<&'a str>, tenant: Option<&'a str>) -> RouteRequest<'a> {
    RouteRequest {
        model: "llama-3-8b",
        area,
        tenant,
        shard_key: b"key",
        ..Default::default()
    }
}

fn region_of(r: &Router, q: &RouteRequest<'_>) -> Result<String, ErrorCode> {
    r.route(q)
        .map(|d| r.config().regions[d.region].name.clone())
        .map_err(|e| e.code())
}

fn stop_region(r: &Router, name: &str) {
    let id = r.config().region_id(name).unwrap();
    for (w, entry) in r.config().workers.iter().enumerate() {
        if entry.region == id {
            r.set_healthy(w, false);
        }
    }
}

#[test]
fn demo_rules() {
    let r = router();
    assert_eq!(region_of(&r, &req(Some("jp"), None)).unwrap(), "seoul");
    assert_eq!(
        region_of(&r, &req(Some("fr"), None)).unwrap(),
        "frankfurt",
        "fr inherits the eu group"
    );
    assert_eq!(
        region_of(&r, &req(Some("de"), Some("bund"))).unwrap(),
        "frankfurt-sovereign"
    );
    assert_eq!(
        region_of(&r, &req(Some("jp"), Some("bund"))).unwrap(),
        "frankfurt-sovereign",
        "sovereign tenant travelling"
    );
    assert_eq!(
        region_of(&r, &req(None, None)).unwrap(),
        "seoul",
        "no area: config order"
    );
    stop_region(&r, "seoul");
    assert_eq!(region_of(&r, &req(Some("jp"), None)).unwrap(), "tokyo");
    stop_region(&r, "frankfurt-sovereign");
    assert_eq!(
        region_of(&r, &req(Some("de"), Some("bund"))),
        Err(ErrorCode::RESIDENCY_UNAVAILABLE)
    );
}

#[test]
fn request_errors_have_codes() {
    let r = router();
    assert_eq!(
        region_of(&r, &req(None, Some("nobody"))),
        Err(ErrorCode::UNAUTHORIZED)
    );
    let mut q = req(None, None);
    q.residency = Some("mars");
    assert_eq!(region_of(&r, &q), Err(ErrorCode::BAD_REQUEST));
    q.residency = None;
    q.model = "gpt-9";
    assert_eq!(region_of(&r, &q), Err(ErrorCode::MODEL_NOT_FOUND));
    for w in 0..r.config().workers.len() {
        r.set_healthy(w, false);
    }
    assert_eq!(
        region_of(&r, &req(Some("jp"), None)),
        Err(ErrorCode::UNAVAILABLE)
    );
}

#[test]
fn same_shard_key_same_worker_and_keys_spread() {
    let r = router();
    let a = r.route(&req(Some("jp"), None)).unwrap().worker;
    let b = r.route(&req(Some("jp"), None)).unwrap().worker;
    assert_eq!(a, b);
    let mut seen = std::collections::HashSet::new();
    for i in 0..64u32 {
        let key = i.to_le_bytes();
        let q = RouteRequest {
            shard_key: &key,
            ..req(Some("jp"), None)
        };
        seen.insert(r.route(&q).unwrap().worker);
    }
    assert_eq!(seen.len(), 2, "both seoul workers get keys");
}

#[test]
fn spills_to_next_allowed_region_at_load_bound() {
    let r = router();
    let seoul = r.config().region_id("seoul").unwrap();
    let mut held = Vec::new();
    for (w, e) in r.config().workers.iter().enumerate() {
        if e.region == seoul {
            r.worker(w).set_capacity(1);
        }
    }
    r.rebuild();
    // Two requests fill seoul's capacity of 2; the third spills to tokyo.
    held.push(r.route(&req(Some("jp"), None)).unwrap());
    held.push(r.route(&req(Some("jp"), None)).unwrap());
    assert_eq!(region_of(&r, &req(Some("jp"), None)).unwrap(), "tokyo");
    let e = r.explain(&req(Some("jp"), None));
    assert!(
        matches!(
            e.steps[0].verdict,
            RegionVerdict::OverBound {
                load: 2,
                capacity: 2
            }
        ),
        "{e}"
    );
    drop(held);
    assert_eq!(region_of(&r, &req(Some("jp"), None)).unwrap(), "seoul");
}

#[test]
fn retry_excludes_failed_worker_within_residency() {
    let r = router();
    let first = r.route(&req(Some("de"), Some("bund"))).unwrap();
    let q = RouteRequest {
        exclude: &[first.worker],
        ..req(Some("de"), Some("bund"))
    };
    let second = r.route(&q).unwrap();
    assert_ne!(second.worker, first.worker);
    assert_eq!(
        r.config().regions[second.region].name,
        "frankfurt-sovereign"
    );
    let both = [first.worker, second.worker];
    let q = RouteRequest {
        exclude: &both,
        ..req(Some("de"), Some("bund"))
    };
    assert_eq!(
        r.route(&q).unwrap_err().code(),
        ErrorCode::RESIDENCY_UNAVAILABLE
    );
}

#[test]
fn explanation_lists_candidates_and_filters() {
    let r = router();
    let e = r.explain(&req(Some("jp"), Some("bund")));
    assert_eq!(
        e.candidates[..2],
        ["seoul".to_string(), "tokyo".to_string()]
    );
    assert_eq!(e.region.as_deref(), Some("frankfurt-sovereign"));
    assert!(e
        .steps
        .iter()
        .any(|s| s.region == "seoul" && s.verdict == RegionVerdict::NotAllowed));
    assert!(e.to_string().contains("frankfurt-sovereign"));
}

proptest! {
    /// Residency is a safety property: for every combination of worker health, areas,
    /// tenants, policies, exclusions and loads, a routed request lands inside its allowed
    /// regions; and it is refused only when no allowed region could take it.
    #[test]
    fn residency_is_never_violated(
        health in any::<u16>(),
        area in prop::sample::select(vec![None, Some("jp"), Some("de"), Some("fr"), Some("us"), Some("zz")]),
        tenant in prop::sample::select(vec![None, Some("bund"), Some("acme")]),
        residency in prop::sample::select(vec![None, Some("eu"), Some("de-sovereign")]),
        exclude in prop::collection::vec(0usize..10, 0..4),
        saturated in any::<u16>(),
        key in any::<u64>(),
    ) {
        let r = router();
        let cfg0 = r.config().clone();
        let mut held = Vec::new();
        for w in 0..10 {
            r.set_healthy(w, health & (1 << w) != 0);
            if saturated & (1 << w) != 0 {
                r.worker(w).set_capacity(1);
                held.push(r.worker(w).in_flight.acquire());
                held.push(r.region_in_flight[cfg0.workers[w].region].acquire());
            }
        }
        r.rebuild();
        let key = key.to_le_bytes();
        let q = RouteRequest { model: "llama-3-8b", area, tenant, residency, shard_key: &key, exclude: &exclude };
        let cfg = r.config().clone();
        let mut allowed = RegionSet::ALL;
        if tenant == Some("bund") { allowed = allowed.intersect(cfg.residency["de-sovereign"]); }
        if let Some(p) = residency { allowed = allowed.intersect(cfg.residency[p]); }
        let usable = |w: usize| health & (1 << w) != 0 && !exclude.contains(&w);
        let region_open = |reg: usize| {
            let live: Vec<usize> = (0..10).filter(|w| cfg.workers[*w].region == reg && health & (1 << *w) != 0).collect();
            let load = r.region_in_flight[reg].current();
            let cap: u64 = live.iter().map(|w| r.worker(*w).capacity()).sum();
            live.iter().any(|w| usable(*w)) && load < cap
        };
        let result = r.route(&q);
        match result {
            Ok(d) => {
                prop_assert!(allowed.contains(d.region), "routed outside residency: {}", cfg.regions[d.region].name);
                prop_assert!(usable(d.worker));
                prop_assert_eq!(cfg.workers[d.worker].region, d.region);
            }
            Err(e) => {
                let any_open = (0..cfg.regions.len()).any(|reg| allowed.contains(reg) && region_open(reg));
                prop_assert!(!any_open, "refused ({e}) although an allowed region was open");
                if allowed != RegionSet::ALL {
                    prop_assert!(matches!(e.code(), ErrorCode::RESIDENCY_UNAVAILABLE | ErrorCode::OVERLOADED), "{e}");
                }
            }
        };
    }
}
