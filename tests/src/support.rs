//! Shared helpers: a demo topology per test, clients, raw streams, bounded waits.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use meridian_fabric::config::SyntheticBackend;
use meridian_fabric::demo::Demo;
use meridian_fabric::worker::WorkerStats;
use meridian_protocol::client::{
    Client, ClientConfig, ClientError, Event, Generation, Request, Trust,
};
use meridian_protocol::Routed;

/// Upper bound for any single wait: a hung test fails instead of hanging CI.
pub const LIMIT: Duration = Duration::from_secs(30);

/// Panics anywhere in this test process (spawned server tasks included) from polling a
/// finished future — a bug tokio would otherwise swallow with the task.
static RESUMED_PANICS: AtomicUsize = AtomicUsize::new(0);

/// Starts counting "resumed after completion" panics; returns the count so far.
pub fn resumed_panics() -> usize {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.to_string().contains("after completion") {
                RESUMED_PANICS.fetch_add(1, Ordering::Relaxed);
            }
            prev(info)
        }));
    });
    RESUMED_PANICS.load(Ordering::Relaxed)
}

/// Awaits `f`, failing the test if it hangs.
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Polls `cond` every 50 ms until it holds, failing the test after `bound`.
pub async fn eventually(what: &str, bound: Duration, cond: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < bound, "not within {bound:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A unique scratch directory under the system temp dir.
pub fn scratch(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "meridian-test-{}-{name}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir is writable");
    dir
}

/// Starts the demo topology with the given synthetic timing.
pub async fn topology(name: &str, ttft_ms: u64, itl_ms: u64, max_tokens: u64) -> Demo {
    let backend = SyntheticBackend {
        ttft: Duration::from_millis(ttft_ms),
        itl: Duration::from_millis(itl_ms),
        max_tokens,
    };
    within(
        "topology start",
        Demo::start(&scratch(name), "127.0.0.1:0".parse().unwrap(), backend),
    )
    .await
    .expect("demo topology starts")
}

/// A client connected to the demo's edge.
pub async fn client(demo: &Demo) -> Client {
    let trust = Trust::pin_file(&demo.cert_path).expect("demo cert is readable");
    let key = meridian_fabric::demo::demo_key("acme").expect("demo key");
    within(
        "connect",
        Client::connect(
            demo.edge.addr,
            ClientConfig::new(trust).with_credential(key),
        ),
    )
    .await
    .expect("client connects")
}

/// A client of the edge at `addr` that pins the certificate in `cert`, no credential.
pub async fn pinned_client(addr: std::net::SocketAddr, cert: &std::path::Path) -> Client {
    let trust = Trust::pin_file(cert).expect("certificate readable");
    within("connect", Client::connect(addr, ClientConfig::new(trust)))
        .await
        .expect("client connects")
}

/// A worker `w` in region `r` serving model `m` with a synthetic backend (`ttft`, `itl` in
/// ms, `tokens` per answer) and certificate `tls`, on a free loopback port.
pub fn worker_config(
    tls: meridian_fabric::config::ServerTls,
    (ttft, itl, tokens): (u64, u64, u64),
) -> meridian_fabric::config::WorkerConfig {
    use meridian_fabric::config::{Backend, SyntheticBackend, WorkerConfig};
    WorkerConfig {
        name: "w".into(),
        region: "r".into(),
        listen: "127.0.0.1:0".parse().expect("valid"),
        models: vec!["m".into()],
        max_concurrent: 64,
        max_prompt_bytes: 1 << 20,
        load_report: Duration::from_millis(100),
        health: None,
        ack_eliciting_threshold: None,
        link: Default::default(),
        tls,
        client_ca: None,
        backend: Backend::Synthetic(SyntheticBackend {
            ttft: Duration::from_millis(ttft),
            itl: Duration::from_millis(itl),
            max_tokens: tokens,
        }),
        telemetry: None,
    }
}

/// An edge from `toml` (read as file `path`, for relative paths) with certificate `id`, once
/// `healthy` of its workers are connected.
pub async fn edge_from(
    toml: &str,
    path: &std::path::Path,
    id: &meridian_fabric::tls::Identity,
    healthy: usize,
) -> meridian_fabric::edge::EdgeHandle {
    let config = meridian_fabric::config::parse_config(toml, path).expect("valid test config");
    let e = meridian_fabric::edge::spawn(
        std::sync::Arc::new(config),
        id,
        meridian_fabric::shutdown::Shutdown::new(),
    )
    .expect("edge starts");
    within(
        "workers up",
        e.router.wait_until(|r| r.healthy_workers() == healthy),
    )
    .await;
    e
}

/// One request for `model` through `client`, collected: (text, END).
pub async fn served(client: &Client, model: &str) -> (String, meridian_protocol::End) {
    let g = client
        .generate(Request::new(model, "hi"))
        .await
        .expect("request sent");
    let (_, text, end) = within("served", g.collect()).await.expect("served");
    (text, end)
}

/// The demo credential of `tenant`.
pub fn credential(tenant: &str) -> Option<meridian_protocol::Credential> {
    meridian_fabric::demo::demo_key(tenant).map(|k| meridian_protocol::Credential(k.into()))
}

/// A request for the demo model from `area`.
pub fn request(area: &str, prompt: &str) -> Request {
    let mut r = Request::new(meridian_fabric::demo::MODEL, prompt.to_owned());
    r.headers.area = Some(area.into());
    r
}

/// The stats of the demo worker called `name`.
pub fn worker_stats<'a>(demo: &'a Demo, name: &str) -> &'a WorkerStats {
    let i = demo
        .config
        .workers
        .iter()
        .position(|w| w.name == name)
        .expect("known worker");
    &demo.workers[i].as_ref().expect("worker running").stats
}

/// Kills the demo worker called `name` abruptly.
pub fn kill_worker(demo: &mut Demo, name: &str) {
    let i = demo
        .config
        .workers
        .iter()
        .position(|w| w.name == name)
        .expect("known worker");
    demo.workers[i].take().expect("worker running").kill();
}

/// The next event, which must be ROUTED.
pub async fn routed(g: &mut Generation) -> Routed {
    match within("routed", g.next()).await.unwrap() {
        Some(Event::Routed(r)) => r,
        other => panic!("expected ROUTED, got {other:?}"),
    }
}

/// The next event, which must be TOKENS.
pub async fn tokens(g: &mut Generation) {
    let ev = within("tokens", g.next()).await.unwrap();
    assert!(
        matches!(ev, Some(Event::Tokens(_))),
        "expected TOKENS, got {ev:?}"
    );
}

/// Reads past any further tokens to the error that must end the generation.
pub async fn error_after_tokens(g: &mut Generation) -> ClientError {
    within("error after tokens", async {
        loop {
            match g.next().await {
                Ok(Some(Event::Tokens(_))) => continue,
                Ok(other) => panic!("expected an error, got {other:?}"),
                Err(e) => return e,
            }
        }
    })
    .await
}

/// Reads `g` to its END, failing on any error: the TOKENS frames read (plus `already`, the
/// ones read before) and END.
pub async fn finish(g: &mut Generation, already: u64) -> (u64, meridian_protocol::End) {
    within("the stream ends with END", async {
        let mut n = already;
        loop {
            match g.next().await.expect("no error") {
                Some(Event::Tokens(_)) => n += 1,
                Some(Event::End(end)) => break (n, end),
                other => panic!("expected TOKENS or END, got {other:?}"),
            }
        }
    })
    .await
}

/// `GET path` over HTTP/1.1 on `base` (`http://host:port`): the status and the body.
pub async fn http_get(base: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    let req = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .expect("an HTTP status line");
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_owned())
}

/// The names of the workers in `edge`'s running topology.
pub fn names(edge: &meridian_fabric::edge::EdgeHandle) -> Vec<String> {
    let topo = edge.router.topology();
    topo.config.workers.iter().map(|w| w.name.clone()).collect()
}

/// Waits until `edge`'s running topology has exactly the workers `want`.
pub async fn until_workers(edge: &meridian_fabric::edge::EdgeHandle, want: &[&str]) {
    within(&format!("workers {want:?}"), async {
        while names(edge) != want {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Waits until worker `w` has no connection left (an edge drained and closed it).
pub async fn disconnected(w: &meridian_fabric::worker::WorkerHandle) {
    within("the worker's connections closed", async {
        while w.connections() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// A synthetic worker called `name` on `listen` with its certificate in `certs` (workers
/// sharing a directory share a certificate, as the pods of one Deployment share a Secret):
/// 1 ms to the first token, then `tokens` tokens 10 ms apart.
pub fn worker_at(
    name: &str,
    certs: &std::path::Path,
    listen: std::net::SocketAddr,
    tokens: u64,
) -> meridian_fabric::worker::WorkerHandle {
    let mut cfg = worker_config(
        meridian_fabric::config::ServerTls::Dev {
            dir: certs.to_owned(),
        },
        (1, 10, tokens),
    );
    cfg.name = name.into();
    cfg.listen = listen;
    let id = meridian_fabric::tls::Identity::load(&cfg.tls).expect("worker certificate");
    meridian_fabric::worker::spawn(cfg, &id, meridian_fabric::shutdown::Shutdown::new())
        .expect("worker starts")
}
