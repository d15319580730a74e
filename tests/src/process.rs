//! The fabric as separate processes: `meridian worker` ×3 and `meridian edge` on loopback,
//! configured through files, talking real QUIC; a worker SIGKILLed mid-stream.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use meridian_protocol::client::{Client, ClientConfig, Trust};
use meridian_protocol::ErrorCode;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::support::*;

/// The `meridian` binary next to this test binary (built by `cargo test --workspace`).
pub fn meridian_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("meridian");
    assert!(
        bin.exists(),
        "{} missing: run `cargo build -p meridian-edge` (cargo test --workspace builds it)",
        bin.display()
    );
    bin
}

pub(crate) struct Proc {
    pub child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Proc {
    pub fn start(args: &[&str]) -> Proc {
        Self::start_logging(args, None)
    }

    /// [`Proc::start`] with its stderr (info-level logs) written to `log`, if given.
    pub fn start_logging(args: &[&str], log: Option<&Path>) -> Proc {
        let level = match log {
            Some(_) => "info".to_owned(),
            None => std::env::var("TEST_MERIDIAN_LOG").unwrap_or("warn".into()),
        };
        let stderr = match log {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("log file")),
            None => Stdio::inherit(),
        };
        let mut child = Command::new(meridian_bin())
            .args(args)
            .env("MERIDIAN_LOG", level)
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("meridian starts");
        let lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        Proc { child, lines }
    }

    /// Sends `signal` (`HUP`, `TERM`, …) to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("running").to_string();
        let sent = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -{signal} {pid}");
    }

    /// SIGTERM, then waits for a clean exit (a drain).
    pub async fn terminate(&mut self) {
        self.signal("TERM");
        let status = within("exit after SIGTERM", self.child.wait())
            .await
            .unwrap();
        assert!(status.success(), "exited with {status}");
    }

    pub async fn json_line(&mut self) -> Value {
        let line = within("process output", self.lines.next_line())
            .await
            .expect("stdout readable")
            .expect("a line");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }
}

pub(crate) fn worker_config(dir: &Path, name: &str, region: &str) -> PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[worker]\nname = \"{name}\"\nregion = \"{region}\"\nlisten = \"127.0.0.1:0\"\nmodels = [\"llama-3-8b\"]\n\n\
             [tls]\ndev_cert_dir = \"{name}-cert\"\n\n[backend]\nkind = \"synthetic\"\nttft_ms = 0\nitl_ms = 5\nmax_tokens = 100000\n"
        ),
    )
    .unwrap();
    path
}

/// Starts a `meridian worker` process called `name` in `region` (config from
/// [`worker_config`]); returns it and its `[[worker]]` entry for an edge's config.
pub(crate) async fn start_worker(dir: &Path, name: &str, region: &str) -> (Proc, String) {
    let cfg = worker_config(dir, name, region);
    let mut p = Proc::start(&["worker", "--json", "--config", cfg.to_str().unwrap()]);
    let line = p.json_line().await;
    let entry = format!(
        "\n[[worker]]\nname = \"{name}\"\nregion = \"{region}\"\naddress = \"{}\"\nmodels = [\"llama-3-8b\"]\npin = \"{}\"\n",
        line["addr"].as_str().unwrap(),
        line["cert"].as_str().unwrap()
    );
    (p, entry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_processes_route_and_survive_a_killed_worker() {
    let dir = scratch("procs");
    let mut workers = Vec::new();
    let mut entries = String::new();
    for (name, region) in [
        ("seoul-1", "seoul"),
        ("seoul-2", "seoul"),
        ("tokyo-1", "tokyo"),
    ] {
        let (p, entry) = start_worker(&dir, name, region).await;
        entries += &entry;
        workers.push((name, p));
    }
    let edge_cfg = dir.join("edge.toml");
    std::fs::write(
        &edge_cfg,
        format!(
            "[edge]\nlisten = \"127.0.0.1:0\"\npop = \"test-pop\"\nintake_timeout_ms = 300\nadmin = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\n\n[tls]\ndev_cert_dir = \"edge-cert\"\n\n\
             [[region]]\nname = \"seoul\"\n\n[[region]]\nname = \"tokyo\"\n\n[areas]\njp = [\"seoul\", \"tokyo\"]\n{entries}\n[auth]\nrequired = false\n"
        ),
    )
    .unwrap();
    let mut edge = Proc::start(&["edge", "--json", "--config", edge_cfg.to_str().unwrap()]);
    let started = edge.json_line().await;
    let ready = edge.json_line().await;
    assert_eq!(ready["ready"], true, "{ready}");
    let addr = started["edge_addr"].as_str().unwrap().parse().unwrap();
    assert!(
        started["admin_url"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:"),
        "{started}"
    );
    assert!(
        started["http_url"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:"),
        "{started}"
    );
    let trust = Trust::pin_file(started["cert"].as_str().unwrap()).unwrap();
    let client = within("connect", Client::connect(addr, ClientConfig::new(trust)))
        .await
        .unwrap();

    let mut short = request("jp", "hello from another process");
    short.headers.max_tokens = Some(5);
    let (route, _, end) = within(
        "short request",
        client.generate(short).await.unwrap().collect(),
    )
    .await
    .unwrap();
    assert_eq!(route[0].region, "seoul");
    assert_eq!(end.completion_tokens, 5);

    // SIGKILL the worker serving a long stream, mid-stream.
    let mut g = client.generate(request("jp", "a long one")).await.unwrap();
    let serving = routed(&mut g).await.worker;
    tokens(&mut g).await;
    let (_, victim) = workers.iter_mut().find(|(n, _)| *n == serving).unwrap();
    victim.child.start_kill().unwrap();
    victim.child.wait().await.unwrap();
    // The killed process sends nothing more: the edge detects it by the upstream idle
    // timeout and must end the client's stream with an error, never a clean END.
    let err = error_after_tokens(&mut g).await;
    assert_eq!(err.code(), Some(ErrorCode::UPSTREAM_FAILED), "{err}");

    // The edge keeps serving: the next request goes to a live worker.
    let mut again = request("jp", "still there?");
    again.headers.max_tokens = Some(3);
    let (route, _, end) = within(
        "after kill",
        client.generate(again).await.unwrap().collect(),
    )
    .await
    .unwrap();
    assert_ne!(route.last().unwrap().worker, serving);
    assert_eq!(end.completion_tokens, 3);

    // A request whose sender never finishes is failed after the intake timeout, alone.
    let (mut send, recv) = client.connection().open_bi().await.unwrap();
    let headers =
        meridian_protocol::Frame::Headers(meridian_protocol::RequestHeaders::new("llama-3-8b"));
    send.write_chunk(headers.to_bytes()).await.unwrap();
    let mut reader = meridian_protocol::io::FrameReader::new(recv);
    match within("intake timeout", reader.next()).await {
        Ok(Some(meridian_protocol::Frame::Error(e))) => {
            assert_eq!(e.code, ErrorCode::DEADLINE_EXCEEDED)
        }
        other => panic!("expected ERROR DEADLINE_EXCEEDED, got {other:?}"),
    }
    client.close().await;

    // SIGTERM drains and exits cleanly.
    edge.terminate().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_is_ready_until_it_drains() {
    let dir = scratch("worker-probes");
    let cfg = worker_config(&dir, "probed", "r");
    let toml = std::fs::read_to_string(&cfg).unwrap();
    let toml = toml.replacen("[worker]\n", "[worker]\nhealth = \"127.0.0.1:0\"\n", 1);
    std::fs::write(&cfg, toml).unwrap();
    let mut w = Proc::start(&["worker", "--json", "--config", cfg.to_str().unwrap()]);
    let line = w.json_line().await;
    let health = line["health_url"].as_str().expect("health_url").to_owned();
    let get = |path: &'static str| {
        let health = health.clone();
        async move { http_get(&health, path).await.0 }
    };
    assert_eq!(get("/healthz").await, 200);
    assert_eq!(get("/readyz").await, 200);
    assert_eq!(get("/nope").await, 404);
    // A client straight to the worker holds a long stream while the worker drains.
    let addr = line["addr"].as_str().unwrap().parse().unwrap();
    let client = pinned_client(addr, Path::new(line["cert"].as_str().unwrap())).await;
    let mut r = request("jp", "long");
    r.headers.max_tokens = Some(400);
    let mut g = client.generate(r).await.unwrap();
    tokens(&mut g).await;
    w.signal("TERM");
    within("not ready while draining", async {
        while get("/readyz").await != 503 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await;
    let (n, end) = finish(&mut g, 1).await;
    assert_eq!((n, end.completion_tokens), (400, 400));
    assert!(within("worker exit", w.child.wait())
        .await
        .unwrap()
        .success());
}
