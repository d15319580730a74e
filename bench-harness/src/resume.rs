//! `meridian-bench resume`: what a worker failing mid-answer costs a resumable stream
//! (PROTOCOL.md §4.10), on an emulated long-haul link. Starts the `wan` fleet (workers
//! behind `impair` proxies, an edge reaching them only through the proxies), then, round
//! after round, opens one resumable stream, lets it run, and fails the worker serving it —
//! by partitioning its proxy (the edge sees what a SIGKILLed process looks like: silence) or
//! by SIGKILLing the worker process. Reports, per round, the time from the failure to the
//! resuming ROUTED (detection: the edge's stall limit) and to the first resumed token.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use meridian_protocol::client::{Client, ClientConfig, Event, Request, Trust};
use serde::Serialize;

use crate::wan::{start_fleet, WanArgs};

/// `resume` options.
#[derive(Args, Debug, Clone)]
pub struct ResumeArgs {
    /// One-way delay of the long-haul hop, ms (15 = 30 ms RTT; 115 = 230 ms RTT).
    #[arg(long, default_value_t = 115.0)]
    pub delay_ms: f64,
    /// Workers (a round fails one; `kill` rounds need a spare for each).
    #[arg(long, default_value_t = 3)]
    pub workers: usize,
    /// Rounds.
    #[arg(long, default_value_t = 10)]
    pub rounds: usize,
    /// How the worker fails: `partition` (its proxy drops everything, healed after the
    /// round) or `kill` (SIGKILL the worker process).
    #[arg(long, default_value = "partition")]
    pub failure: String,
    /// The edge's `upstream_stall_timeout_ms`: how long a silent worker is waited for.
    #[arg(long, default_value_t = 300)]
    pub stall_ms: u64,
    /// Tokens received before the failure.
    #[arg(long, default_value_t = 10)]
    pub after_tokens: usize,
    /// Workers' time to first token, ms.
    #[arg(long, default_value_t = 20)]
    pub ttft_ms: u64,
    /// Tokens per second per stream.
    #[arg(long, default_value_t = 50)]
    pub tokens_per_s: u64,
    /// The `meridian` binary (default: next to this one).
    #[arg(long)]
    pub meridian: Option<std::path::PathBuf>,
}

/// One round.
#[derive(Debug, Serialize)]
pub struct Round {
    /// Failure → resuming ROUTED at the client, ms.
    pub detect_ms: f64,
    /// Failure → first resumed token at the client, ms: the added TTFT of the resumed part.
    pub resumed_ttft_ms: f64,
    /// Resuming ROUTED → first resumed token, ms (the continuation's own TTFT).
    pub redispatch_ms: f64,
    /// Where the new worker took over.
    pub resumed_at: u64,
}

/// The report.
#[derive(Debug, Serialize)]
pub struct ResumeReport {
    pub rtt_ms: f64,
    pub stall_ms: u64,
    pub failure: String,
    /// One long-haul RTT plus the backend's TTFT: a fresh request's TTFT floor.
    pub floor_ms: f64,
    pub rounds: Vec<Round>,
}

/// Runs the rounds.
pub async fn run(a: ResumeArgs) -> anyhow::Result<ResumeReport> {
    let kill = match a.failure.as_str() {
        "partition" => false,
        "kill" => true,
        other => bail!("unknown --failure `{other}` (partition, kill)"),
    };
    if kill && a.rounds >= a.workers {
        bail!("--failure kill needs more workers than rounds");
    }
    let max_tokens = 2 * a.tokens_per_s.max(1) * 4;
    let link = WanArgs {
        workers: a.workers,
        delay_ms: a.delay_ms,
        jitter_ms: 0.0,
        loss: 0.0,
        reorder: 0.0,
        phases: Vec::new(),
        concurrency: 16,
        connections: 1,
        duration: 0.0,
        warmup: 0.0,
        backend: crate::procs::Synthetic {
            ttft_ms: a.ttft_ms,
            tokens_per_s: a.tokens_per_s,
            max_tokens,
        },
        upstream_config: vec!["idle_timeout_ms = 1000".into()],
        worker_config: Vec::new(),
        meridian: a.meridian.clone(),
        json: None,
    };
    let stall = format!("upstream_stall_timeout_ms = {}", a.stall_ms);
    let mut fleet = start_fleet(&link, &stall).await?;
    let trust = Trust::pin_file(&fleet.edge.cert)?;
    let config = ClientConfig::new(trust).with_credential(fleet.api_key.clone());
    let client = Client::connect(fleet.edge.addr, config).await?;
    let mut rounds = Vec::new();
    for n in 0..a.rounds {
        let mut req = Request::new("llama-3-8b", format!("round {n}: a long answer")).resumable();
        req.headers.area = Some("de".into());
        let mut g = client.generate(req).await?;
        let (mut seen, mut failed_at, mut routed_at, mut served) = (0, None, None, None);
        let round = loop {
            match tokio::time::timeout(Duration::from_secs(30), g.next()).await {
                Err(_) => bail!("round {n}: no event for 30 s"),
                Ok(Err(e)) => bail!("round {n}: the stream failed: {e}"),
                Ok(Ok(None)) => bail!("round {n}: the stream ended early"),
                Ok(Ok(Some(Event::End(_)))) => bail!("round {n}: ended before it resumed"),
                Ok(Ok(Some(Event::Routed(r)))) => match r.resumed_at {
                    None => served = Some(r.worker),
                    Some(at) => routed_at = Some((Instant::now(), at)),
                },
                Ok(Ok(Some(Event::Tokens(_)))) => {
                    seen += 1;
                    if let (Some(f), Some((r, at))) = (failed_at, routed_at) {
                        let now = Instant::now();
                        break Round {
                            detect_ms: ms(r - f),
                            resumed_ttft_ms: ms(now - f),
                            redispatch_ms: ms(now - r),
                            resumed_at: at,
                        };
                    }
                    if seen == a.after_tokens && failed_at.is_none() {
                        let name = served.clone().context("a ROUTED first")?;
                        let i: usize = name.trim_start_matches("frankfurt-").parse()?;
                        if kill {
                            fleet.procs[i - 1].child.start_kill()?;
                        } else {
                            fleet.proxies[i - 1].command("partition on").await?;
                        }
                        failed_at = Some(Instant::now());
                        served = Some(name);
                    }
                }
            }
        };
        drop(g);
        eprintln!(
            "resume: round {n}: detected {:.0} ms, first resumed token {:.0} ms after the failure (+{:.0} ms after ROUTED), at token {}",
            round.detect_ms, round.resumed_ttft_ms, round.redispatch_ms, round.resumed_at
        );
        rounds.push(round);
        if !kill {
            for p in &mut fleet.proxies {
                p.command("partition off").await?;
            }
            // Let the edge reconnect to the healed worker before the next round.
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    }
    client.close().await;
    let _ = fleet.edge.proc.child.start_kill();
    for mut p in fleet.procs.into_iter().chain(fleet.proxies) {
        let _ = p.child.start_kill();
    }
    let _ = std::fs::remove_dir_all(&fleet.dir);
    Ok(ResumeReport {
        rtt_ms: 2.0 * a.delay_ms,
        stall_ms: a.stall_ms,
        failure: a.failure,
        floor_ms: 2.0 * a.delay_ms + a.ttft_ms as f64,
        rounds,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Prints medians and the range.
pub fn print(r: &ResumeReport) {
    let stat = |f: fn(&Round) -> f64| {
        let mut v: Vec<f64> = r.rounds.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    let (d, dmin, dmax) = stat(|x| x.detect_ms);
    let (t, tmin, tmax) = stat(|x| x.resumed_ttft_ms);
    let (re, remin, remax) = stat(|x| x.redispatch_ms);
    println!(
        "RTT {:.0} ms, stall limit {} ms, failure by {}, {} rounds; a fresh request's TTFT floor is {:.0} ms",
        r.rtt_ms,
        r.stall_ms,
        r.failure,
        r.rounds.len(),
        r.floor_ms
    );
    println!("failure → resuming ROUTED   median {d:.0} ms (min {dmin:.0}, max {dmax:.0})");
    println!("failure → first resumed token median {t:.0} ms (min {tmin:.0}, max {tmax:.0})");
    println!("ROUTED → first resumed token  median {re:.0} ms (min {remin:.0}, max {remax:.0})");
}
