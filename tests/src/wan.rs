//! Routing that adapts to the WAN: real workers behind `meridian-bench impair` proxies, an
//! edge that reaches them only through the proxies. A region made 300 ms slower loses new
//! traffic and gets it back; a partitioned region is routed around and its streams end in
//! ERROR; a sovereign tenant stays in its only allowed region throughout.
//!
//! Bounds (generous for a shared 2-core CI machine; BENCHMARKS.md "WAN" has measured
//! figures): a slowed region is demoted within 15 s (typically ~1 s: six RTT samples move
//! quinn's smoothed RTT past the 150 ms margin, plus one 100 ms scorer tick); it gets traffic
//! back within 20 s of recovering (hold 1 s + RTT convergence from keep-alive samples every
//! 250 ms); a partition is detected at the idle timeout (1 s here) and new requests are
//! served elsewhere within 5 s of it.

use std::time::{Duration, Instant};

use meridian_fabric::config::ServerTls;
use meridian_fabric::edge::EdgeHandle;
use meridian_fabric::shutdown::Shutdown;
use meridian_fabric::tls::Identity;
use meridian_fabric::worker::{self, WorkerHandle};
use meridian_protocol::client::{Client, Request};
use meridian_protocol::ErrorCode;

use crate::bench_procs::{impair, Controlled};
use crate::support::*;

/// Regions `near` (preferred by area `jp`) and `far`, one worker each behind its own proxy;
/// tenant `sov` may use `near` only.
struct Wan {
    edge: EdgeHandle,
    workers: Vec<WorkerHandle>,
    /// Proxies of `near` and `far` (kept alive for the test).
    near: Controlled,
    _far: Controlled,
    client: Client,
}

async fn wan(name: &str, extra: &str, (ttft, itl, tokens): (u64, u64, u64)) -> Wan {
    let dir = scratch(name);
    let mut id = Identity::self_signed().unwrap();
    id.write(&dir).unwrap();
    let cert = id.cert_path.clone().unwrap();
    let mut toml = format!(
        "[edge]\nlisten = \"127.0.0.1:0\"\n[auth]\nrequired = false\n{extra}\n\
         [[region]]\nname = \"near\"\n[[region]]\nname = \"far\"\n\
         [areas]\njp = [\"near\"]\n[residency]\nnear-only = [\"near\"]\n\
         [tenants]\nsov = {{ residency = \"near-only\" }}\n"
    );
    let mut workers = Vec::new();
    let mut proxies = Vec::new();
    for (region, delay) in [("near", 5), ("far", 10)] {
        let mut wc = worker_config(ServerTls::Dev { dir: dir.clone() }, (ttft, itl, tokens));
        wc.name = format!("{region}-1");
        wc.region = region.into();
        let w = worker::spawn(wc, &id, Shutdown::new()).unwrap();
        let (proxy, via) = impair(w.addr, delay).await;
        toml += &format!(
            "[[worker]]\nname = \"{region}-1\"\nregion = \"{region}\"\naddress = \"{via}\"\nmodels = [\"m\"]\npin = \"{}\"\n",
            cert.display()
        );
        workers.push(w);
        proxies.push(proxy);
    }
    let edge = edge_from(&toml, &dir.join("edge.toml"), &id, 2).await;
    let client = pinned_client(edge.addr, &cert).await;
    let far = proxies.pop().unwrap();
    let near = proxies.pop().unwrap();
    Wan {
        edge,
        workers,
        near,
        _far: far,
        client,
    }
}

/// The region that served a request from `area` (as `tenant`), which must end with END.
async fn served_from(client: &Client, area: &str, tenant: Option<&str>) -> String {
    let mut r = Request::new("m", "hello");
    r.headers.area = Some(area.into());
    r.headers.tenant = tenant.map(str::to_owned);
    r.headers.max_tokens = Some(2);
    let g = client.generate(r).await.expect("sent");
    let (routed, _, _) = within("served", g.collect()).await.expect("served");
    routed.last().expect("routed").region.clone()
}

/// Sends requests from `jp` until one is served by `region`; returns how long it took.
async fn until_served_by(t: &Wan, region: &str, bound: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if served_from(&t.client, "jp", None).await == region {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < bound,
            "jp traffic did not move to {region} within {bound:?}; scorer: {:?}",
            t.edge.router.scored().regions
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slower_region_loses_new_traffic_and_gets_it_back() {
    let mut t = wan(
        "wan-slow",
        "[health]\nscore_interval_ms = 100\nhold_ms = 1000\ndegraded_latency_ms = 150\n",
        (0, 1, 2),
    )
    .await;
    let near = t.edge.router.config().region_id("near").unwrap();
    // Both regions measured; jp traffic on its preferred region.
    let router = t.edge.router.clone();
    eventually("RTTs measured", LIMIT, || {
        router.scored().regions.iter().all(|s| s.rtt_ms.is_some())
    })
    .await;
    assert_eq!(served_from(&t.client, "jp", None).await, "near");

    // near becomes 300 ms slower (150 ms each way).
    t.near.command("delay 155").await;
    let moved = until_served_by(&t, "far", Duration::from_secs(15)).await;
    eprintln!("slowed region lost new traffic after {moved:?}");
    let scored = t.edge.router.scored();
    assert_eq!(
        scored.regions[near].demoted,
        Some(meridian_fabric::route::Demotion::Rtt),
        "{:?}",
        scored.regions[near]
    );
    // The sovereign tenant may use nothing else: still served in near, slowly.
    assert_eq!(served_from(&t.client, "jp", Some("sov")).await, "near");
    let spills = t.edge.router.spills[meridian_fabric::route::Spill::Degraded as usize]
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(spills >= 1, "spills by degradation are counted");
    let metrics = t.edge.stats.render(&t.edge.router);
    assert!(
        metrics.contains("meridian_region_demoted{region=\"near\"} 1"),
        "{metrics}"
    );

    // Recovered: back after the hold and the RTT settling.
    t.near.command("delay 5").await;
    let back = until_served_by(&t, "near", Duration::from_secs(20)).await;
    eprintln!("recovered region got traffic back after {back:?}");
    t.client.close().await;
    t.edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_region_is_routed_around_and_its_streams_end_in_error() {
    // The idle timeout is the partition detector: 1 s here.
    let mut t = wan(
        "wan-partition",
        "[upstream]\nidle_timeout_ms = 1000\n",
        (0, 5, 100_000),
    )
    .await;
    let near = t.edge.router.config().region_id("near").unwrap();
    // Three long streams in flight on near, each past its first token.
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut r = Request::new("m", "a long answer");
        r.headers.area = Some("jp".into());
        let mut g = t.client.generate(r).await.unwrap();
        assert_eq!(routed(&mut g).await.region, "near");
        tokens(&mut g).await;
        streams.push(g);
    }
    t.near.command("partition on").await;
    let cut = Instant::now();
    // Every in-flight stream ends with an ERROR, never a clean END or a silent stop.
    for g in &mut streams {
        let err = error_after_tokens(g).await;
        assert_eq!(err.code(), Some(ErrorCode::UPSTREAM_FAILED), "{err}");
    }
    within(
        "partition detected",
        t.edge.router.wait_until(|r| r.region_down(near)),
    )
    .await;
    let detected = cut.elapsed();
    // New requests are served elsewhere (a request caught on the way is retried there).
    let mut r = Request::new("m", "after the cut");
    r.headers.area = Some("jp".into());
    r.headers.max_tokens = Some(3);
    let g = t.client.generate(r).await.unwrap();
    let (routed_to, _, end) = within("served elsewhere", g.collect()).await.unwrap();
    assert_eq!(routed_to.last().unwrap().region, "far");
    assert_eq!(end.completion_tokens, 3);
    let served = cut.elapsed();
    eprintln!(
        "partition detected after {detected:?}; new request served elsewhere after {served:?}"
    );
    assert!(
        served < Duration::from_secs(6),
        "new requests served elsewhere within the 1 s detection time + 5 s: {served:?}"
    );
    // The sovereign tenant fails closed while its only region is cut off.
    let mut r = Request::new("m", "sovereign");
    r.headers.area = Some("jp".into());
    r.headers.tenant = Some("sov".into());
    let err = within("fail closed", t.client.generate(r).await.unwrap().collect())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::RESIDENCY_UNAVAILABLE), "{err}");
    // Healed: near reconnects and takes jp traffic again.
    t.near.command("partition off").await;
    within(
        "reconnected",
        t.edge.router.wait_until(|r| !r.region_down(near)),
    )
    .await;
    let back = until_served_by(&t, "near", Duration::from_secs(20)).await;
    eprintln!("healed region served again after {back:?}");
    drop(streams);
    t.client.close().await;
    t.edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_spread_over_several_connections_per_worker() {
    let t = wan(
        "wan-conns",
        "[upstream]\nconnections_per_worker = 3\n",
        (0, 1, 2),
    )
    .await;
    eventually("three connections to each worker", LIMIT, || {
        t.workers.iter().all(|w| w.connections() == 3)
    })
    .await;
    for _ in 0..9 {
        assert_eq!(served_from(&t.client, "jp", None).await, "near");
    }
    t.client.close().await;
    t.edge.stop().await;
}
