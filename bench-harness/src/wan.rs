//! `meridian-bench wan`: the long-haul hop on an emulated WAN, in one command. Starts worker
//! processes ("in Frankfurt"), a `meridian-bench impair` process in front of each, and an
//! edge ("in Tokyo") that reaches the workers only through the proxies; then runs the same
//! closed-loop load through the edge once per phase — the clean link (delay only), then the
//! impaired link (delay, jitter, loss, reordering) — with the upstream connections kept
//! across phases, as on a real link whose conditions change. Reports each phase against the
//! floor: one long-haul RTT plus the backend's TTFT.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;

use crate::load::{self, LoadArgs};
use crate::procs::{meridian_bin, Proc};
use crate::report::Report;

/// `wan` options.
#[derive(Args, Debug, Clone)]
pub struct WanArgs {
    /// Workers behind the long-haul link (each behind its own proxy).
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// One-way delay of the long-haul hop, ms (115 = Tokyo–Frankfurt's 230 ms RTT).
    #[arg(long, default_value_t = 115.0)]
    pub delay_ms: f64,
    /// Jitter of the impaired phase, ± ms.
    #[arg(long, default_value_t = 5.0)]
    pub jitter_ms: f64,
    /// Loss probability of the impaired phase, each direction.
    #[arg(long, default_value_t = 0.01)]
    pub loss: f64,
    /// Reorder probability of the impaired phase.
    #[arg(long, default_value_t = 0.0)]
    pub reorder: f64,
    /// Phases to run, in order: `clean`, `impaired`.
    #[arg(long, value_delimiter = ',', default_value = "clean,impaired")]
    pub phases: Vec<String>,
    /// Concurrent streams.
    #[arg(long, default_value_t = 200)]
    pub concurrency: u64,
    /// Client QUIC connections to the edge carrying them.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Measured seconds per phase.
    #[arg(long, default_value_t = 15.0)]
    pub duration: f64,
    /// Warm-up seconds per phase.
    #[arg(long, default_value_t = 3.0)]
    pub warmup: f64,
    /// The synthetic workers.
    #[command(flatten)]
    pub backend: crate::procs::Synthetic,
    /// Extra lines for the edge's `[upstream]` table (the choices under test), e.g.
    /// `congestion = "bbr"`.
    #[arg(long)]
    pub upstream_config: Vec<String>,
    /// Extra lines for each worker's `[worker]` table (the token direction's choices), e.g.
    /// `congestion = "bbr"`.
    #[arg(long)]
    pub worker_config: Vec<String>,
    /// The `meridian` binary (default: next to this one).
    #[arg(long)]
    pub meridian: Option<PathBuf>,
    /// Write the report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One phase's result.
#[derive(Debug, Serialize)]
pub struct Phase {
    /// `clean` or `impaired`.
    pub name: String,
    /// The link as the proxies reported it.
    pub link: String,
    /// The load report through the edge.
    pub report: Report,
    /// TTFT p50 ÷ floor.
    pub ttft_p50_ratio: f64,
    /// TTFT p99 ÷ floor.
    pub ttft_p99_ratio: f64,
}

/// The `wan` report.
#[derive(Debug, Serialize)]
pub struct WanReport {
    /// Long-haul RTT + backend TTFT, ms.
    pub floor_ms: f64,
    /// The `[upstream]` lines under test.
    pub upstream_config: Vec<String>,
    /// The `[worker]` lines under test.
    pub worker_config: Vec<String>,
    /// Phases in order.
    pub phases: Vec<Phase>,
}

/// Runs the phases.
pub async fn run(a: WanArgs) -> anyhow::Result<WanReport> {
    for p in &a.phases {
        if p != "clean" && p != "impaired" {
            bail!("unknown phase `{p}` (clean, impaired)");
        }
    }
    let Fleet {
        procs,
        mut proxies,
        edge,
        api_key,
        dir,
    } = start_fleet(&a, "").await?;
    let floor_ms = 2.0 * a.delay_ms + a.backend.ttft_ms as f64;
    let mut phases = Vec::new();
    for (n, name) in a.phases.iter().enumerate() {
        let commands = match name.as_str() {
            "clean" => vec!["jitter 0".to_owned(), "loss 0".into(), "reorder 0".into()],
            _ => vec![
                format!("jitter {}", a.jitter_ms),
                format!("loss {}", a.loss),
                format!("reorder {}", a.reorder),
            ],
        };
        let mut link = String::new();
        for p in &mut proxies {
            for c in &commands {
                link = p.command(c).await?["link"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
            }
        }
        eprintln!("wan: phase {name}: {link}");
        let load = LoadArgs::closed(
            (a.concurrency, a.connections),
            (a.duration, a.warmup),
            a.backend.max_tokens,
            "de",
            &api_key,
            n as u64 + 1,
        );
        let report = load::run_native(
            format!("edge {}", edge.addr),
            &[edge.addr],
            &edge.cert,
            &load,
        )
        .await?;
        phases.push(Phase {
            name: name.clone(),
            link,
            ttft_p50_ratio: report.ttft_ms.p50 / floor_ms,
            ttft_p99_ratio: report.ttft_ms.p99 / floor_ms,
            report,
        });
    }
    let mut edge = edge.proc;
    let _ = edge.child.start_kill();
    for mut p in procs.into_iter().chain(proxies) {
        let _ = p.child.start_kill();
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(WanReport {
        floor_ms,
        upstream_config: a.upstream_config,
        worker_config: a.worker_config,
        phases,
    })
}

/// The processes of a WAN run: workers, the proxy in front of each, the edge.
pub(crate) struct Fleet {
    /// Worker processes, `frankfurt-1`…, in order.
    pub procs: Vec<Proc>,
    /// The impairment proxy in front of each worker, same order.
    pub proxies: Vec<Proc>,
    pub edge: crate::procs::Edge,
    /// A key of the edge's tenant `wan`.
    pub api_key: String,
    /// Scratch directory (configs, certificates).
    pub dir: PathBuf,
}

/// Starts `a.workers` workers, each behind an `impair` proxy with `a.delay_ms`, and an edge
/// reaching them only through the proxies (`edge_extra`: more `[edge]` lines).
pub(crate) async fn start_fleet(a: &WanArgs, edge_extra: &str) -> anyhow::Result<Fleet> {
    let bin = meridian_bin(a.meridian.as_ref())?;
    let me = std::env::current_exe()?;
    let dir = std::env::temp_dir().join(format!("meridian-wan-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut procs = Vec::new();
    let mut proxies = Vec::new();
    let mut entries = String::new();
    for i in 1..=a.workers {
        let name = format!("frankfurt-{i}");
        let (w, addr, cert) = crate::procs::synthetic_worker(
            &bin,
            &dir,
            (&name, "frankfurt"),
            a.backend.timing(),
            4000,
            &a.worker_config.join("\n"),
        )
        .await?;
        let delay = a.delay_ms.to_string();
        let mut proxy = Proc::start_controlled(
            &me,
            &[
                "impair",
                "--listen",
                "127.0.0.1:0",
                "--upstream",
                &addr,
                "--delay-ms",
                &delay,
                "--seed",
                &i.to_string(),
            ],
        )?;
        let via = proxy.json_line().await?["impair"]
            .as_str()
            .context("impair address")?
            .to_owned();
        entries += &format!(
            "\n[[worker]]\nname = \"{name}\"\nregion = \"frankfurt\"\naddress = \"{via}\"\n\
             models = [\"llama-3-8b\"]\npin = \"{cert}\"\n"
        );
        procs.push(w);
        proxies.push(proxy);
    }
    let (api_key, auth) = crate::suite::api_key(&bin, "wan")?;
    let edge_cfg = dir.join("edge.toml");
    std::fs::write(
        &edge_cfg,
        format!(
            "[edge]\nlisten = \"127.0.0.1:0\"\npop = \"tokyo\"\nmax_streams_per_connection = {}\n{edge_extra}\n\n\
             [tls]\ndev_cert_dir = \"edge-certs\"\n\n[upstream]\n{}\n\n\
             [[region]]\nname = \"frankfurt\"\njurisdiction = [\"de\", \"eu\"]\n\n\
             [areas]\nde = [\"frankfurt\"]\n{entries}\n[tenants]\nwan = {{}}\n[auth]\n{auth}",
            a.concurrency.div_ceil(a.connections as u64).max(16),
            a.upstream_config.join("\n"),
        ),
    )?;
    let edge = crate::procs::start_edge(&bin, &edge_cfg, &[]).await?;
    Ok(Fleet {
        procs,
        proxies,
        edge,
        api_key,
        dir,
    })
}

/// Prints one line per phase.
pub fn print(r: &WanReport) {
    let lines = |l: &[String]| match l.is_empty() {
        true => "defaults".to_owned(),
        false => l.join("; "),
    };
    println!(
        "floor {:.0} ms (RTT + backend TTFT); [upstream] {}; [worker] {}",
        r.floor_ms,
        lines(&r.upstream_config),
        lines(&r.worker_config)
    );
    println!(
        "{:<9} | {:>8} {:>8} {:>6} {:>6} | {:>8} {:>8} | {:>8} {:>7}",
        "phase", "ttft p50", "ttft p99", "×p50", "×p99", "itl p50", "itl p99", "requests", "failed"
    );
    for p in &r.phases {
        let rep = &p.report;
        println!(
            "{:<9} | {:>8.1} {:>8.1} {:>6.2} {:>6.2} | {:>8.1} {:>8.1} | {:>8} {:>7}",
            p.name,
            rep.ttft_ms.p50,
            rep.ttft_ms.p99,
            p.ttft_p50_ratio,
            p.ttft_p99_ratio,
            rep.itl_ms.p50,
            rep.itl_ms.p99,
            rep.requests,
            rep.errors.values().sum::<u64>()
        );
        if !rep.errors.is_empty() {
            println!("          errors: {:?}", rep.errors);
        }
    }
}
