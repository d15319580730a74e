//! `meridian-bench reload`: config reloads under load. Starts `--workers` synthetic worker
//! processes and an edge reading its config from a file, then runs the same closed-loop load
//! (1,000 streams × 50 tokens/s by default) twice through the edge: once without reloads
//! (the baseline), once while the edge's config file is rewritten and the edge sent SIGHUP
//! every `--every` seconds. The file alternates between every worker and all but the last,
//! with new prices each time, so every reload drains or adds a worker and moves traffic.
//! Reports both runs' TTFT and inter-token percentiles, the failures (a stream dropped by a
//! reload would be one), and the reloads the edge applied (its `/metrics`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;

use crate::load::{self, LoadArgs};
use crate::procs::meridian_bin;
use crate::report::Report;

/// `reload` options.
#[derive(Args, Debug, Clone)]
pub struct ReloadArgs {
    /// Worker processes.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// Concurrent streams.
    #[arg(long, default_value_t = 1000)]
    pub concurrency: u64,
    /// Client QUIC connections carrying them.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Measured seconds per run.
    #[arg(long, default_value_t = 20.0)]
    pub duration: f64,
    /// Warm-up seconds per run.
    #[arg(long, default_value_t = 3.0)]
    pub warmup: f64,
    /// Seconds between reloads in the second run.
    #[arg(long, default_value_t = 2.0)]
    pub every: f64,
    /// The synthetic workers.
    #[command(flatten)]
    pub backend: crate::procs::Synthetic,
    /// The `meridian` binary (default: next to this one).
    #[arg(long)]
    pub meridian: Option<PathBuf>,
    /// Write the report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The `reload` report.
#[derive(Debug, Serialize)]
pub struct ReloadReport {
    /// The run without reloads.
    pub baseline: Report,
    /// The run with reloads.
    pub reloading: Report,
    /// Reloads sent (SIGHUP) during the second run.
    pub reloads_sent: u64,
    /// Reloads the edge counted as applied, and as rejected.
    pub reloads_applied: u64,
    /// Reloads the edge rejected.
    pub reloads_rejected: u64,
}

/// The edge config with the first `n` of `workers` (TOML entries) and `price` for every
/// region.
fn edge_toml(workers: &[String], n: usize, price: f64, auth: &str, max_streams: u64) -> String {
    format!(
        "[edge]\nlisten = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\nwatch_config_ms = 0\n\
         max_streams_per_connection = {max_streams}\n\n[tls]\ndev_cert_dir = \"edge-certs\"\n\n\
         [[region]]\nname = \"frankfurt\"\nprice_per_mtok = {price}\n\n\
         [areas]\nde = [\"frankfurt\"]\n{}\n[tenants]\nreload = {{}}\n[auth]\n{auth}",
        workers[..n].concat()
    )
}

/// Writes `text` to `path` atomically (a rename), as a config management tool would.
fn publish(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// A counter's value from a `/metrics` text.
fn metric(text: &str, line: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// `GET /metrics` on the admin listener `base` (`http://host:port`).
async fn metrics(base: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let req = format!("GET /metrics HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

/// Runs the baseline, then the reloading run.
pub async fn run(a: ReloadArgs) -> anyhow::Result<ReloadReport> {
    if a.workers < 2 {
        bail!("--workers must be at least 2 (reloads take one out and put it back)");
    }
    let bin = meridian_bin(a.meridian.as_ref())?;
    let dir = std::env::temp_dir().join(format!("meridian-reload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut procs = Vec::new();
    let mut entries = Vec::new();
    for i in 1..=a.workers {
        let name = format!("frankfurt-{i}");
        let (w, addr, cert) = crate::procs::synthetic_worker(
            &bin,
            &dir,
            (&name, "frankfurt"),
            a.backend.timing(),
            4000,
            "",
        )
        .await?;
        entries.push(format!(
            "\n[[worker]]\nname = \"{name}\"\nregion = \"frankfurt\"\naddress = \"{addr}\"\n\
             models = [\"llama-3-8b\"]\npin = \"{cert}\"\n"
        ));
        procs.push(w);
    }
    let (api_key, auth) = crate::suite::api_key(&bin, "reload")?;
    let max_streams = a.concurrency.div_ceil(a.connections as u64).max(16);
    let edge_cfg = dir.join("edge.toml");
    publish(
        &edge_cfg,
        &edge_toml(&entries, a.workers, 0.5, &auth, max_streams),
    )?;
    let edge = crate::procs::start_edge(&bin, &edge_cfg, &[]).await?;
    let admin = (edge.started["admin_url"].as_str())
        .context("admin_url")?
        .to_owned();
    let load = |seed| {
        let window = (a.duration, a.warmup);
        LoadArgs::closed(
            (a.concurrency, a.connections),
            window,
            a.backend.max_tokens,
            "de",
            &api_key,
            seed,
        )
    };
    let measure = |seed| {
        let load = load(seed);
        let (addr, cert) = (edge.addr, edge.cert.clone());
        async move { load::run_native(format!("edge {addr}"), &[addr], &cert, &load).await }
    };
    eprintln!("reload: baseline, {} streams, no reloads", a.concurrency);
    let baseline = measure(1).await?;
    // The second run, with a reload every `every` seconds from its start to its end (none
    // after it).
    eprintln!("reload: the same load with a reload every {} s", a.every);
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let pid = edge.proc.pid().to_string();
    let reloader = {
        let (entries, auth, path) = (entries.clone(), auth.clone(), edge_cfg.clone());
        let (every, workers) = (Duration::from_secs_f64(a.every), a.workers);
        tokio::spawn(async move {
            let mut sent = 0u64;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stopped.changed() => break,
                }
                let n = if sent % 2 == 0 { workers - 1 } else { workers };
                let price = 0.5 + 0.01 * (sent + 1) as f64;
                if publish(&path, &edge_toml(&entries, n, price, &auth, max_streams)).is_err() {
                    break;
                }
                let ok = std::process::Command::new("kill")
                    .args(["-HUP", &pid])
                    .status();
                if !ok.is_ok_and(|s| s.success()) {
                    break;
                }
                sent += 1;
            }
            sent
        })
    };
    let reloading = measure(2).await;
    let _ = stop.send(true);
    let reloads_sent = reloader.await.unwrap_or(0);
    // The last SIGHUP may still be in progress: wait (bounded) until the edge counted it.
    let mut text = String::new();
    for _ in 0..50 {
        text = metrics(&admin).await.unwrap_or_default();
        let counted = metric(&text, "meridian_config_reloads_total{result=\"applied\"}")
            + metric(&text, "meridian_config_reloads_total{result=\"rejected\"}");
        if counted >= reloads_sent {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut edge = edge.proc;
    let _ = edge.child.start_kill();
    for mut p in procs {
        let _ = p.child.start_kill();
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ReloadReport {
        baseline,
        reloading: reloading?,
        reloads_sent,
        reloads_applied: metric(&text, "meridian_config_reloads_total{result=\"applied\"}"),
        reloads_rejected: metric(&text, "meridian_config_reloads_total{result=\"rejected\"}"),
    })
}

/// Prints both runs side by side.
pub fn print(r: &ReloadReport) {
    println!(
        "{:<10} | {:>8} {:>8} {:>8} {:>8} | {:>8} {:>8} | {:>8} {:>7}",
        "run", "ttft p50", "ttft p99", "p99.9", "max", "itl p50", "itl p99", "requests", "failed"
    );
    for (name, rep) in [("baseline", &r.baseline), ("reloading", &r.reloading)] {
        println!(
            "{:<10} | {:>8.1} {:>8.1} {:>8.1} {:>8.1} | {:>8.1} {:>8.1} | {:>8} {:>7}",
            name,
            rep.ttft_ms.p50,
            rep.ttft_ms.p99,
            rep.ttft_ms.p999,
            rep.ttft_ms.max,
            rep.itl_ms.p50,
            rep.itl_ms.p99,
            rep.requests,
            rep.errors.values().sum::<u64>()
        );
        if !rep.errors.is_empty() {
            println!("           errors: {:?}", rep.errors);
        }
    }
    println!(
        "reloads: {} sent (SIGHUP), {} applied, {} rejected by the edge",
        r.reloads_sent, r.reloads_applied, r.reloads_rejected
    );
}
