//! `meridian-bench` helper processes the tests drive through stdin: the impairment proxy
//! (`impair`: delay, loss, partition) and the OpenAI-compatible mock server (`mock-openai`:
//! told to fail). Real processes, real sockets.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::support::within;

/// The `meridian-bench` binary next to this test binary (built by `cargo test --workspace`).
pub fn bench_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("meridian-bench");
    assert!(
        bin.exists(),
        "{} missing: cargo test --workspace builds it",
        bin.display()
    );
    bin
}

/// A `meridian-bench` process whose stdin takes commands, each answered by a JSON line.
pub struct Controlled {
    _child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    /// The first line it printed.
    pub started: Value,
}

impl Controlled {
    /// Starts `meridian-bench ARGS` and reads its first line.
    pub async fn start(args: &[&str]) -> Controlled {
        let mut child = Command::new(bench_bin())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("meridian-bench starts");
        let stdin = child.stdin.take().expect("piped");
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let started = next_json(&mut lines).await;
        Controlled {
            _child: child,
            stdin,
            lines,
            started,
        }
    }

    /// Sends one command and returns its answer.
    pub async fn command(&mut self, line: &str) -> Value {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("stdin writable");
        self.stdin.flush().await.expect("stdin writable");
        next_json(&mut self.lines).await
    }
}

async fn next_json(lines: &mut Lines<BufReader<ChildStdout>>) -> Value {
    let line = within("meridian-bench output", lines.next_line())
        .await
        .expect("stdout readable")
        .expect("a line");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// An impairment proxy in front of `upstream` with `delay_ms` each way; returns it and the
/// address to send to.
pub async fn impair(upstream: SocketAddr, delay_ms: u64) -> (Controlled, SocketAddr) {
    let p = Controlled::start(&[
        "impair",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &upstream.to_string(),
        "--delay-ms",
        &delay_ms.to_string(),
    ])
    .await;
    let addr = p.started["impair"]
        .as_str()
        .expect("impair address")
        .parse()
        .expect("valid");
    (p, addr)
}

/// An OpenAI-compatible mock server; returns it and its `host:port`.
pub async fn mock_openai(itl_ms: u64, max_tokens: u64) -> (Controlled, String) {
    let p = Controlled::start(&[
        "mock-openai",
        "--listen",
        "127.0.0.1:0",
        "--ttft-ms",
        "1",
        "--itl-ms",
        &itl_ms.to_string(),
        "--max-tokens",
        &max_tokens.to_string(),
    ])
    .await;
    let addr = p.started["mock_openai"]
        .as_str()
        .expect("mock address")
        .to_owned();
    (p, addr)
}
