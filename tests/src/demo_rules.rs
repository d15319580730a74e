//! Every rule of `meridian demo`, through the real edge and workers.

use crate::support::*;
use meridian_fabric::demo::run_scenario;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_scenario_every_rule_holds() {
    let mut demo = topology("demo", 5, 1, 8).await;
    let client = client(&demo).await;
    let outcomes = within("scenario", run_scenario(&mut demo, &client)).await;
    let region = |i: usize| outcomes[i].region.as_deref();
    assert_eq!(outcomes.len(), 8);
    assert_eq!(region(0), Some("seoul"), "Tokyo user → seoul");
    assert_eq!(region(1), Some("frankfurt"), "Paris user → frankfurt");
    assert_eq!(
        region(2),
        Some("frankfurt-sovereign"),
        "bund → sovereign pool"
    );
    assert_eq!(
        outcomes[3].error.as_deref(),
        Some("UNAUTHORIZED"),
        "claiming bund with acme's key is refused"
    );
    assert_eq!(region(3), None);
    assert_eq!(
        outcomes[4].worker, outcomes[5].worker,
        "same shard key → same worker"
    );
    assert!(outcomes[4].worker.is_some());
    assert_eq!(region(6), Some("tokyo"), "seoul down → tokyo");
    assert_eq!(outcomes[7].error.as_deref(), Some("RESIDENCY_UNAVAILABLE"));
    assert_eq!(region(7), None, "bund never routed anywhere else");
    for o in &outcomes {
        assert!(o.ok, "step {} `{}` did not behave: {o:?}", o.step, o.title);
        if o.error.is_none() {
            assert_eq!(o.tokens, 8, "every token arrived");
        }
    }
    client.close().await;
    demo.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_capacity_comes_from_worker_settings() {
    // Workers advertise max_concurrent = 64 in SETTINGS; the edge must route on it (a
    // worker is marked healthy only after its SETTINGS arrived).
    let demo = topology("capacity", 5, 1, 4).await;
    let table = demo.edge.router.table();
    for (r, region) in demo.config.regions.iter().enumerate() {
        assert_eq!(table.regions[r].capacity, 128, "region {}", region.name);
    }
    demo.shutdown().await;
}
