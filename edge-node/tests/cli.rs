//! The `meridian` command line as a user runs it (a real process per test).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn meridian(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(args)
        .output()
        .expect("meridian runs")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

#[test]
fn every_subcommand_has_help() {
    for sub in [
        &[][..],
        &["demo"],
        &["edge"],
        &["worker"],
        &["check"],
        &["route"],
    ] {
        let mut args = sub.to_vec();
        args.push("--help");
        let out = meridian(&args);
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage: meridian"), "{args:?}: {text}");
    }
}

#[test]
fn check_accepts_every_example_config() {
    let dir = repo().join("examples/local");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let out = meridian(&["check", "--config", path.to_str().unwrap()]);
            assert!(
                out.status.success(),
                "{}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            n += 1;
        }
    }
    assert_eq!(n, 11, "edge.toml and ten worker configs");
}

#[test]
fn check_reports_every_error_with_file_and_line() {
    let path = std::env::temp_dir().join(format!("meridian-cli-bad-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        "[[region]]\nname = \"tokyo\"\n\n[areas]\njp = [\"seoul\"]\n\n[[worker]]\nname = \"w\"\nregion = \"mars\"\naddress = \"127.0.0.1:1\"\nmodels = [\"m\"]\npin = \"c.pem\"\n[auth]\nrequired = false\n",
    )
    .unwrap();
    let out = meridian(&["check", "--config", path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let file = path.display().to_string();
    assert!(
        err.contains(&format!("{file}:5:7: unknown region `seoul`")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{file}:9:10: worker `w` is in unknown region `mars`"
        )),
        "{err}"
    );
    assert!(err.contains("2 error(s)"), "{err}");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn route_explains_decisions_and_failures() {
    let cfg = repo().join("examples/local/edge.toml");
    let cfg = cfg.to_str().unwrap();
    let out = meridian(&[
        "route",
        "--config",
        cfg,
        "--area",
        "jp",
        "--shard-key",
        "s1",
        "--json",
    ]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["region"], "seoul");
    assert_eq!(v["candidates"][0], "seoul");

    let out = meridian(&[
        "route",
        "--config",
        cfg,
        "--area",
        "jp",
        "--tenant",
        "bund",
        "--down",
        "frankfurt-sovereign-1,frankfurt-sovereign-2",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("RESIDENCY_UNAVAILABLE"), "{text}");
    assert!(text.contains("not allowed by residency policy"), "{text}");
}

#[test]
fn demo_json_runs_the_scenario() {
    let out = meridian(&[
        "demo",
        "--json",
        "--ttft-ms",
        "2",
        "--itl-ms",
        "1",
        "--max-tokens",
        "4",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), 8);
    for l in &lines {
        for key in [
            "step",
            "area",
            "tenant",
            "residency",
            "region",
            "worker",
            "tokens",
            "ttft_ms",
            "error",
        ] {
            assert!(l.get(key).is_some(), "missing `{key}` in {l}");
        }
        assert_eq!(l["ok"], true, "{l}");
    }
    assert_eq!(
        lines[3]["error"], "UNAUTHORIZED",
        "another tenant's claim is refused"
    );
    assert_eq!(lines[7]["error"], "RESIDENCY_UNAVAILABLE");
}

/// A plain HTTP/1.1 GET: (status, body).
fn http_get(addr: &str, path: &str) -> (u16, String) {
    let (status, _, body) = common::exchange(addr, "GET", path, &[], "");
    (status, body)
}

#[test]
fn demo_serve_exposes_admin_endpoints_and_metrics() {
    let s = common::serve("1", "16");
    let admin = s.admin.clone();
    assert_eq!(http_get(&admin, "/healthz").0, 200);
    let (status, ready) = http_get(&admin, "/readyz");
    assert_eq!(status, 200, "{ready}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&ready).unwrap()["healthy_workers"],
        10
    );

    // One request from Tokyo through the edge, then its traces in /metrics and /routes.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (region, tokens) = rt.block_on(async {
        use meridian_protocol::client::{Client, ClientConfig, Request, Trust};
        let trust = Trust::pin_file(&s.cert).unwrap();
        let key = meridian_fabric::demo::demo_key("acme").unwrap();
        let config = ClientConfig::new(trust).with_credential(key);
        let client = Client::connect(s.edge.parse().unwrap(), config)
            .await
            .unwrap();
        let mut req = Request::new("llama-3-8b", "hello");
        req.headers.area = Some("jp".into());
        let (routed, _, end) = client.generate(req).await.unwrap().collect().await.unwrap();
        client.close().await;
        (routed[0].region.clone(), end.completion_tokens)
    });
    assert_eq!(region, "seoul");
    let (status, metrics) = http_get(&admin, "/metrics");
    assert_eq!(status, 200);
    for expect in [
        "meridian_requests_total 1".to_string(),
        format!("meridian_tokens_relayed_total {tokens}"),
        "meridian_routes_total{region=\"seoul\"} 1".into(),
        "meridian_ttft_seconds_count{region=\"seoul\",model=\"llama-3-8b\"} 1".into(),
        "meridian_e2e_seconds_count{region=\"seoul\",model=\"llama-3-8b\"} 1".into(),
        "meridian_worker_healthy{worker=\"tokyo-1\",region=\"tokyo\"} 1".into(),
        "meridian_errors_total{code=\"RESIDENCY_UNAVAILABLE\"} 0".into(),
    ] {
        assert!(
            metrics.contains(&expect),
            "missing `{expect}` in /metrics:\n{metrics}"
        );
    }
    let (_, routes) = http_get(&admin, "/routes");
    let routes: serde_json::Value = serde_json::from_str(&routes).unwrap();
    assert_eq!(routes["regions"].as_array().unwrap().len(), 5);
    assert_eq!(routes["areas"]["fr"][0], "frankfurt");
    assert!(routes["workers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|w| w["healthy"] == true));
    assert_eq!(http_get(&admin, "/nope").0, 404);
}

#[test]
fn live_explanations_scores_prices_and_spend() {
    let s = common::serve("1", "16");
    let admin = s.admin.clone();
    // Upstream RTTs are sampled every 100 ms: wait until every region is measured.
    let start = std::time::Instant::now();
    loop {
        let (_, routes) = http_get(&admin, "/routes");
        let v: serde_json::Value = serde_json::from_str(&routes).unwrap();
        if v["regions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"]["rtt_ms"].is_number())
        {
            assert_eq!(v["objective"], "latency");
            break;
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(30), "{v}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // `meridian route --admin` explains on the live state, with every region's inputs.
    let url = format!("http://{admin}");
    let out = meridian(&["route", "--admin", &url, "--area", "jp", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["region"], "seoul");
    assert_eq!(v["scores"][0]["region"], "seoul");
    assert_eq!(v["scores"][0]["placed"], "preferred #1");
    assert!(v["scores"][0]["rtt_ms"].is_number(), "{v}");
    assert_eq!(v["scores"][0]["price_per_mtok"], 0.6);
    let out = meridian(&["route", "--admin", &url, "--area", "jp"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("preferred #1") && text.contains("rtt"),
        "{text}"
    );

    // Prices change at run time.
    let put = |path: &str, body: &str| common::exchange(&admin, "PUT", path, &[], body);
    let (status, _, body) = put("/regions/seoul", r#"{"price_per_mtok": 0.25}"#);
    assert_eq!(status, 200, "{body}");
    // The scorer publishes the new price with its next tick (every 250 ms).
    let start = std::time::Instant::now();
    loop {
        let (_, routes) = http_get(&admin, "/routes");
        let v: serde_json::Value = serde_json::from_str(&routes).unwrap();
        let seoul = v["regions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "seoul")
            .unwrap()
            .clone();
        if seoul["status"]["price_per_mtok"] == 0.25 {
            break;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(30),
            "{seoul}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for (path, body, code) in [
        ("/regions/seoul", "not json", 400),
        ("/regions/seoul", r#"{"price_per_mtok": -1}"#, 400),
        ("/regions/seoul", r#"{"colour": 1}"#, 400),
        ("/regions/seoul", "{}", 400),
        ("/regions/atlantis", r#"{"price_per_mtok": 1}"#, 404),
    ] {
        assert_eq!(put(path, body).0, code, "{path} {body}");
    }
    // The body limit (4 KiB): a larger update is refused with a message, not buffered.
    let big = format!(r#"{{"price_per_mtok": 1{}}}"#, " ".repeat(5000));
    let (status, _, body) = put("/regions/seoul", &big);
    assert_eq!(status, 400);
    assert!(body.contains("at most 4096 bytes"), "{body}");
    assert_eq!(common::exchange(&admin, "POST", "/routes", &[], "").0, 405);

    // Spend: tokens × the region's price at the time.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tokens = rt.block_on(async {
        use meridian_protocol::client::{Client, ClientConfig, Request, Trust};
        let config = ClientConfig::new(Trust::pin_file(&s.cert).unwrap())
            .with_credential(meridian_fabric::demo::demo_key("acme").unwrap());
        let client = Client::connect(s.edge.parse().unwrap(), config)
            .await
            .unwrap();
        let mut req = Request::new("llama-3-8b", "hello");
        req.headers.area = Some("jp".into());
        let (_, _, end) = client.generate(req).await.unwrap().collect().await.unwrap();
        client.close().await;
        end.completion_tokens
    });
    let (_, metrics) = http_get(&admin, "/metrics");
    let line = metrics
        .lines()
        .find(|l| l.starts_with("meridian_cost_usd_total{region=\"seoul\",model=\"llama-3-8b\"}"))
        .unwrap_or_else(|| panic!("no seoul spend in:\n{metrics}"));
    let spent: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    let expected = tokens as f64 * 0.25 / 1e6;
    assert!((spent - expected).abs() < 1e-12, "{line} vs {expected}");
    for family in [
        "meridian_upstream_rtt_seconds{worker=\"seoul-1\",region=\"seoul\"}",
        "meridian_region_rtt_seconds{region=\"seoul\"}",
        "meridian_region_price_per_mtok{region=\"seoul\"}",
        "meridian_spills_total{reason=\"degraded\"} 0",
        "meridian_worker_ejections_total{worker=\"seoul-1\",region=\"seoul\"} 0",
        "meridian_region_demotions_total{reason=\"rtt\"} 0",
    ] {
        assert!(
            metrics.contains(family),
            "missing `{family}` in:\n{metrics}"
        );
    }
}
