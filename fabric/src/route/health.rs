//! What the edge observes about one worker: its QUIC path (RTT, loss), how its requests go
//! (TTFT and error-rate EWMAs, consecutive failures) and whether it is ejected as an
//! outlier. Written by the request path and the connection samplers with single atomic
//! operations (an EWMA update is one `fetch_update`), read by the scorer (`route::score`).
//! No lock anywhere.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::time::Duration;

/// Weight of a new sample in the per-request EWMAs (TTFT, errors).
const REQUEST_ALPHA: f64 = 0.2;
/// Weight of a new sample in the path loss EWMA (one sample per path sampling interval).
const PATH_ALPHA: f64 = 0.1;

/// An EWMA of non-negative values, kept as `f64` bits; `NaN` bits = no sample yet.
#[derive(Debug)]
pub struct Ewma(AtomicU64);

impl Default for Ewma {
    fn default() -> Self {
        Ewma(AtomicU64::new(f64::NAN.to_bits()))
    }
}

impl Ewma {
    /// The current average, if any sample was recorded.
    pub fn get(&self) -> Option<f64> {
        let v = f64::from_bits(self.0.load(Relaxed));
        (!v.is_nan()).then_some(v)
    }

    /// Folds `sample` in with weight `alpha` (the first sample is taken as is).
    pub fn record(&self, sample: f64, alpha: f64) {
        let _ = self.0.fetch_update(Relaxed, Relaxed, |bits| {
            let old = f64::from_bits(bits);
            let new = if old.is_nan() {
                sample
            } else {
                old + alpha * (sample - old)
            };
            Some(new.to_bits())
        });
    }

    /// Forgets every sample.
    pub fn reset(&self) {
        self.0.store(f64::NAN.to_bits(), Relaxed);
    }
}

/// One worker's observed health.
#[derive(Debug, Default)]
pub struct Health {
    /// Smoothed QUIC path RTT of its most recently sampled connection, µs (0: none yet).
    rtt_us: AtomicU64,
    /// Fraction of packets the edge sent that were declared lost.
    loss: Ewma,
    /// Time from sending the request upstream to its first token, ms.
    ttft_ms: Ewma,
    /// Fraction of attempts that failed (0 or 1 per attempt).
    errors: Ewma,
    /// Failed attempts since the last success.
    consecutive_failures: AtomicU32,
    /// Attempts and failed attempts, for metrics.
    pub attempts: AtomicU64,
    /// Attempts since the error average was last cleared (the rate is judged only after
    /// enough of them).
    recent_attempts: AtomicU64,
    /// Failed attempts.
    pub failures: AtomicU64,
    /// Whether the worker is ejected (excluded from routing tables).
    ejected: AtomicBool,
    /// Times the worker was ejected.
    pub ejections: AtomicU64,
    /// Ejections in a row without a successful probe in between (sets the backoff).
    pub(crate) eject_streak: AtomicU32,
    /// When an ejected worker may be probed, ms on the router's clock.
    pub(crate) probe_at_ms: AtomicU64,
}

impl Health {
    /// Records one path sample: its smoothed RTT and the packets sent and lost since the
    /// last sample.
    pub fn record_path(&self, rtt: Duration, lost: u64, sent: u64) {
        self.rtt_us.store(rtt.as_micros().max(1) as u64, Relaxed);
        if sent > 0 {
            self.loss
                .record((lost as f64 / sent as f64).min(1.0), PATH_ALPHA);
        }
    }

    /// The last sampled path RTT.
    pub fn path_rtt(&self) -> Option<Duration> {
        match self.rtt_us.load(Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// Loss EWMA of the path.
    pub fn loss(&self) -> Option<f64> {
        self.loss.get()
    }

    /// TTFT EWMA, ms.
    pub fn ttft_ms(&self) -> Option<f64> {
        self.ttft_ms.get()
    }

    /// Error-rate EWMA.
    pub fn error_rate(&self) -> Option<f64> {
        self.errors.get()
    }

    /// Attempts since the error average was last cleared.
    pub fn recent_attempts(&self) -> u64 {
        self.recent_attempts.load(Relaxed)
    }

    /// Failed attempts since the last success.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Relaxed)
    }

    /// An attempt got its first token after `ttft` (from sending upstream).
    pub fn first_token(&self, ttft: Duration) {
        self.ttft_ms.record(ttft.as_secs_f64() * 1e3, REQUEST_ALPHA);
    }

    /// An attempt ended; `failed` if the worker failed it (connection lost, stalled,
    /// refused, answered a server-side error). Returns the consecutive failures so far.
    pub fn outcome(&self, failed: bool) -> u32 {
        self.attempts.fetch_add(1, Relaxed);
        self.recent_attempts.fetch_add(1, Relaxed);
        self.errors
            .record(if failed { 1.0 } else { 0.0 }, REQUEST_ALPHA);
        if failed {
            self.failures.fetch_add(1, Relaxed);
            self.consecutive_failures.fetch_add(1, Relaxed) + 1
        } else {
            self.consecutive_failures.store(0, Relaxed);
            0
        }
    }

    /// Whether the worker is ejected.
    pub fn is_ejected(&self) -> bool {
        self.ejected.load(Relaxed)
    }

    /// Ejects the worker until `probe_at_ms`; false if it already was.
    pub(crate) fn eject(&self, probe_at_ms: u64) -> bool {
        if self.ejected.swap(true, Relaxed) {
            return false;
        }
        self.probe_at_ms.store(probe_at_ms, Relaxed);
        self.ejections.fetch_add(1, Relaxed);
        true
    }

    /// Forgets TTFT and error averages (they go stale while a demoted region gets no
    /// traffic), so the region is judged afresh on the traffic it gets next.
    pub fn fresh_trial(&self) {
        self.ttft_ms.reset();
        self.errors.reset();
        self.recent_attempts.store(0, Relaxed);
    }

    /// Readmits the worker after a successful probe, with a clean record.
    pub(crate) fn readmit(&self) {
        self.errors.reset();
        self.recent_attempts.store(0, Relaxed);
        self.eject_streak.store(0, Relaxed);
        self.consecutive_failures.store(0, Relaxed);
        self.ejected.store(false, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ewma_starts_at_the_first_sample_and_moves_by_alpha() {
        let e = Ewma::default();
        assert_eq!(e.get(), None);
        e.record(100.0, 0.2);
        assert_eq!(e.get(), Some(100.0));
        e.record(200.0, 0.2);
        assert!((e.get().unwrap() - 120.0).abs() < 1e-9);
        e.reset();
        assert_eq!(e.get(), None);
    }

    #[test]
    fn outcomes_count_consecutive_failures_and_a_success_resets_them() {
        let h = Health::default();
        assert_eq!(h.outcome(true), 1);
        assert_eq!(h.outcome(true), 2);
        assert!(h.error_rate().unwrap() > 0.9);
        assert_eq!(h.outcome(false), 0);
        assert_eq!(h.consecutive_failures(), 0);
        assert_eq!(h.attempts.load(Relaxed), 3);
        assert_eq!(h.failures.load(Relaxed), 2);
    }

    #[test]
    fn ejection_happens_once_until_readmitted() {
        let h = Health::default();
        assert!(h.eject(1_000));
        assert!(!h.eject(2_000), "already ejected");
        assert!(h.is_ejected());
        assert_eq!(h.probe_at_ms.load(Relaxed), 1_000);
        h.readmit();
        assert!(!h.is_ejected());
        assert!(h.eject(3_000));
        assert_eq!(h.ejections.load(Relaxed), 2);
    }

    #[test]
    fn path_samples_keep_the_rtt_and_average_the_loss() {
        let h = Health::default();
        assert_eq!(h.path_rtt(), None);
        h.record_path(Duration::from_millis(230), 1, 100);
        assert_eq!(h.path_rtt(), Some(Duration::from_millis(230)));
        assert!((h.loss().unwrap() - 0.01).abs() < 1e-9);
        h.record_path(Duration::from_millis(231), 0, 0);
        assert!(
            (h.loss().unwrap() - 0.01).abs() < 1e-9,
            "no packets sent: no sample"
        );
    }
}
