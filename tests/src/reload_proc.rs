//! `meridian edge` reloading its config as a process: on SIGHUP, and when its config file
//! changes the way a mounted Kubernetes ConfigMap changes (the `..data` symlink swapped
//! atomically to a new directory). An invalid file is rejected with `file:line` in the log and
//! the running config keeps serving.

use std::path::Path;
use std::time::Duration;

use crate::process::{start_worker, Proc};
use crate::support::*;

/// `GET path` on the admin listener at `base` (`http://127.0.0.1:PORT`), the body.
pub(crate) async fn admin_get(base: &str, path: &str) -> String {
    http_get(base, path).await.1
}

/// Waits until the edge's `/metrics` contains `line`.
async fn metric(base: &str, line: &str) {
    within(line, async {
        while !admin_get(base, "/metrics").await.contains(line) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// Writes `toml` as version `v` of a ConfigMap-style directory and swaps `..data` to it
/// atomically (symlink, then rename over the old one), as the kubelet does.
fn publish(cm: &Path, v: u32, toml: &str) {
    let version = cm.join(format!("..v{v}"));
    std::fs::create_dir_all(&version).unwrap();
    std::fs::write(version.join("edge.toml"), toml).unwrap();
    let tmp = cm.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..v{v}"), &tmp).unwrap();
    std::fs::rename(&tmp, cm.join("..data")).unwrap();
}

fn edge_toml(watch_ms: u64, workers: &str, extra: &str) -> String {
    format!(
        "[edge]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nwatch_config_ms = {watch_ms}\n\
         [tls]\ndev_cert_dir = \"../edge-cert\"\n[auth]\nrequired = false\n\
         [[region]]\nname = \"seoul\"\n[[region]]\nname = \"tokyo\"\n[areas]\njp = [\"seoul\", \"tokyo\"]\n{extra}{workers}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_a_swapped_configmap_reload_an_edge_process() {
    let dir = scratch("reload-proc");
    let mut entries = Vec::new();
    let mut workers = Vec::new();
    for (name, region) in [("w1", "seoul"), ("w2", "tokyo")] {
        let (p, entry) = start_worker(&dir, name, region).await;
        entries.push(entry);
        workers.push(p);
    }
    let cm = dir.join("cm");
    std::fs::create_dir_all(&cm).unwrap();
    // v1: w1 only, reloads on SIGHUP only.
    publish(&cm, 1, &edge_toml(0, &entries[0], ""));
    std::os::unix::fs::symlink("..data/edge.toml", cm.join("edge.toml")).unwrap();
    let path = cm.join("edge.toml");
    let log = dir.join("edge.log");
    let mut edge = Proc::start_logging(
        &["edge", "--json", "--config", path.to_str().unwrap()],
        Some(&log),
    );
    let started = edge.json_line().await;
    let admin = started["admin_url"].as_str().unwrap().to_owned();
    assert_eq!(edge.json_line().await["ready"], true);
    metric(&admin, "meridian_config_generation 0").await;

    // v2 (w1 and w2, watched every 100 ms) is published, then SIGHUP applies it.
    publish(&cm, 2, &edge_toml(100, &entries.concat(), ""));
    edge.signal("HUP");
    metric(
        &admin,
        "meridian_config_reloads_total{result=\"applied\"} 1",
    )
    .await;
    metric(
        &admin,
        "meridian_worker_healthy{worker=\"w2\",region=\"tokyo\"} 1",
    )
    .await;

    // v3 is invalid: rejected (watched, no signal) with its location; v2 keeps running.
    let bad = edge_toml(100, &entries.concat(), "[routing]\nload_factr = 2\n");
    let bad_line = bad
        .lines()
        .position(|l| l.starts_with("load_factr"))
        .unwrap()
        + 1;
    publish(&cm, 3, &bad);
    metric(
        &admin,
        "meridian_config_reloads_total{result=\"rejected\"} 1",
    )
    .await;
    let logged = std::fs::read_to_string(&log).unwrap();
    let located = format!("{}:{bad_line}:", path.display());
    assert!(
        logged.contains(&located) && logged.contains("load_factr"),
        "the log names the file and line ({located}):\n{logged}"
    );
    assert!(admin_get(&admin, "/metrics")
        .await
        .contains("meridian_config_generation 1"));

    // v4: w1 leaves the topology: the change is seen through the symlink swap alone.
    publish(&cm, 4, &edge_toml(100, &entries[1], ""));
    metric(
        &admin,
        "meridian_config_reloads_total{result=\"applied\"} 2",
    )
    .await;
    metric(&admin, "meridian_config_generation 2").await;
    let routes = admin_get(&admin, "/routes").await;
    assert!(!routes.contains("\"w1\""), "{routes}");
    // Workers catch SIGHUP (logged) rather than dying: w2 gets one, then serves.
    workers[1].signal("HUP");
    let client = pinned_client(
        started["edge_addr"].as_str().unwrap().parse().unwrap(),
        Path::new(started["cert"].as_str().unwrap()),
    )
    .await;
    let mut r = request("jp", "after the reloads");
    r.headers.max_tokens = Some(3);
    let (route, _, end) = within("served", client.generate(r).await.unwrap().collect())
        .await
        .unwrap();
    assert_eq!(route[0].worker, "w2");
    assert_eq!(end.completion_tokens, 3);
    assert!(
        workers[1].child.try_wait().unwrap().is_none(),
        "w2 survived SIGHUP"
    );
    client.close().await;

    edge.terminate().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A self-signed certificate for `localhost` written to `dir/cert.pem` and `dir/key.pem`
/// (atomically, key first), as a renewed Secret would be.
fn write_cert(dir: &Path) -> String {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (ck.cert.pem(), ck.signing_key.serialize_pem());
    for (name, text) in [("key.pem", &key), ("cert.pem", &cert)] {
        let tmp = dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
    cert
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_to_new_connections() {
    let dir = scratch("cert-rotation");
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    write_cert(&tls);
    let old = dir.join("old.pem");
    std::fs::copy(tls.join("cert.pem"), &old).unwrap();
    let (_worker_proc, worker) = start_worker(&dir, "w1", "seoul").await;
    let toml = edge_toml(100, &worker, "").replace(
        "[tls]\ndev_cert_dir = \"../edge-cert\"\n",
        "[tls]\ncert = \"tls/cert.pem\"\nkey = \"tls/key.pem\"\n",
    );
    let path = dir.join("edge.toml");
    std::fs::write(&path, toml).unwrap();
    let mut edge = Proc::start(&["edge", "--json", "--config", path.to_str().unwrap()]);
    let started = edge.json_line().await;
    let addr: std::net::SocketAddr = started["edge_addr"].as_str().unwrap().parse().unwrap();
    let admin = started["admin_url"].as_str().unwrap().to_owned();
    pinned_client(addr, &old).await.close().await;

    // The Secret is renewed: the edge notices the files changed and new connections get the
    // new certificate (a client pinning it connects), without touching the config file.
    write_cert(&tls);
    metric(
        &admin,
        "meridian_config_reloads_total{result=\"applied\"} 1",
    )
    .await;
    let new = tls.join("cert.pem");
    let trust = meridian_protocol::client::Trust::pin_file(&new).unwrap();
    let cfg = meridian_protocol::client::ClientConfig::new(trust);
    let client = within(
        "connect with the renewed certificate",
        meridian_protocol::client::Client::connect(addr, cfg),
    )
    .await
    .expect("the new certificate is served");
    client.close().await;
    edge.terminate().await;
    let _ = std::fs::remove_dir_all(&dir);
}
