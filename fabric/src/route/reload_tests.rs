//! Reloads and residency: a request is routed by one generation's policy at a time, never a
//! mix; its later attempts (retries, resumptions) stay inside what its first decision's
//! policy allowed *and* what the policy in force then allows; workers and regions that did
//! not change keep their live state.

use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;

use meridian_protocol::ErrorCode;

use super::{Pinned, RouteRequest, Router};
use crate::config::parse_config;

const REGIONS: [&str; 5] = ["r0", "r1", "r2", "r3", "r4"];

/// A topology of five regions with two workers each; tenant `t` restricted to the regions
/// in `allowed` (a bit per region, at least one), regions listed in `order`.
fn topology(allowed: u8, order: &[usize]) -> String {
    let mut s = String::from("[edge]\nlisten = \"127.0.0.1:0\"\n[auth]\nrequired = false\n");
    s += "[routing]\nring_key = \"000102030405060708090a0b0c0d0e0f\"\n";
    for &r in order {
        s += &format!("[[region]]\nname = \"{}\"\n", REGIONS[r]);
    }
    let policy: Vec<String> = (0..5)
        .filter(|r| allowed & (1 << r) != 0)
        .map(|r| format!("\"{}\"", REGIONS[r]))
        .collect();
    s += &format!("[residency]\np = [{}]\n", policy.join(", "));
    s += "[tenants]\nt = { residency = \"p\" }\nfree = {}\n";
    for &r in order {
        for i in 0..2 {
            s += &format!(
                "[[worker]]\nname = \"{0}-{i}\"\nregion = \"{0}\"\naddress = \"127.0.0.1:{1}\"\nmodels = [\"m\"]\npin = \"none.pem\"\n",
                REGIONS[r],
                5000 + r * 2 + i
            );
        }
    }
    s
}

fn router(allowed: u8, order: &[usize]) -> Router {
    let cfg = parse_config(&topology(allowed, order), Path::new("t.toml")).expect("valid");
    Router::new(Arc::new(cfg))
}

fn reload(r: &Router, allowed: u8, order: &[usize]) {
    let cfg = parse_config(&topology(allowed, order), Path::new("t.toml")).expect("valid");
    r.reload(Arc::new(cfg));
}

/// Region names whose bit is set.
fn names(bits: u8) -> Vec<&'static str> {
    (0..5)
        .filter(|r| bits & (1 << r) != 0)
        .map(|r| REGIONS[r])
        .collect()
}

fn set_health(r: &Router, health: u16) {
    let topo = r.topology();
    for (w, entry) in topo.config.workers.iter().enumerate() {
        let (region, i) = entry.name.split_once('-').expect("rN-i");
        let bit = REGIONS.iter().position(|n| *n == region).expect("known") * 2
            + i.parse::<usize>().expect("i");
        r.set_healthy(w, health & (1 << bit) != 0);
    }
}

fn req<'a>(key: &'a [u8], exclude: &'a [u64], pinned: Option<&'a Pinned>) -> RouteRequest<'a> {
    RouteRequest {
        model: "m",
        tenant: Some("t"),
        shard_key: key,
        exclude,
        pinned,
        ..Default::default()
    }
}

proptest! {
    /// A reload between a request's first decision and its later attempt: the first lands in
    /// the old policy, the later one in old ∩ new (fail closed when that has no live worker),
    /// whatever the new policy, region order, and health.
    #[test]
    fn a_retry_after_a_reload_stays_inside_both_policies(
        old in 1u8..32,
        new in 1u8..32,
        order in Just((0..5).collect::<Vec<usize>>()).prop_shuffle(),
        health in any::<u16>(),
        later_health in any::<u16>(),
        key in any::<u64>(),
    ) {
        let r = router(old, &[0, 1, 2, 3, 4]);
        set_health(&r, health);
        let key = key.to_le_bytes();
        let first = match r.route(&req(&key, &[], None)) {
            Ok(d) => d,
            Err(e) => {
                prop_assert_eq!(e.code(), ErrorCode::RESIDENCY_UNAVAILABLE);
                return Ok(());
            }
        };
        prop_assert!(names(old).contains(&first.region_name()), "first decision outside the policy");
        let pin = Pinned::of(&first);
        let failed = [first.uid()];
        drop(first);
        reload(&r, new, &order);
        set_health(&r, later_health);
        let both = old & new;
        match r.route(&req(&key, &failed, Some(&pin))) {
            Ok(d) => {
                prop_assert!(
                    names(both).contains(&d.region_name()),
                    "retry in {} outside old {:?} ∩ new {:?}", d.region_name(), names(old), names(new)
                );
                prop_assert!(d.uid() != failed[0], "the failed worker again");
            }
            Err(e) => {
                prop_assert_eq!(e.code(), ErrorCode::RESIDENCY_UNAVAILABLE, "{}", e);
                // Fail closed only when no live worker is left in old ∩ new.
                let topo = r.topology();
                let open = (0..topo.workers.len()).any(|w| {
                    let region = &topo.config.regions[topo.config.workers[w].region].name;
                    topo.workers[w].is_healthy()
                        && topo.workers[w].uid != failed[0]
                        && names(both).contains(&region.as_str())
                });
                prop_assert!(!open, "refused although old ∩ new had a live worker");
            }
        }
    }
}

proptest! {
    /// A reload between a request's admission (by one generation's tenants) and its first
    /// decision (on the next generation's table): the decision lands in old ∩ new.
    #[test]
    fn a_first_decision_after_a_reload_stays_inside_the_admitting_policy(
        old in 1u8..32,
        new in 1u8..32,
        health in any::<u16>(),
        key in any::<u64>(),
    ) {
        let r = router(old, &[0, 1, 2, 3, 4]);
        let admitted = r.topology();
        let pin = Pinned::admitted(&admitted, Some("t"), None).expect("known tenant");
        reload(&r, new, &[4, 3, 2, 1, 0]);
        set_health(&r, health);
        let key = key.to_le_bytes();
        if let Ok(d) = r.route(&req(&key, &[], Some(&pin))) {
            prop_assert!(names(old & new).contains(&d.region_name()), "{} outside old ∩ new", d.region_name());
        }
    }
}

#[test]
fn a_policy_the_admitting_generation_does_not_know_pins_nothing() {
    let r = router(0b11111, &[0, 1, 2, 3, 4]);
    let topo = r.topology();
    assert!(Pinned::admitted(&topo, Some("t"), Some("p")).is_ok());
    // The relay refuses such a request (BAD_REQUEST) rather than routing it unpinned.
    let refused = |tenant, residency| {
        let e = Pinned::admitted(&topo, tenant, residency).expect_err("refused");
        (e.code(), e.to_string())
    };
    assert_eq!(
        refused(Some("t"), Some("only-in-a-newer-config")),
        (
            ErrorCode::BAD_REQUEST,
            "unknown residency policy `only-in-a-newer-config`".into()
        )
    );
    assert_eq!(
        refused(Some("nobody"), None),
        (ErrorCode::UNAUTHORIZED, "unknown tenant `nobody`".into())
    );
}

/// Requests routed on other threads while the policy flips between two disjoint sets, in
/// new region orders, hundreds of times: each decision lands inside the policy of the
/// generation it was made on.
#[test]
fn decisions_during_reloads_use_one_generation_policy() {
    let (a, b) = (0b00011u8, 0b11100u8);
    let r = Arc::new(router(a, &[0, 1, 2, 3, 4]));
    set_health(&r, u16::MAX);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|i| {
            let (r, stop) = (r.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let key = (n * 3 + i).to_le_bytes();
                    if let Ok(d) = r.route(&req(&key, &[], None)) {
                        // Generation g was built with policy `a` when g is even, `b` when odd.
                        let policy = if d.topology().generation % 2 == 0 {
                            a
                        } else {
                            b
                        };
                        assert!(
                            names(policy).contains(&d.region_name()),
                            "generation {} routed to {}",
                            d.topology().generation,
                            d.region_name()
                        );
                    }
                    n += 1;
                }
                n
            })
        })
        .collect();
    let orders = [[4, 3, 2, 1, 0], [0, 1, 2, 3, 4], [2, 0, 4, 1, 3]];
    for g in 1..=300u64 {
        let policy = if g % 2 == 0 { a } else { b };
        reload(&r, policy, &orders[g as usize % 3]);
        set_health(&r, u16::MAX);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let routed: u64 = readers
        .into_iter()
        .map(|h| h.join().expect("no panic"))
        .sum();
    assert!(routed > 0);
    assert_eq!(r.topology().generation, 300);
}

#[test]
fn a_reload_keeps_unchanged_workers_state_and_retires_the_rest() {
    let r = router(0b11111, &[0, 1, 2, 3, 4]);
    set_health(&r, u16::MAX);
    let before = r.topology();
    before.workers[0].set_capacity(7);
    let kept_uid = before.workers[0].uid;
    let first = r.route(&req(b"k", &[], None)).expect("routed");
    // r4 leaves; r0..r3 stay but in a new order: their workers keep their state.
    let cfg = parse_config(&topology(0b01111, &[3, 2, 1, 0]), Path::new("t.toml"));
    let (topo, change) = r.reload(Arc::new(cfg.expect("valid")));
    assert_eq!(change.kept, 8);
    let retired: Vec<&str> = change
        .retired
        .iter()
        .map(|(_, e)| e.name.as_str())
        .collect();
    assert_eq!(retired, ["r4-0", "r4-1"]);
    assert!(change
        .retired
        .iter()
        .all(|(s, _)| s.is_retired() && !s.is_healthy()));
    assert_eq!(topo.generation, 1);
    let w = topo
        .config
        .workers
        .iter()
        .position(|e| e.name == "r0-0")
        .expect("kept");
    assert_eq!(topo.workers[w].uid, kept_uid, "same state carried over");
    assert_eq!(topo.workers[w].capacity(), 7);
    assert!(topo.workers[w].is_healthy(), "health carried over");
    assert!(change.added.is_empty(), "{:?}", change.added);
    // The decision made before the reload still holds its slot on the old generation's
    // state, which is the same object.
    assert_eq!(first.state().local_in_flight(), 1);
    drop(first);
    assert_eq!(topo.workers[w].local_in_flight(), 0);
    // Regions keep their counters by name.
    let r0 = topo.config.region_id("r0").expect("r0");
    assert!(Arc::ptr_eq(&topo.regions[r0], &before.regions[0]));
}
