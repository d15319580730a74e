use std::path::Path;

use proptest::prelude::*;

use meridian_protocol::ErrorCode;

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

fn attempt(r: &Router, w: WorkerId, failed: bool) {
    r.record_attempt(&r.topology(), w, failed);
}

fn probed(r: &Router, w: WorkerId, ok: bool) {
    r.probed(&r.topology(), w, ok);
}

fn due(r: &Router) -> Vec<WorkerId> {
    r.due_probes().1
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
        exclude: &[first.uid()],
        ..req(Some("de"), Some("bund"))
    };
    let second = r.route(&q).unwrap();
    assert_ne!(second.worker, first.worker);
    assert_eq!(
        r.config().regions[second.region].name,
        "frankfurt-sovereign"
    );
    let both = [first.uid(), second.uid()];
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
        let topo = r.topology();
        let mut held = Vec::new();
        for w in 0..10 {
            r.set_healthy(w, health & (1 << w) != 0);
            if saturated & (1 << w) != 0 {
                topo.workers[w].set_capacity(1);
                held.push(topo.workers[w].in_flight.acquire());
                held.push(topo.regions[topo.config.workers[w].region].in_flight.acquire());
            }
        }
        r.rebuild();
        let key = key.to_le_bytes();
        let uids: Vec<u64> = exclude.iter().map(|w| topo.workers[*w].uid).collect();
        let q = RouteRequest { model: "llama-3-8b", area, tenant, residency, shard_key: &key, exclude: &uids, pinned: None };
        let cfg = r.config().clone();
        let mut allowed = RegionSet::ALL;
        if tenant == Some("bund") { allowed = allowed.intersect(cfg.residency["de-sovereign"]); }
        if let Some(p) = residency { allowed = allowed.intersect(cfg.residency[p]); }
        let usable = |w: usize| health & (1 << w) != 0 && !exclude.contains(&w);
        let region_open = |reg: usize| {
            let live: Vec<usize> = (0..10).filter(|w| cfg.workers[*w].region == reg && health & (1 << *w) != 0).collect();
            let load = topo.regions[reg].in_flight.current();
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

proptest! {
    /// Residency under adaptive routing: whatever the measured RTTs, prices, carbon,
    /// objective, demotions (from the real scorer) and ejections, a routed request lands
    /// inside its allowed regions on a live, non-ejected worker; it is refused only when no
    /// allowed region has one.
    #[test]
    fn residency_holds_under_scores_ejections_and_spills(
        health in any::<u16>(),
        ejected in any::<u16>(),
        rtts in prop::collection::vec(1u64..2_000, 10),
        slow_after in prop::collection::vec(0u64..2_000, 10),
        failures in prop::collection::vec(0u32..8, 10),
        prices in prop::collection::vec(0.0f64..5.0, 5),
        objective in prop::sample::select(vec!["latency", "cost", "carbon", "balanced"]),
        area in prop::sample::select(vec![None, Some("jp"), Some("de"), Some("fr"), Some("us"), Some("zz")]),
        tenant in prop::sample::select(vec![None, Some("bund"), Some("acme")]),
        residency in prop::sample::select(vec![None, Some("eu"), Some("de-sovereign")]),
        key in any::<u64>(),
    ) {
        let src = TOPOLOGY.replacen("[routing]", &format!("[routing]\nobjective = \"{objective}\""), 1);
        let config = parse_config(&src, Path::new("topology.toml")).expect("valid");
        let r = Router::new(Arc::new(config));
        let cfg = r.config().clone();
        for w in 0..10 {
            r.set_healthy(w, health & (1 << w) != 0);
            let state = r.worker(w);
            let h = &state.health;
            h.record_path(Duration::from_millis(rtts[w]), 0, 10);
            for _ in 0..failures[w] {
                attempt(&r, w, true);
            }
            if ejected & (1 << w) != 0 {
                h.eject(u64::MAX);
            }
        }
        for (reg, p) in prices.iter().enumerate() {
            let name = r.config().regions[reg].name.clone();
            r.set_region_price(&name, Some(*p), Some(p * 100.0));
        }
        // Two scorer ticks: baselines from the first RTTs, then some regions get slower
        // (demoted) — the real scorer decides.
        r.tick_at(0);
        for w in 0..10 {
            r.worker(w).health.record_path(Duration::from_millis(rtts[w] + slow_after[w]), 0, 10);
        }
        r.tick_at(10);
        let scored = r.table().scored.clone();
        for order in scored.area_order.values().chain([&scored.default_order]) {
            let mut sorted = order.clone();
            sorted.sort_unstable();
            prop_assert_eq!(sorted, (0..cfg.regions.len()).collect::<Vec<_>>(), "an order holds every region once");
        }
        let key = key.to_le_bytes();
        let q = RouteRequest { model: "llama-3-8b", area, tenant, residency, shard_key: &key, exclude: &[], pinned: None };
        let mut allowed = RegionSet::ALL;
        if tenant == Some("bund") { allowed = allowed.intersect(cfg.residency["de-sovereign"]); }
        if let Some(p) = residency { allowed = allowed.intersect(cfg.residency[p]); }
        let live = |w: usize| r.worker(w).is_healthy() && !r.worker(w).health.is_ejected();
        let routed = r.route(&q).map(|d| (d.region, d.worker));
        match routed {
            Ok((region, worker)) => {
                prop_assert!(allowed.contains(region), "routed outside residency: {}", cfg.regions[region].name);
                prop_assert!(live(worker), "routed to an unhealthy or ejected worker");
            }
            Err(e) => {
                let open = (0..10).any(|w| live(w) && allowed.contains(cfg.workers[w].region));
                prop_assert!(!open, "refused ({e}) although an allowed region had a live worker");
            }
        }
        // A resumable stream whose workers keep failing mid-answer (PROTOCOL.md §4.10): each
        // continuation is routed as the relay routes it — the same request minus the workers
        // that failed it, each failure recorded (which may eject the worker) — and lands
        // inside the policy; the chain ends only when no allowed live worker is left.
        let mut failed: Vec<usize> = Vec::new();
        for _ in 0..4 {
            let uids: Vec<u64> = failed.iter().map(|w| r.worker(*w).uid).collect();
            let q = RouteRequest { model: "llama-3-8b", area, tenant, residency, shard_key: &key, exclude: &uids, pinned: None };
            let next = r.route(&q).map(|d| (d.region, d.worker));
            match next {
                Ok((region, worker)) => {
                    prop_assert!(allowed.contains(region), "resumed outside residency: {}", cfg.regions[region].name);
                    prop_assert!(!failed.contains(&worker), "resumed on a worker that failed the stream");
                    attempt(&r, worker, true);
                    failed.push(worker);
                }
                Err(e) => {
                    let open = (0..10).any(|w| live(w) && !failed.contains(&w) && allowed.contains(cfg.workers[w].region));
                    prop_assert!(!open, "resumption refused ({e}) although an allowed worker was left");
                    if allowed != RegionSet::ALL {
                        prop_assert!(matches!(e.code(), ErrorCode::RESIDENCY_UNAVAILABLE | ErrorCode::OVERLOADED), "{e}");
                    }
                    break;
                }
            }
        }
    }
}

#[test]
fn a_degraded_preferred_region_spills_to_the_next_and_comes_back() {
    let r = router();
    let cfg = r.config().clone();
    let frankfurt = cfg.region_id("frankfurt").unwrap();
    let set_rtt = |reg: usize, ms: u64| {
        for w in (0..10).filter(|w| cfg.workers[*w].region == reg) {
            r.worker(w)
                .health
                .record_path(Duration::from_millis(ms), 0, 10);
        }
    };
    for reg in 0..r.config().regions.len() {
        set_rtt(reg, 30 + 10 * reg as u64);
    }
    let hold = r.config().health.hold.as_millis() as u64;
    r.tick_at(0);
    let fr = req(Some("fr"), None);
    assert_eq!(region_of(&r, &fr).unwrap(), "frankfurt");
    // Frankfurt becomes 300 ms slower: demoted at the next tick; French traffic spills.
    set_rtt(frankfurt, 30 + 10 * frankfurt as u64 + 300);
    r.tick_at(250);
    assert_eq!(r.scored().regions[frankfurt].demoted, Some(Demotion::Rtt));
    assert_ne!(region_of(&r, &fr).unwrap(), "frankfurt");
    assert_eq!(
        r.spills[Spill::Degraded as usize].load(Ordering::Relaxed),
        1
    );
    // The sovereign tenant is not allowed anywhere else: it still gets its pool.
    assert_eq!(
        region_of(&r, &req(Some("fr"), Some("bund"))).unwrap(),
        "frankfurt-sovereign"
    );
    // Recovered, but held for `hold`: still demoted just before, back after.
    set_rtt(frankfurt, 30 + 10 * frankfurt as u64);
    r.tick_at(250 + hold - 1);
    assert_ne!(region_of(&r, &fr).unwrap(), "frankfurt");
    r.tick_at(250 + hold);
    assert_eq!(region_of(&r, &fr).unwrap(), "frankfurt");
}

#[test]
fn consecutive_failures_eject_a_worker_and_a_good_probe_readmits_it() {
    let r = router();
    let n = r.config().health.eject_consecutive_failures;
    let w = 0;
    for _ in 0..n - 1 {
        attempt(&r, w, true);
    }
    assert!(!r.worker(w).health.is_ejected());
    attempt(&r, w, true);
    assert!(r.worker(w).health.is_ejected());
    let reg = r.config().workers[w].region;
    assert!(
        !r.table().regions[reg].healthy.contains(&w),
        "ejected workers leave the table"
    );
    assert!(due(&r).is_empty(), "not before the backoff");
    // A failed probe doubles the backoff; a good one readmits.
    r.worker(w).health.probe_at_ms.store(0, Ordering::Relaxed);
    assert_eq!(due(&r), vec![w]);
    probed(&r, w, false);
    assert!(r.worker(w).health.is_ejected());
    let next = r.worker(w).health.probe_at_ms.load(Ordering::Relaxed);
    let now = r.now_ms();
    assert!(
        (now + 1_900..=now + 2_100).contains(&next),
        "second backoff is twice the first (1 s): {next} at {now}"
    );
    probed(&r, w, true);
    assert!(!r.worker(w).health.is_ejected());
    assert!(r.table().regions[reg].healthy.contains(&w));
}

#[test]
fn at_most_half_a_region_is_ejected() {
    let r = router();
    let cfg = r.config().clone();
    let reg = cfg.workers[0].region;
    let members: Vec<usize> = (0..10).filter(|w| cfg.workers[*w].region == reg).collect();
    assert_eq!(members.len(), 2);
    for &w in &members {
        for _ in 0..10 {
            attempt(&r, w, true);
        }
    }
    let ejected = members
        .iter()
        .filter(|w| r.worker(**w).health.is_ejected())
        .count();
    assert_eq!(ejected, 1, "max_ejected_percent = 50 keeps one of two");
}

#[test]
fn the_cost_objective_follows_prices_changed_at_run_time() {
    let src = TOPOLOGY.replacen("[routing]", "[routing]\nobjective = \"cost\"", 1);
    let r = Router::new(Arc::new(parse_config(&src, Path::new("t.toml")).unwrap()));
    for w in 0..10 {
        r.set_healthy(w, true);
        r.worker(w)
            .health
            .record_path(Duration::from_millis(30), 0, 10);
    }
    r.tick_at(0);
    // jp prefers seoul (0.60) and tokyo (0.70): the cheaper one leads.
    let jp = req(Some("jp"), None);
    assert_eq!(region_of(&r, &jp).unwrap(), "seoul");
    // 0.66 is not 10 % more than tokyo's 0.70: hysteresis keeps seoul.
    r.set_region_price("seoul", Some(0.66), None);
    r.tick_at(250);
    assert_eq!(region_of(&r, &jp).unwrap(), "seoul");
    r.set_region_price("seoul", Some(0.90), None);
    r.tick_at(500);
    assert_eq!(region_of(&r, &jp).unwrap(), "tokyo");
    // However cheap a region outside the preference list gets, it only follows.
    assert_eq!(
        r.set_region_price("us-east", Some(0.01), None),
        Some((
            0.01,
            r.config().regions[r.config().region_id("us-east").unwrap()].carbon_g_per_kwh
        ))
    );
    assert_eq!(r.set_region_price("atlantis", Some(0.01), None), None);
    r.tick_at(750);
    assert_eq!(region_of(&r, &jp).unwrap(), "tokyo");
    let e = r.explain(&jp);
    assert_eq!(e.objective, "cost");
    assert_eq!(e.scores[0].region, "tokyo");
    assert_eq!(e.scores[0].placed, "preferred, by score");
}

#[test]
fn one_failure_after_readmission_does_not_eject_again() {
    let r = router();
    let w = 0;
    for _ in 0..r.config().health.eject_min_attempts {
        attempt(&r, w, false);
    }
    for _ in 0..r.config().health.eject_consecutive_failures {
        attempt(&r, w, true);
    }
    assert!(r.worker(w).health.is_ejected());
    probed(&r, w, true);
    // The error average restarts empty: a single failure reads as 100 % but is one attempt.
    attempt(&r, w, true);
    assert!(!r.worker(w).health.is_ejected());
    assert_eq!(
        r.worker(w).health.eject_streak.load(Ordering::Relaxed),
        0,
        "a good probe resets the doubling"
    );
}
