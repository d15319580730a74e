//! Helpers shared by the CLI test binaries.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

/// One HTTP/1.1 exchange: (status, headers, body). Chunked bodies are de-chunked.
pub fn exchange(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut tcp = TcpStream::connect(addr).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    // Authenticated as the demo tenant `acme` unless the test says otherwise.
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
    {
        req += &format!("Authorization: Bearer {}\r\n", demo_key());
    }
    req += "\r\n";
    tcp.write_all(req.as_bytes()).unwrap();
    tcp.write_all(body.as_bytes()).unwrap();
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    let body = if head.to_lowercase().contains("transfer-encoding: chunked") {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    (status, head.to_lowercase(), body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").unwrap();
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out += &rest[..n];
        s = &rest[n + 2..];
    }
}

/// The demo API key of tenant `acme`.
pub fn demo_key() -> &'static str {
    meridian_fabric::demo::demo_key("acme").expect("demo key")
}

/// An `[auth]` section that accepts the demo's keys (as `meridian demo` does).
pub fn demo_auth() -> String {
    let mut s = String::from("[auth]\n");
    for (tenant, key) in meridian_fabric::demo::DEMO_KEYS {
        let id = key.split('_').nth(1).expect("mk_<id>_<secret>");
        s += &format!(
            "[[auth.api_keys]]\nid = \"{id}\"\ntenant = \"{tenant}\"\nsha256 = \"{}\"\n",
            meridian_fabric::auth::key::hex(&meridian_fabric::auth::key::digest(key))
        );
    }
    s
}

/// A running `meridian demo --serve`: addresses without `http://`, killed on drop.
pub struct Serve {
    pub child: Child,
    pub http: String,
    pub admin: String,
    pub edge: String,
    pub cert: String,
    pub dir: std::path::PathBuf,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts `meridian demo --serve` with the given synthetic timing.
pub fn serve(itl_ms: &str, max_tokens: &str) -> Serve {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("meridian-http-{}-{n}", std::process::id()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meridian"));
    cmd.args([
        "demo",
        "--serve",
        "--json",
        "--listen",
        "127.0.0.1:0",
        "--ttft-ms",
        "2",
        "--itl-ms",
        itl_ms,
    ])
    .args([
        "--max-tokens",
        max_tokens,
        "--cert-dir",
        dir.to_str().unwrap(),
    ]);
    started(cmd, dir)
}

/// Starts `meridian edge` with `config` (written to a fresh directory; `{dir}` in it is
/// replaced by that directory). Its workers need not exist: the front door and the QUIC
/// listener come up at once.
pub fn edge_with(config: &str) -> Serve {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("meridian-edge-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("edge.toml");
    let config = config
        .replace("{dir}", dir.to_str().unwrap())
        .replace("{auth}", &demo_auth());
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meridian"));
    cmd.args(["edge", "--json", "--config", path.to_str().unwrap()]);
    started(cmd, dir)
}

/// Spawns `cmd`, which prints a JSON line with its addresses first, and reads that line.
fn started(mut cmd: Command, dir: std::path::PathBuf) -> Serve {
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let addr = |k: &str| {
        v[k].as_str()
            .unwrap_or_default()
            .trim_start_matches("http://")
            .to_owned()
    };
    Serve {
        http: addr("http_url"),
        admin: addr("admin_url"),
        edge: addr("edge_addr"),
        cert: addr("cert"),
        child,
        dir,
    }
}

/// An HTTP/3 connection to the edge's UDP port at `addr` (certificate pinned from `cert`):
/// the request sender; the connection's driver runs on a spawned task.
pub async fn h3_connect(
    addr: &str,
    cert: &str,
) -> h3::client::SendRequest<h3_quinn::OpenStreams, bytes::Bytes> {
    let trust = meridian_protocol::client::Trust::pin_file(cert).unwrap();
    let crypto = meridian_protocol::client::tls::client_crypto(&trust, &[b"h3"]).unwrap();
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(crypto).unwrap();
    let mut ep = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    ep.set_default_client_config(quinn::ClientConfig::new(std::sync::Arc::new(crypto)));
    let conn = ep
        .connect(addr.parse().unwrap(), "localhost")
        .unwrap()
        .await
        .unwrap();
    let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn))
        .await
        .unwrap();
    tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });
    send
}
