//! The load generator: closed loop (N concurrent streams, each sending its next request
//! when the last ends) or open loop (Poisson arrivals at a rate; latency measured from each
//! request's *intended* send time, so queueing cannot hide behind coordinated omission).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::dist::{KeyDist, Mix, Rng};
use crate::report::{Report, Stats};
use crate::target::{Job, Outcome, Target};

/// Load shape options shared by `run` and `suite`.
#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    /// Closed loop: concurrent streams.
    #[arg(long, conflicts_with = "rate")]
    pub concurrency: Option<u64>,
    /// Open loop: Poisson arrivals per second.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// QUIC connections carrying the streams (native targets).
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Prompt size, bytes.
    #[arg(long, default_value_t = 256)]
    pub prompt_bytes: usize,
    /// Tokens per response (`max_tokens`).
    #[arg(long)]
    pub max_tokens: Option<u64>,
    /// Shard keys: `none`, `uniform:N` or `zipf:S:N`.
    #[arg(long, default_value = "uniform:10000")]
    pub keys: String,
    /// Area mix, e.g. `jp:3,fr:1` (`none` = no area).
    #[arg(long, default_value = "")]
    pub areas: String,
    /// Tenant mix, e.g. `bund:1,none:3`.
    #[arg(long, default_value = "")]
    pub tenants: String,
    /// Model name.
    #[arg(long, default_value = "llama-3-8b")]
    pub model: String,
    /// PRNG seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Most requests in flight in open-loop mode (arrivals beyond it count as `DROPPED`).
    #[arg(long, default_value_t = 100_000)]
    pub max_in_flight: usize,
    /// Credential (API key or token) sent with every request (or MERIDIAN_API_KEY): a
    /// Meridian edge requires one (`meridian demo --serve` prints its keys).
    #[arg(long, env = "MERIDIAN_API_KEY")]
    pub api_key: Option<String>,
    /// Credential for requests of one tenant of `--tenants`, as `TENANT=KEY`; repeat per
    /// tenant. Requests of other tenants use `--api-key`.
    #[arg(long, value_name = "TENANT=KEY")]
    pub tenant_key: Vec<String>,
}

impl LoadArgs {
    /// A closed loop of `concurrency` streams on `connections` connections from area `area`
    /// with `api_key`, `max_tokens` each, measured for `duration` s after `warmup` s.
    pub fn closed(
        (concurrency, connections): (u64, usize),
        (duration, warmup): (f64, f64),
        max_tokens: u64,
        area: &str,
        api_key: &str,
        seed: u64,
    ) -> LoadArgs {
        LoadArgs {
            concurrency: Some(concurrency),
            rate: None,
            duration,
            warmup,
            connections,
            prompt_bytes: 256,
            max_tokens: Some(max_tokens),
            keys: "uniform:10000".into(),
            areas: format!("{area}:1"),
            tenants: String::new(),
            model: "llama-3-8b".into(),
            seed,
            max_in_flight: 100_000,
            api_key: Some(api_key.to_owned()),
            tenant_key: Vec::new(),
        }
    }
}

struct Shape {
    keys: KeyDist,
    areas: Mix,
    tenants: Mix,
    prompt: Bytes,
    api_key: Option<std::sync::Arc<str>>,
    tenant_keys: Vec<(String, std::sync::Arc<str>)>,
}

impl Shape {
    fn new(a: &LoadArgs) -> anyhow::Result<Shape> {
        let err = |e: String| anyhow::anyhow!(e);
        let prompt: String = "The quick brown fox jumps over the lazy dog. "
            .chars()
            .cycle()
            .take(a.prompt_bytes)
            .collect();
        let tenant_keys = (a.tenant_key.iter())
            .map(|tk| {
                tk.split_once('=')
                    .map(|(t, k)| (t.to_owned(), k.into()))
                    .ok_or_else(|| anyhow::anyhow!("--tenant-key wants TENANT=KEY, got `{tk}`"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Shape {
            keys: KeyDist::parse(&a.keys).map_err(err)?,
            areas: Mix::parse(&a.areas).map_err(err)?,
            tenants: Mix::parse(&a.tenants).map_err(err)?,
            prompt: Bytes::from(prompt),
            api_key: a.api_key.as_deref().map(Into::into),
            tenant_keys,
        })
    }

    fn job(&self, a: &LoadArgs, rng: &mut Rng) -> Job {
        let tenant = self.tenants.draw(rng);
        let credential = (self.tenant_keys.iter())
            .find(|(t, _)| Some(t) == tenant.as_ref())
            .map(|(_, k)| k.clone())
            .or_else(|| self.api_key.clone());
        Job {
            model: a.model.clone(),
            prompt: self.prompt.clone(),
            max_tokens: a.max_tokens,
            session: self.keys.draw(rng).map(|k| format!("session-{k}")),
            area: self.areas.draw(rng),
            tenant,
            credential,
        }
    }
}

static LAST: std::sync::Mutex<Option<Stats>> = std::sync::Mutex::new(None);

/// The histograms of the last completed run (for `--plot`).
pub fn last_stats() -> Stats {
    LAST.lock()
        .expect("not poisoned")
        .clone()
        .unwrap_or_default()
}

fn record(stats: &mut Stats, o: &Outcome) {
    match &o.error {
        Some(code) => *stats.errors.entry(code.clone()).or_default() += 1,
        None => {
            stats.requests += 1;
            stats.e2e.record(o.e2e);
        }
    }
    stats.tokens += o.tokens;
    if let Some(t) = o.ttft {
        stats.ttft.record(t);
    }
    for gap in &o.itls {
        stats.itl.record(*gap);
    }
    if let Some(r) = &o.region {
        *stats.regions.entry(r.clone()).or_default() += 1;
    }
    if let Some(w) = &o.worker {
        *stats.workers.entry(w.clone()).or_default() += 1;
    }
}

fn progress(total: Duration) -> ProgressBar {
    let pb = ProgressBar::new(total.as_millis() as u64);
    pb.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {msg}")
            .expect("valid template"),
    );
    pb
}

/// Runs `a` against native QUIC `addrs` (an edge, or workers directly) over connections of
/// its own, closed after; `label` names the target in the report.
pub async fn run_native(
    label: String,
    addrs: &[std::net::SocketAddr],
    cert: &std::path::Path,
    a: &LoadArgs,
) -> anyhow::Result<Report> {
    let target = Arc::new(Target::native(label, addrs, cert, a.connections).await?);
    let r = run(target.clone(), a).await;
    close(target).await;
    r
}

/// Closes `t`'s connections once no one else holds it.
pub async fn close(t: Arc<Target>) {
    if let Ok(t) = Arc::try_unwrap(t) {
        t.close().await;
    }
}

/// Runs the load described by `a` against `target` and reports what was measured.
pub async fn run(target: Arc<Target>, a: &LoadArgs) -> anyhow::Result<Report> {
    let shape = Arc::new(Shape::new(a)?);
    let warmup = Duration::from_secs_f64(a.warmup);
    let measure = Duration::from_secs_f64(a.duration);
    let start = Instant::now();
    let (measure_from, end) = (start + warmup, start + warmup + measure);
    let pb = progress(warmup + measure);
    let mut stats = Stats::default();
    if let Some(rate) = a.rate {
        open_loop(&target, a, &shape, rate, measure_from, end, &pb, &mut stats).await;
    } else {
        closed_loop(
            &target,
            a,
            &shape,
            a.concurrency.unwrap_or(1),
            measure_from,
            end,
            &pb,
            &mut stats,
        )
        .await;
    }
    pb.finish_and_clear();
    *LAST.lock().expect("not poisoned") = Some(stats.clone());
    let (mode, conc) = if a.rate.is_some() {
        ("open", None)
    } else {
        ("closed", Some(a.concurrency.unwrap_or(1)))
    };
    Ok(Report::new(
        target.label(),
        mode,
        conc,
        a.rate,
        measure,
        &stats,
    ))
}

#[allow(clippy::too_many_arguments)]
async fn closed_loop(
    target: &Arc<Target>,
    a: &LoadArgs,
    shape: &Arc<Shape>,
    concurrency: u64,
    measure_from: Instant,
    end: Instant,
    pb: &ProgressBar,
    stats: &mut Stats,
) {
    let mut users = JoinSet::new();
    for user in 0..concurrency {
        let (target, shape, a) = (target.clone(), shape.clone(), a.clone());
        users.spawn(async move {
            let mut rng = Rng::new(a.seed ^ (user + 1).wrapping_mul(0x1234_5678_9abc));
            let mut mine = Stats::default();
            while Instant::now() < end {
                let job = shape.job(&a, &mut rng);
                let sent = Instant::now();
                let o = target.send(&job, user as usize, sent.into_std()).await;
                if sent >= measure_from && Instant::now() <= end + Duration::from_secs(30) {
                    record(&mut mine, &o);
                }
            }
            mine
        });
    }
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let begin = Instant::now();
    loop {
        tokio::select! {
            done = users.join_next() => match done {
                Some(Ok(s)) => stats.merge(&s),
                Some(Err(_)) => {}
                None => break,
            },
            _ = tick.tick() => {
                pb.set_position(begin.elapsed().as_millis() as u64);
                pb.set_message(format!("{concurrency} streams"));
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn open_loop(
    target: &Arc<Target>,
    a: &LoadArgs,
    shape: &Arc<Shape>,
    rate: f64,
    measure_from: Instant,
    end: Instant,
    pb: &ProgressBar,
    stats: &mut Stats,
) {
    let mut rng = Rng::new(a.seed);
    let mut in_flight: JoinSet<(Instant, Outcome)> = JoinSet::new();
    let mut next = Instant::now();
    let mut n = 0usize;
    let begin = Instant::now();
    while next < end {
        // Collect what finished while waiting for the next arrival.
        let sleep = tokio::time::sleep_until(next);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                Some(Ok((intended, o))) = in_flight.join_next(), if !in_flight.is_empty() => {
                    if intended >= measure_from { record(stats, &o); }
                }
            }
        }
        let intended = next;
        if in_flight.len() >= a.max_in_flight {
            if intended >= measure_from {
                *stats.errors.entry("DROPPED".into()).or_default() += 1;
            }
        } else {
            let job = shape.job(a, &mut rng);
            let target = target.clone();
            let slot = n;
            in_flight.spawn(async move {
                (intended, target.send(&job, slot, intended.into_std()).await)
            });
        }
        n += 1;
        next += rng.exp_interval(rate);
        if n % 64 == 0 {
            pb.set_position(begin.elapsed().as_millis() as u64);
            pb.set_message(format!("{} in flight", in_flight.len()));
        }
    }
    while let Some(r) = in_flight.join_next().await {
        if let Ok((intended, o)) = r {
            if intended >= measure_from {
                record(stats, &o);
            }
        }
    }
}
