//! OpenTelemetry GenAI semantic conventions (semconv 1.41, the last release that holds them
//! before they moved to their own repository): the operation names and the server metrics
//! `gen_ai.server.request.duration`, `gen_ai.server.time_to_first_token`,
//! `gen_ai.server.time_per_output_token` and the token usage histogram
//! `gen_ai.client.token.usage` (the edge is the GenAI client of its workers), with the
//! conventions' recommended bucket boundaries. Recorded once per request with atomics (no
//! lock, no allocation); exported as Prometheus text and as OTLP metrics (`otlp_metrics`).
//! Prompt and answer content is never recorded.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// `gen_ai.provider.name` of the edge's spans and metrics.
pub const PROVIDER: &str = "meridian";

/// `gen_ai.operation.name`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Operation {
    /// A chat completion (`/v1/chat/completions`, and native prompts).
    #[default]
    Chat = 0,
    /// A text completion (`/v1/completions`).
    TextCompletion = 1,
}

impl Operation {
    /// Every operation, in index order.
    pub const ALL: [Operation; 2] = [Operation::Chat, Operation::TextCompletion];

    /// The operation of a request: a text completion for a `/v1/completions` body
    /// (HEADERS `body_format`), else a chat.
    pub fn of(h: &meridian_protocol::RequestHeaders) -> Operation {
        match h.body_format {
            Some(meridian_protocol::body_format::OPENAI_COMPLETIONS) => Operation::TextCompletion,
            _ => Operation::Chat,
        }
    }

    /// The convention's value.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Chat => "chat",
            Operation::TextCompletion => "text_completion",
        }
    }
}

/// Bounds of `gen_ai.server.request.duration` (and the client duration), seconds.
pub const DURATION_BOUNDS: &[f64] = &[
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
/// Bounds of `gen_ai.server.time_to_first_token`, seconds.
pub const TTFT_BOUNDS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// Bounds of `gen_ai.server.time_per_output_token`, seconds.
pub const TPOT_BOUNDS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
];
/// Bounds of `gen_ai.client.token.usage`, tokens.
pub const TOKEN_BOUNDS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

/// An explicit-bucket histogram (OTLP's and Prometheus's shape): counts per bucket, the
/// sum, the minimum and the maximum, as atomics — one `fetch_add` for the bucket and one for
/// the sum; the minimum and maximum are written only when a value passes them (their
/// `fetch_min`/`fetch_max` are compare-and-swap loops on x86-64, so a plain load decides
/// first, and once warm almost no value writes them). Values are kept as integers of
/// `1 / scale` (microseconds for seconds: a `u64` sum of those lasts some 580,000 years of
/// summed request time; whole tokens for tokens).
#[derive(Debug)]
pub struct Buckets {
    bounds: &'static [f64],
    scale: f64,
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
    min: AtomicU64,
    max: AtomicU64,
    /// When it was made, Unix nanoseconds: the start of its cumulative series (a histogram
    /// made anew after a reload starts a new series, as OTLP's reset rule requires).
    start_ns: u64,
}

/// Scale of histograms of seconds: microseconds.
pub const SECONDS: f64 = 1e6;
/// Scale of histograms of counts (tokens).
pub const UNITS: f64 = 1.0;

impl Buckets {
    /// An empty histogram with `bounds` (strictly increasing) of values recorded in units of
    /// `1 / scale`.
    pub fn new(bounds: &'static [f64], scale: f64) -> Buckets {
        Buckets {
            bounds,
            scale,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            min: AtomicU64::new(u64::MAX),
            max: AtomicU64::new(0),
            start_ns: super::metrics::unix_ns(),
        }
    }

    /// Records `v` (≥ 0): the bucket `(bounds[i-1], bounds[i]]` it falls in, and the sum.
    pub fn record(&self, v: f64) {
        let i = self.bounds.partition_point(|b| *b < v);
        self.counts[i].fetch_add(1, Relaxed);
        let units = (v.max(0.0) * self.scale).round() as u64;
        self.sum.fetch_add(units, Relaxed);
        if units < self.min.load(Relaxed) {
            self.min.fetch_min(units, Relaxed);
        }
        if units > self.max.load(Relaxed) {
            self.max.fetch_max(units, Relaxed);
        }
    }

    /// Records a duration in seconds.
    pub fn record_duration(&self, d: Duration) {
        self.record(d.as_secs_f64());
    }

    /// The bucket bounds.
    pub fn bounds(&self) -> &'static [f64] {
        self.bounds
    }

    /// A consistent-enough snapshot: per-bucket counts, their total, the sum, min and max.
    pub fn snapshot(&self) -> Snapshot {
        let counts: Vec<u64> = self.counts.iter().map(|c| c.load(Relaxed)).collect();
        let f = |a: &AtomicU64| a.load(Relaxed) as f64 / self.scale;
        let count = counts.iter().sum();
        Snapshot {
            count,
            counts,
            sum: f(&self.sum),
            min: if count > 0 {
                f(&self.min)
            } else {
                f64::INFINITY
            },
            max: if count > 0 {
                f(&self.max)
            } else {
                f64::NEG_INFINITY
            },
            start_ns: self.start_ns,
        }
    }
}

/// What a [`Buckets`] held when read.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// Per bucket (`bounds.len() + 1` of them).
    pub counts: Vec<u64>,
    /// Their total.
    pub count: u64,
    /// Sum of the values.
    pub sum: f64,
    /// Smallest value (∞ when empty).
    pub min: f64,
    /// Largest value (−∞ when empty).
    pub max: f64,
    /// Start of the cumulative series, Unix nanoseconds.
    pub start_ns: u64,
}

/// Slots of `error.type`: none, then one per wire error code (codes ≥ 15 share the last).
pub const ERROR_SLOTS: usize = 17;

/// The GenAI metrics of one (region, model), by operation.
#[derive(Debug)]
pub struct GenAiMetrics {
    /// `gen_ai.server.request.duration`, by `[operation][error slot]`.
    pub duration: Vec<Vec<Buckets>>,
    /// `gen_ai.server.time_to_first_token`, by operation.
    pub ttft: Vec<Buckets>,
    /// `gen_ai.server.time_per_output_token`, by operation.
    pub tpot: Vec<Buckets>,
    /// `gen_ai.client.token.usage`, by `[operation][input, output]`.
    pub tokens: Vec<[Buckets; 2]>,
}

impl Default for GenAiMetrics {
    fn default() -> Self {
        let ops = Operation::ALL.len();
        GenAiMetrics {
            duration: (0..ops)
                .map(|_| {
                    (0..ERROR_SLOTS)
                        .map(|_| Buckets::new(DURATION_BOUNDS, SECONDS))
                        .collect()
                })
                .collect(),
            ttft: (0..ops)
                .map(|_| Buckets::new(TTFT_BOUNDS, SECONDS))
                .collect(),
            tpot: (0..ops)
                .map(|_| Buckets::new(TPOT_BOUNDS, SECONDS))
                .collect(),
            tokens: (0..ops)
                .map(|_| {
                    [
                        Buckets::new(TOKEN_BOUNDS, UNITS),
                        Buckets::new(TOKEN_BOUNDS, UNITS),
                    ]
                })
                .collect(),
        }
    }
}

/// One finished request, as the metrics see it.
#[derive(Clone, Copy, Debug)]
pub struct Finished {
    /// Its operation.
    pub operation: Operation,
    /// Arrival to its end.
    pub duration: Duration,
    /// Arrival to its first token, if it had one.
    pub ttft: Option<Duration>,
    /// Output tokens the client received.
    pub output_tokens: u64,
    /// Input tokens (the worker's count), if it reported them.
    pub input_tokens: Option<u64>,
    /// The wire code it failed with, if it did.
    pub error: Option<meridian_protocol::ErrorCode>,
}

impl GenAiMetrics {
    /// The error slot of `code`.
    pub fn slot(error: Option<meridian_protocol::ErrorCode>) -> usize {
        error.map_or(0, |c| 1 + (c.0 as usize).min(ERROR_SLOTS - 2))
    }

    /// The `error.type` of error slot `slot` (≥ 1): the code's, or `_OTHER` (the semantic
    /// conventions' fallback) for the last slot, which codes ≥ 15 share.
    pub fn slot_error_type(slot: usize) -> String {
        match slot {
            s if s == ERROR_SLOTS - 1 => "_OTHER".into(),
            s => crate::edge::error_type(meridian_protocol::ErrorCode((s - 1) as u64)),
        }
    }

    /// Records a finished request.
    pub fn record(&self, f: &Finished) {
        let op = f.operation as usize;
        self.duration[op][Self::slot(f.error)].record_duration(f.duration);
        if f.error.is_some() {
            return; // TTFT, per-token time and usage describe successful answers
        }
        if let Some(t) = f.ttft {
            self.ttft[op].record_duration(t);
            if f.output_tokens > 1 {
                let rest = f.duration.saturating_sub(t).as_secs_f64();
                self.tpot[op].record(rest / (f.output_tokens - 1) as f64);
            }
        }
        if let Some(n) = f.input_tokens {
            self.tokens[op][0].record(n as f64);
        }
        self.tokens[op][1].record(f.output_tokens as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_upper_inclusive_and_track_sum_min_max() {
        let b = Buckets::new(&[1.0, 2.0], UNITS);
        for v in [1.0, 1.0, 2.0, 3.0] {
            b.record(v);
        }
        let s = b.snapshot();
        assert_eq!(s.counts, [2, 1, 1]);
        assert_eq!((s.count, s.sum, s.min, s.max), (4, 7.0, 1.0, 3.0));
        let t = Buckets::new(&[0.1], SECONDS);
        t.record(0.000_512);
        assert_eq!(
            t.snapshot().sum,
            0.000_512,
            "seconds kept to the microsecond"
        );
    }

    #[test]
    fn a_request_is_recorded_by_operation_and_outcome() {
        let m = GenAiMetrics::default();
        let ok = Finished {
            operation: Operation::TextCompletion,
            duration: Duration::from_millis(1100),
            ttft: Some(Duration::from_millis(100)),
            output_tokens: 11,
            input_tokens: Some(7),
            error: None,
        };
        m.record(&ok);
        m.record(&Finished {
            error: Some(meridian_protocol::ErrorCode::UPSTREAM_FAILED),
            ..ok
        });
        let op = Operation::TextCompletion as usize;
        assert_eq!(m.duration[op][0].snapshot().count, 1);
        let failed = GenAiMetrics::slot(Some(meridian_protocol::ErrorCode::UPSTREAM_FAILED));
        assert_eq!(m.duration[op][failed].snapshot().count, 1);
        assert_eq!(
            m.ttft[op].snapshot().count,
            1,
            "failures have no TTFT sample"
        );
        assert!(
            (m.tpot[op].snapshot().sum - 0.1).abs() < 1e-9,
            "1 s over 10 tokens"
        );
        assert_eq!(m.tokens[op][0].snapshot().sum, 7.0);
        assert_eq!(m.tokens[op][1].snapshot().sum, 11.0);
        assert_eq!(m.ttft[Operation::Chat as usize].snapshot().count, 0);
        assert_eq!(GenAiMetrics::slot_error_type(failed), "upstream_failed");
        // Codes this version does not know share the last slot: `_OTHER`, not one code's name.
        let unknown = |c| GenAiMetrics::slot(Some(meridian_protocol::ErrorCode(c)));
        assert_eq!(unknown(0x15), unknown(0x40));
        assert_eq!(GenAiMetrics::slot_error_type(unknown(0x40)), "_OTHER");
    }
}
