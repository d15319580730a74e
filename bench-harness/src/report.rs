//! Latency histograms and the run report (`--json FILE`).

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Percentiles of one latency distribution, milliseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Maximum.
    pub max: f64,
    /// Mean.
    pub mean: f64,
    /// Samples.
    pub count: u64,
}

/// A latency histogram in microseconds (1 µs to 10 min, 3 significant digits).
#[derive(Clone, Debug)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Latency(Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds"))
    }
}

impl Latency {
    /// Records one sample.
    pub fn record(&mut self, d: Duration) {
        self.0.saturating_record((d.as_micros() as u64).max(1));
    }

    /// Adds another histogram's samples.
    pub fn merge(&mut self, other: &Latency) {
        self.0.add(&other.0).expect("same bounds");
    }

    /// The summary.
    pub fn percentiles(&self) -> Percentiles {
        let ms = |q: f64| self.0.value_at_quantile(q) as f64 / 1000.0;
        Percentiles {
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
            p999: ms(0.999),
            max: self.0.max() as f64 / 1000.0,
            mean: self.0.mean() / 1000.0,
            count: self.0.len(),
        }
    }

    /// `(latency ms, cumulative fraction)` points for a CDF plot.
    pub fn cdf(&self) -> Vec<(f64, f64)> {
        let total = self.0.len().max(1) as f64;
        self.0
            .iter_quantiles(4)
            .map(|v| {
                (
                    v.value_iterated_to() as f64 / 1000.0,
                    v.count_since_last_iteration() as f64,
                )
            })
            .scan(0.0, |acc, (x, n)| {
                *acc += n;
                Some((x, *acc / total))
            })
            .collect()
    }
}

/// Everything measured in one run.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Time to first token.
    pub ttft: Latency,
    /// Inter-token latency.
    pub itl: Latency,
    /// End to end.
    pub e2e: Latency,
    /// Completed requests.
    pub requests: u64,
    /// Tokens received.
    pub tokens: u64,
    /// Failures by code name.
    pub errors: BTreeMap<String, u64>,
    /// Requests per region.
    pub regions: BTreeMap<String, u64>,
    /// Requests per worker.
    pub workers: BTreeMap<String, u64>,
}

impl Stats {
    /// Adds another collector's samples.
    pub fn merge(&mut self, o: &Stats) {
        self.ttft.merge(&o.ttft);
        self.itl.merge(&o.itl);
        self.e2e.merge(&o.e2e);
        self.requests += o.requests;
        self.tokens += o.tokens;
        for (m, om) in [
            (&mut self.errors, &o.errors),
            (&mut self.regions, &o.regions),
            (&mut self.workers, &o.workers),
        ] {
            for (k, v) in om {
                *m.entry(k.clone()).or_default() += v;
            }
        }
    }
}

/// The JSON report of one run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    /// What was measured (`edge 127.0.0.1:4433`, `direct …`, `http …`).
    pub target: String,
    /// `closed` or `open`.
    pub mode: String,
    /// Closed loop: concurrent streams.
    pub concurrency: Option<u64>,
    /// Open loop: arrival rate, requests/s.
    pub rate: Option<f64>,
    /// Measured seconds (after warm-up).
    pub duration_s: f64,
    /// Requests completed with END.
    pub requests: u64,
    /// Failures by code name.
    pub errors: BTreeMap<String, u64>,
    /// Tokens received.
    pub tokens: u64,
    /// Completed requests per second.
    pub requests_per_s: f64,
    /// Tokens per second.
    pub tokens_per_s: f64,
    /// Time to first token, from the (intended) send time.
    pub ttft_ms: Percentiles,
    /// Inter-token latency.
    pub itl_ms: Percentiles,
    /// End to end, from the (intended) send time.
    pub e2e_ms: Percentiles,
    /// Requests per region (native targets).
    pub regions: BTreeMap<String, u64>,
    /// Requests per worker (native targets).
    pub workers: BTreeMap<String, u64>,
}

impl Report {
    /// Builds the report from collected stats.
    pub fn new(
        target: String,
        mode: &str,
        concurrency: Option<u64>,
        rate: Option<f64>,
        elapsed: Duration,
        s: &Stats,
    ) -> Self {
        let secs = elapsed.as_secs_f64().max(1e-9);
        Report {
            target,
            mode: mode.into(),
            concurrency,
            rate,
            duration_s: secs,
            requests: s.requests,
            errors: s.errors.clone(),
            tokens: s.tokens,
            requests_per_s: s.requests as f64 / secs,
            tokens_per_s: s.tokens as f64 / secs,
            ttft_ms: s.ttft.percentiles(),
            itl_ms: s.itl.percentiles(),
            e2e_ms: s.e2e.percentiles(),
            regions: s.regions.clone(),
            workers: s.workers.clone(),
        }
    }

    /// Human-readable summary.
    pub fn print(&self) {
        println!("target      {} ({} loop)", self.target, self.mode);
        println!(
            "requests    {} ok, {} failed in {:.1} s: {:.1} req/s, {:.0} tokens/s",
            self.requests,
            self.errors.values().sum::<u64>(),
            self.duration_s,
            self.requests_per_s,
            self.tokens_per_s
        );
        println!(
            "            {:>9} {:>9} {:>9} {:>9} {:>9}",
            "p50", "p90", "p99", "p99.9", "max"
        );
        for (name, p) in [
            ("ttft ms", &self.ttft_ms),
            ("itl ms", &self.itl_ms),
            ("e2e ms", &self.e2e_ms),
        ] {
            println!(
                "{name:<11} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                p.p50, p.p90, p.p99, p.p999, p.max
            );
        }
        if !self.errors.is_empty() {
            println!("errors      {:?}", self.errors);
        }
        if !self.regions.is_empty() {
            println!("regions     {:?}", self.regions);
        }
    }
}
