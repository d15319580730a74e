//! `meridian-bench`: load harness for Meridian and for the gateways it is compared with.
//!
//! * `run` — open- or closed-loop load against an edge, a worker directly (the baseline),
//!   or any OpenAI-compatible endpoint (SSE); HDR-histogram TTFT/ITL/e2e; JSON and SVG.
//! * `mock-openai` — an OpenAI-compatible synthetic backend.
//! * `impair` — a user-space UDP WAN impairment proxy.
//! * `suite` — direct vs. via-edge at several concurrency levels, on its own topology.
//! * `wan` — the edge → worker hop on an emulated long-haul link, clean vs. impaired.
//! * `resume` — a worker failing mid-answer on that link: what resuming costs the stream.

mod dist;
mod http;
mod http3;
mod impair;
mod load;
mod mock_openai;
mod plot;
mod procs;
mod quic_lb;
mod reload;
mod report;
mod resume;
mod suite;
mod target;
mod wan;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

/// Meridian's load harness.
#[derive(Parser, Debug)]
#[command(name = "meridian-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate load against one target and report latency and throughput.
    Run(RunArgs),
    /// Serve an OpenAI-compatible API with synthetic tokens.
    MockOpenai(mock_openai::MockArgs),
    /// Proxy UDP with delay, jitter, loss, reordering, a bandwidth cap and partitions.
    Impair(impair::ImpairArgs),
    /// Balance UDP across edges by the QUIC-LB server id in connection IDs (or per client
    /// address, as a 4-tuple hash would).
    QuicLb(quic_lb::QuicLbArgs),
    /// Start a loopback topology and compare direct vs. via-edge at several concurrencies.
    Suite(suite::SuiteArgs),
    /// Start workers behind impairment proxies and an edge, and measure the long-haul hop
    /// clean and impaired.
    Wan(wan::WanArgs),
    /// Fail the worker serving a resumable stream on an emulated long-haul link and measure
    /// what the resumption costs.
    Resume(resume::ResumeArgs),
    /// Run closed-loop load through an edge without and with config reloads (SIGHUP every
    /// few seconds, each draining or adding a worker) and compare.
    Reload(reload::ReloadArgs),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Meridian edge address (native protocol).
    #[arg(long, group = "target")]
    edge: Option<SocketAddr>,
    /// Worker address(es), straight to the worker: the baseline. Repeat for several.
    #[arg(long, group = "target")]
    direct: Vec<SocketAddr>,
    /// OpenAI-compatible URL, e.g. http://127.0.0.1:8080/v1/chat/completions.
    #[arg(long, group = "target")]
    http: Option<String>,
    /// OpenAI-compatible HTTP/3 URL, e.g. https://127.0.0.1:4433/v1/chat/completions
    /// (pins --cert).
    #[arg(long, group = "target")]
    http3: Option<String>,
    /// Certificate to pin for native targets.
    #[arg(long)]
    cert: Option<PathBuf>,
    #[command(flatten)]
    load: load::LoadArgs,
    /// Write the full report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw TTFT/ITL/e2e CDFs as SVG here.
    #[arg(long)]
    plot: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli.command {
            Command::Run(a) => run(a).await,
            Command::MockOpenai(a) => mock_openai::run(a).await,
            Command::Impair(a) => impair::run(a).await,
            Command::QuicLb(a) => quic_lb::run(a).await,
            Command::Suite(a) => {
                let out = a.json.clone();
                let report = suite::run(a).await?;
                suite::print(&report);
                write_json(out.as_deref(), &report)
            }
            Command::Reload(a) => {
                let out = a.json.clone();
                let report = reload::run(a).await?;
                reload::print(&report);
                write_json(out.as_deref(), &report)
            }
            Command::Resume(a) => {
                let report = resume::run(a).await?;
                resume::print(&report);
                println!("{}", serde_json::to_string(&report)?);
                Ok(())
            }
            Command::Wan(a) => {
                let out = a.json.clone();
                let report = wan::run(a).await?;
                wan::print(&report);
                write_json(out.as_deref(), &report)
            }
        }
    })
}

/// Writes `report` as pretty JSON to `path`, if one was given (`--json`).
fn write_json(path: Option<&Path>, report: &impl serde::Serialize) -> anyhow::Result<()> {
    if let Some(p) = path {
        std::fs::write(p, serde_json::to_string_pretty(report)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

async fn run(a: RunArgs) -> anyhow::Result<()> {
    let cert = || {
        a.cert
            .clone()
            .context("native targets need --cert <pinned cert.pem>")
    };
    let target = if let Some(addr) = a.edge {
        target::Target::native(
            format!("edge {addr}"),
            &[addr],
            &cert()?,
            a.load.connections,
        )
        .await?
    } else if !a.direct.is_empty() {
        target::Target::native(
            format!("direct {:?}", a.direct),
            &a.direct,
            &cert()?,
            a.load.connections,
        )
        .await?
    } else if let Some(url) = &a.http {
        target::Target::Http(http::HttpTarget::new(url).await?)
    } else if let Some(url) = &a.http3 {
        target::Target::Http3(http3::Http3Target::new(url, &cert()?, a.load.connections).await?)
    } else {
        bail!("give a target: --edge ADDR, --direct ADDR, --http URL or --http3 URL");
    };
    let target = Arc::new(target);
    let report = load::run(target.clone(), &a.load).await?;
    report.print();
    write_json(a.json.as_deref(), &report)?;
    if let Some(p) = &a.plot {
        let hist = load::last_stats();
        let svg = plot::cdf_svg(
            &format!("{} — latency CDF", report.target),
            &[
                plot::Series {
                    name: "TTFT",
                    points: hist.ttft.cdf(),
                },
                plot::Series {
                    name: "inter-token",
                    points: hist.itl.cdf(),
                },
                plot::Series {
                    name: "end to end",
                    points: hist.e2e.cdf(),
                },
            ],
        );
        std::fs::write(p, svg).with_context(|| format!("writing {}", p.display()))?;
    }
    if let Ok(t) = Arc::try_unwrap(target) {
        t.close().await;
    }
    Ok(())
}
