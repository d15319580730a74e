//! Hot reload of a running edge (in process, real workers and QUIC): a removed worker is
//! drained — its streams in flight finish with every token, then its connection closes — a
//! new worker is connected to and gets traffic, API keys and tenants change at once, and an
//! invalid file is rejected with its location while the running config keeps serving.

use std::path::Path;

use meridian_fabric::config::ServerTls;
use meridian_fabric::edge::{EdgeHandle, ReloadFailure};
use meridian_fabric::tls::Identity;
use meridian_fabric::worker::WorkerHandle;
use meridian_protocol::client::Request;
use meridian_protocol::{Credential, ErrorCode};

use crate::support::*;

/// An edge config listing `workers` (name, handle) in region `r`, and `keys` as
/// `[[auth.api_keys]]` entries for tenant `t`.
fn edge_toml(dir: &Path, workers: &[(&str, &WorkerHandle)], keys: &[&str]) -> String {
    let mut s = String::from(
        "[edge]\nlisten = \"127.0.0.1:0\"\n[tls]\ndev_cert_dir = \"edge\"\n\
         [routing]\nring_key = \"000102030405060708090a0b0c0d0e0f\"\n\
         [[region]]\nname = \"r\"\n[tenants]\nt = {}\n[auth]\nrequired = true\n",
    );
    for k in keys {
        let id = k.split('_').nth(1).expect("mk_<id>_<secret>");
        s += &format!(
            "[[auth.api_keys]]\nid = \"{id}\"\ntenant = \"t\"\nsha256 = \"{}\"\n",
            meridian_fabric::auth::key::hex(&meridian_fabric::auth::key::digest(k))
        );
    }
    for (name, w) in workers {
        s += &format!(
            "[[worker]]\nname = \"{name}\"\nregion = \"r\"\naddress = \"{}\"\nmodels = [\"m\"]\npin = \"{}\"\n",
            w.addr,
            dir.join(name).join("cert.pem").display()
        );
    }
    s
}

const KEY_A: &str = "mk_keya_c2VjcmV0LWtleS1hLWZvci10aGUtcmVsb2FkLXRlc3Q";
const KEY_B: &str = "mk_keyb_c2VjcmV0LWtleS1iLWZvci10aGUtcmVsb2FkLXRlc3Q";

async fn reload(edge: &EdgeHandle, toml: &str, path: &Path) -> meridian_fabric::edge::ReloadReport {
    let cfg = meridian_fabric::config::parse_config(toml, path).expect("valid");
    edge.reload(cfg).await.expect("applied")
}

fn with_key(model: &str, key: &str, shard: u32) -> Request {
    let mut r = Request::new(model, "hello");
    r.headers.credential = Some(Credential(key.into()));
    r.headers.shard_key = Some(shard.to_le_bytes().to_vec().into());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_drains_a_removed_worker_connects_a_new_one_and_swaps_keys() {
    let dir = scratch("reload");
    let (w1, w2, w3) = (
        worker_at("w1", &dir.join("w1"), "127.0.0.1:0".parse().unwrap(), 150),
        worker_at("w2", &dir.join("w2"), "127.0.0.1:0".parse().unwrap(), 150),
        worker_at("w3", &dir.join("w3"), "127.0.0.1:0".parse().unwrap(), 150),
    );
    let path = dir.join("edge.toml");
    let id = Identity::load(&ServerTls::Dev {
        dir: dir.join("edge"),
    })
    .unwrap();
    let v1 = edge_toml(&dir, &[("w1", &w1), ("w2", &w2)], &[KEY_A]);
    let edge = edge_from(&v1, &path, &id, 2).await;
    let client = pinned_client(edge.addr, &dir.join("edge").join("cert.pem")).await;

    // Streams of 150 tokens (1.5 s each); keep the ones on w1.
    let mut on_w1 = Vec::new();
    for shard in 0..24u32 {
        let mut g = client.generate(with_key("m", KEY_A, shard)).await.unwrap();
        if routed(&mut g).await.worker == "w1" {
            tokens(&mut g).await;
            on_w1.push(g);
        }
    }
    assert!(!on_w1.is_empty(), "some shard keys land on w1");
    assert_eq!(w1.connections(), 1);

    // v2: w1 leaves, w3 joins; key A is revoked and key B added.
    let v2 = edge_toml(&dir, &[("w2", &w2), ("w3", &w3)], &[KEY_B]);
    let report = reload(&edge, &v2, &path).await;
    assert_eq!(report.generation, 1);
    assert_eq!(report.added, ["w3"]);
    assert_eq!(report.retired, ["w1"]);
    assert_eq!(report.kept, 1);
    assert!(report.restart_required.is_empty(), "{report:?}");

    within(
        "w3 connected",
        edge.router.wait_until(|r| r.healthy_workers() == 2),
    )
    .await;
    // New requests: never w1; key A refused, key B admitted.
    let mut gens = Vec::new();
    for shard in 0..24u32 {
        let mut r = with_key("m", KEY_B, shard);
        r.headers.max_tokens = Some(3);
        gens.push(client.generate(r).await.unwrap());
    }
    let mut seen = std::collections::BTreeSet::new();
    for g in gens {
        let (routed, _, end) = within("served", g.collect()).await.expect("served");
        assert_eq!(end.completion_tokens, 3);
        seen.insert(routed[0].worker.clone());
    }
    assert!(
        !seen.contains("w1"),
        "a retired worker gets no new request: {seen:?}"
    );
    assert!(seen.contains("w3"), "the new worker gets traffic: {seen:?}");
    let g = client.generate(with_key("m", KEY_A, 0)).await.unwrap();
    match within("refused", g.collect()).await {
        Err(e) => assert_eq!(e.code(), Some(ErrorCode::UNAUTHORIZED), "{e}"),
        Ok(_) => panic!("a revoked key must be refused"),
    }

    // The streams on w1 were not cut: each ends with END and every token.
    for mut g in on_w1 {
        let (n, end) = finish(&mut g, 1).await;
        assert_eq!(
            (n, end.completion_tokens),
            (150, 150),
            "every token relayed"
        );
    }
    // Then the edge closes its connection to w1, and not to the others.
    disconnected(&w1).await;
    assert_eq!(w2.connections(), 1);
    assert_eq!(w3.connections(), 1);

    // An invalid config is rejected with its location; the running one keeps serving.
    let broken = v2.replace(
        "[[region]]\nname = \"r\"\n",
        "[[region]]\nname = \"r\"\nprice_per_mtok = \"free\"\n",
    );
    std::fs::write(&path, &broken).unwrap();
    match edge.reload_file(&path).await {
        Err(ReloadFailure::Invalid(errors)) => {
            let e = &errors.0[0];
            assert_eq!(e.file, path);
            assert_eq!(e.line, 9, "{e}");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(edge.router.topology().generation, 1);
    let mut r = with_key("m", KEY_B, 1);
    r.headers.max_tokens = Some(3);
    let g = client.generate(r).await.unwrap();
    within("still served", g.collect()).await.expect("served");
    let metrics = edge.stats.render(&edge.router);
    assert!(
        metrics.contains("meridian_config_reloads_total{result=\"applied\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("meridian_config_reloads_total{result=\"rejected\"} 1"));
    assert!(metrics.contains("meridian_config_generation 1"));

    edge.stop().await;
    for w in [w1, w2, w3] {
        w.stop().await;
    }
}
