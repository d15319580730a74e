//! `meridian-bench suite`: one command that starts its own loopback topology (two workers
//! and an edge as child processes), runs the same closed-loop load direct-to-worker and
//! through the edge at several concurrency levels, and reports the ratios, the edge's CPU
//! time per relayed token and its RSS per idle client connection.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use crate::load::{self, LoadArgs};
use crate::procs::{meridian_bin, start_edge, synthetic_worker, Edge, Proc};
use crate::report::Report;
use crate::target::Target;

/// `suite` options.
#[derive(Args, Debug, Clone)]
pub struct SuiteArgs {
    /// A few seconds per step (the CI smoke mode).
    #[arg(long)]
    pub quick: bool,
    /// Concurrency levels.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,5000")]
    pub levels: Vec<u64>,
    /// The synthetic workers.
    #[command(flatten)]
    pub backend: crate::procs::Synthetic,
    /// Measured seconds per step (default 10, or 2 with --quick).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Warm-up seconds per step (default 3, or 1 with --quick).
    #[arg(long)]
    pub warmup: Option<f64>,
    /// Streams per QUIC connection from the load generator.
    #[arg(long, default_value_t = 200)]
    pub streams_per_connection: u64,
    /// Idle client connections opened to measure RSS per connection.
    #[arg(long, default_value_t = 200)]
    pub idle_connections: u64,
    /// Extra lines for the edge's `[edge]` table (tuning experiments), e.g. `send_fairness = false`.
    #[arg(long)]
    pub edge_config: Vec<String>,
    /// Extra lines for each worker's `[worker]` table (tuning experiments).
    #[arg(long)]
    pub worker_config: Vec<String>,
    /// The edge's `max_streams_per_connection` (quinn allocates state per permitted stream);
    /// default: the edge's own default.
    #[arg(long, default_value_t = 256)]
    pub edge_streams: u32,
    /// Runtime threads for the edge process (`meridian --threads`).
    #[arg(long)]
    pub edge_threads: Option<usize>,
    /// The `meridian` binary (default: next to this one).
    #[arg(long)]
    pub meridian: Option<PathBuf>,
    /// Write the report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One concurrency level.
#[derive(Debug, Serialize)]
pub struct Row {
    /// Concurrent streams.
    pub concurrency: u64,
    /// Straight to the workers.
    pub direct: Report,
    /// Through the edge.
    pub edge: Report,
    /// Edge CPU time per relayed token, microseconds.
    pub edge_cpu_us_per_token: f64,
    /// Edge RSS per idle client connection, KiB (measured once on the fresh edge).
    pub edge_rss_kib_per_conn: f64,
    /// Edge p50 TTFT minus direct p50 TTFT, ms.
    pub added_ttft_p50_ms: f64,
    /// Edge p99 TTFT minus direct p99 TTFT, ms.
    pub added_ttft_p99_ms: f64,
    /// Edge tokens/s ÷ direct tokens/s.
    pub throughput_ratio: f64,
}

/// The suite's JSON report.
#[derive(Debug, Serialize)]
pub struct SuiteReport {
    /// Rows by concurrency.
    pub rows: Vec<Row>,
    /// Parameters.
    pub tokens_per_s: u64,
    /// Tokens per response.
    pub max_tokens: u64,
    /// Quick mode.
    pub quick: bool,
}

/// Runs the suite.
pub async fn run(a: SuiteArgs) -> anyhow::Result<SuiteReport> {
    let bin = meridian_bin(a.meridian.as_ref())?;
    let dir = std::env::temp_dir().join(format!("meridian-suite-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    // Workers share one development certificate: start the first, then the second reuses it.
    let mut workers = Vec::new();
    let mut entries = String::new();
    let mut addrs = Vec::new();
    let mut worker_cert = String::new();
    let extra = format!("load_report_ms = 250\n{}", a.worker_config.join("\n"));
    for name in ["bench-1", "bench-2"] {
        let timing = a.backend.timing();
        let (p, addr, cert) =
            synthetic_worker(&bin, &dir, (name, "bench"), timing, 6000, &extra).await?;
        worker_cert = cert;
        entries += &format!(
            "\n[[worker]]\nname = \"{name}\"\nregion = \"bench\"\naddress = \"{addr}\"\nmodels = [\"llama-3-8b\"]\npin = \"{worker_cert}\"\n"
        );
        addrs.push(addr.parse()?);
        workers.push(p);
    }
    // Requests through the edge authenticate like a client's, so the measured cost includes
    // admission.
    let (api_key, keygen) = api_key(&bin, "bench")?;
    let edge_cfg = dir.join("edge.toml");
    std::fs::write(
        &edge_cfg,
        format!(
            "[edge]\nlisten = \"127.0.0.1:0\"\npop = \"bench\"\nmax_streams_per_connection = {}\n{}\n\n\
             [tls]\ndev_cert_dir = \"edge-certs\"\n\n[[region]]\nname = \"bench\"\n{entries}\n\
             [tenants]\nbench = {{}}\n[auth]\n{keygen}",
            a.edge_streams,
            a.edge_config.join("\n")
        ),
    )?;
    let threads = a.edge_threads.map(|t| t.to_string());
    let threads: Vec<&str> = match &threads {
        Some(t) => vec!["--threads", t.as_str()],
        None => vec![],
    };
    let Edge {
        proc: mut edge,
        addr: edge_addr,
        cert: edge_cert,
        ..
    } = start_edge(&bin, &edge_cfg, &threads).await?;

    let (duration, warmup) = match a.quick {
        true => (a.duration.unwrap_or(2.0), a.warmup.unwrap_or(1.0)),
        false => (a.duration.unwrap_or(10.0), a.warmup.unwrap_or(3.0)),
    };
    // Idle-connection memory is measured once, on the fresh edge: after load the allocator
    // reuses freed memory and the delta says little.
    let rss = idle_rss_per_conn(&edge, edge_addr, &edge_cert, a.idle_connections).await?;
    let mut rows = Vec::new();
    for &level in &a.levels {
        let load = LoadArgs {
            concurrency: Some(level),
            rate: None,
            duration,
            warmup,
            connections: level.div_ceil(a.streams_per_connection) as usize,
            prompt_bytes: 256,
            max_tokens: Some(a.backend.max_tokens),
            keys: "uniform:10000".into(),
            areas: String::new(),
            tenants: String::new(),
            model: "llama-3-8b".into(),
            seed: level,
            max_in_flight: 100_000,
            api_key: None,
            tenant_key: Vec::new(),
        };
        let via_load = LoadArgs {
            api_key: Some(api_key.clone()),
            ..load.clone()
        };
        eprintln!("suite: {level} streams direct …");
        let label = format!("direct {} workers", addrs.len());
        let cert = std::path::Path::new(&worker_cert);
        let direct_report = load::run_native(label, &addrs, cert, &load).await?;
        eprintln!("suite: {level} streams via edge …");
        let via = Arc::new(
            Target::native(
                format!("edge {edge_addr}"),
                &[edge_addr],
                &edge_cert,
                load.connections,
            )
            .await?,
        );
        let cpu_before = edge.cpu_us()?;
        let edge_report = load::run(via.clone(), &via_load).await?;
        let cpu = edge.cpu_us()? - cpu_before;
        load::close(via).await;
        let total_tokens = edge_report.tokens.max(1) as f64;
        // CPU was sampled over warm-up plus measurement; scale tokens the same way.
        let tokens_in_window = total_tokens * (warmup + duration) / duration;
        rows.push(Row {
            concurrency: level,
            edge_cpu_us_per_token: cpu as f64 / tokens_in_window,
            edge_rss_kib_per_conn: rss,
            added_ttft_p50_ms: edge_report.ttft_ms.p50 - direct_report.ttft_ms.p50,
            added_ttft_p99_ms: edge_report.ttft_ms.p99 - direct_report.ttft_ms.p99,
            throughput_ratio: edge_report.tokens_per_s / direct_report.tokens_per_s.max(1e-9),
            direct: direct_report,
            edge: edge_report,
        });
    }
    let _ = edge.child.start_kill();
    for mut w in workers {
        let _ = w.child.start_kill();
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(SuiteReport {
        rows,
        tokens_per_s: a.backend.tokens_per_s,
        max_tokens: a.backend.max_tokens,
        quick: a.quick,
    })
}

/// A new API key for `tenant` from `meridian keygen`: the key, and the `[[auth.api_keys]]`
/// lines to put under `[auth]`.
pub fn api_key(bin: &std::path::Path, tenant: &str) -> anyhow::Result<(String, String)> {
    let keygen = std::process::Command::new(bin)
        .args(["keygen", "--id", tenant, "--tenant", tenant])
        .output()
        .context("running meridian keygen")?;
    let keygen = String::from_utf8(keygen.stdout).context("keygen output")?;
    let key = keygen
        .lines()
        .find_map(|l| l.strip_prefix("# mk_").map(|k| format!("mk_{k}")))
        .context("keygen printed no key")?;
    Ok((key, keygen))
}

/// Opens `n` idle client connections to the edge and returns the RSS they added, per
/// connection.
async fn idle_rss_per_conn(
    edge: &Proc,
    addr: std::net::SocketAddr,
    cert: &std::path::Path,
    n: u64,
) -> anyhow::Result<f64> {
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = edge.rss_kib()?;
    let idle = Target::native("idle".into(), &[addr], cert, n as usize).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = edge.rss_kib()?;
    idle.close().await;
    Ok(after.saturating_sub(before) as f64 / n.max(1) as f64)
}

/// Prints the table.
pub fn print(r: &SuiteReport) {
    println!(
        "{:>7} | {:>11} {:>11} {:>6} | {:>9} {:>9} {:>9} {:>9} | {:>10} {:>10}",
        "streams",
        "direct tok/s",
        "edge tok/s",
        "ratio",
        "ttft p50",
        "+p50 ms",
        "ttft p99",
        "+p99 ms",
        "cpu µs/tok",
        "KiB/conn"
    );
    for row in &r.rows {
        println!(
            "{:>7} | {:>11.0} {:>11.0} {:>6.3} | {:>9.2} {:>9.2} {:>9.2} {:>9.2} | {:>10.2} {:>10.1}",
            row.concurrency,
            row.direct.tokens_per_s,
            row.edge.tokens_per_s,
            row.throughput_ratio,
            row.edge.ttft_ms.p50,
            row.added_ttft_p50_ms,
            row.edge.ttft_ms.p99,
            row.added_ttft_p99_ms,
            row.edge_cpu_us_per_token,
            row.edge_rss_kib_per_conn
        );
        let errors: u64 = row
            .direct
            .errors
            .values()
            .chain(row.edge.errors.values())
            .sum();
        if errors > 0 {
            println!(
                "        errors: direct {:?}, edge {:?}",
                row.direct.errors, row.edge.errors
            );
        }
    }
}
