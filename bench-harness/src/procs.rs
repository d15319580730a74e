//! Child processes for the suite: `meridian worker`/`meridian edge` started with `--json`,
//! their startup lines parsed, their CPU time and RSS read from /proc.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, Context};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// A running `meridian` (or `meridian-bench impair`) process.
pub struct Proc {
    /// The child.
    pub child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    stdin: Option<ChildStdin>,
}

impl Proc {
    /// Starts `meridian ARGS` with stdout piped.
    pub fn start(bin: &Path, args: &[&str]) -> anyhow::Result<Proc> {
        Self::spawn(bin, args, false)
    }

    /// Starts `BIN ARGS` with stdout and stdin piped (commands go in with [`Proc::command`]).
    pub fn start_controlled(bin: &Path, args: &[&str]) -> anyhow::Result<Proc> {
        Self::spawn(bin, args, true)
    }

    fn spawn(bin: &Path, args: &[&str], stdin: bool) -> anyhow::Result<Proc> {
        let mut child = Command::new(bin)
            .args(args)
            .env("MERIDIAN_LOG", "warn")
            .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let lines = BufReader::new(child.stdout.take().context("stdout piped")?).lines();
        let stdin = child.stdin.take();
        Ok(Proc {
            child,
            lines,
            stdin,
        })
    }

    /// Writes `line` to the process's stdin and returns its JSON answer line.
    pub async fn command(&mut self, line: &str) -> anyhow::Result<Value> {
        let stdin = self.stdin.as_mut().context("stdin not piped")?;
        stdin.write_all(format!("{line}\n").as_bytes()).await?;
        stdin.flush().await?;
        self.json_line().await
    }

    /// The next stdout line, as JSON.
    pub async fn json_line(&mut self) -> anyhow::Result<Value> {
        let read =
            tokio::time::timeout(std::time::Duration::from_secs(60), self.lines.next_line()).await;
        let Ok(Ok(Some(line))) = read else {
            bail!("process exited or timed out before printing its startup line")
        };
        serde_json::from_str(&line).with_context(|| format!("not JSON: {line}"))
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// User + system CPU time so far, microseconds (from /proc/PID/stat).
    pub fn cpu_us(&self) -> anyhow::Result<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        // Fields after the parenthesised command name; utime and stime are fields 14, 15.
        let after = stat.rsplit_once(')').context("malformed stat")?.1;
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
        Ok(ticks * 1_000_000 / clock_ticks())
    }

    /// Resident set size, KiB (from /proc/PID/status).
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .context("no VmRSS")?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .context("malformed VmRSS")?
            .parse()?)
    }
}

/// Clock ticks per second for /proc times (USER_HZ; 100 on Linux).
fn clock_ticks() -> u64 {
    100
}

/// The `meridian` binary next to this one, or `MERIDIAN_BIN`.
pub fn meridian_bin(explicit: Option<&PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.clone());
    }
    if let Ok(p) = std::env::var("MERIDIAN_BIN") {
        return Ok(p.into());
    }
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("meridian");
    if !bin.exists() {
        bail!(
            "{} not found: build it (cargo build -p meridian-edge) or pass --meridian PATH",
            bin.display()
        );
    }
    Ok(bin)
}

/// A synthetic `meridian worker` process called `name` in `region` (config and certificates
/// under `dir`, the certificate shared by every worker there): `ttft_ms` to the first token,
/// then `max_tokens` tokens `itl_ms` apart, at most `max_concurrent` streams; `extra` lines go
/// in its `[worker]` table. Returns it with its address and certificate.
pub async fn synthetic_worker(
    bin: &Path,
    dir: &Path,
    (name, region): (&str, &str),
    (ttft_ms, itl_ms, max_tokens): (u64, u64, u64),
    max_concurrent: u64,
    extra: &str,
) -> anyhow::Result<(Proc, String, String)> {
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "[worker]\nname = \"{name}\"\nregion = \"{region}\"\nlisten = \"127.0.0.1:0\"\n\
             models = [\"llama-3-8b\"]\nmax_concurrent = {max_concurrent}\n{extra}\n\n[tls]\ndev_cert_dir = \"certs\"\n\n\
             [backend]\nkind = \"synthetic\"\nttft_ms = {ttft_ms}\nitl_ms = {itl_ms}\nmax_tokens = {max_tokens}\n"
        ),
    )?;
    let mut w = Proc::start(
        bin,
        &[
            "worker",
            "--json",
            "--config",
            cfg.to_str().context("utf-8 path")?,
        ],
    )?;
    let line = w.json_line().await?;
    let addr = line["addr"].as_str().context("worker addr")?.to_owned();
    let cert = line["cert"].as_str().context("worker cert")?.to_owned();
    Ok((w, addr, cert))
}

/// A `meridian edge --json` started and ready: the process, its QUIC address and
/// certificate, and its whole startup line (`admin_url`, …).
pub struct Edge {
    /// The process.
    pub proc: Proc,
    /// Its QUIC address.
    pub addr: std::net::SocketAddr,
    /// Its certificate, to pin.
    pub cert: PathBuf,
    /// Its startup line.
    pub started: Value,
}

/// Starts `meridian edge --json --config CONFIG EXTRA…` and waits until it is ready.
pub async fn start_edge(bin: &Path, config: &Path, extra: &[&str]) -> anyhow::Result<Edge> {
    let mut args = vec![
        "edge",
        "--json",
        "--config",
        config.to_str().context("utf-8 path")?,
    ];
    args.extend(extra);
    let mut proc = Proc::start(bin, &args)?;
    let started = proc.json_line().await?;
    let ready = proc.json_line().await?;
    if ready["ready"] != true {
        bail!("edge did not report ready: {ready}");
    }
    let addr = (started["edge_addr"].as_str().context("edge_addr")?).parse()?;
    let cert = PathBuf::from(started["cert"].as_str().context("cert")?);
    Ok(Edge {
        proc,
        addr,
        cert,
        started,
    })
}

/// The synthetic workers' behaviour (`wan`, `resume`, `reload`, `suite`).
#[derive(clap::Args, Debug, Clone)]
pub struct Synthetic {
    /// Workers' time to first token, ms.
    #[arg(long, default_value_t = 20)]
    pub ttft_ms: u64,
    /// Tokens per second per stream.
    #[arg(long, default_value_t = 50)]
    pub tokens_per_s: u64,
    /// Tokens per response.
    #[arg(long, default_value_t = 50)]
    pub max_tokens: u64,
}

impl Synthetic {
    /// `(ttft_ms, itl_ms, max_tokens)` for [`synthetic_worker`].
    pub fn timing(&self) -> (u64, u64, u64) {
        (
            self.ttft_ms,
            1000 / self.tokens_per_s.max(1),
            self.max_tokens,
        )
    }
}
