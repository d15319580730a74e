//! A lock-free rate limiter: the generic cell rate algorithm (GCRA) over one atomic.
//!
//! The bucket stores only its *theoretical arrival time* (TAT): when it would be empty again
//! at the configured rate. Taking `n` units moves the TAT `n × interval` later; the take is
//! allowed while the TAT stays within `burst × interval` of now. One compare-and-swap per
//! admission, so concurrent takers can never admit more than the burst at once, and nothing
//! is locked or allocated. Time comes in as an argument (nanoseconds on any monotonic clock),
//! so the logic is testable without a clock and model-checked with loom.

use std::sync::atomic::Ordering::{AcqRel, Acquire};

use crossbeam::utils::CachePadded;

use super::AtomicU64;

/// A token bucket of `burst` units refilled at one unit per `interval_ns`.
#[derive(Debug)]
pub struct Bucket {
    tat: CachePadded<AtomicU64>,
    interval_ns: u64,
    burst: u64,
}

impl Bucket {
    /// A full bucket: `burst` units (≥ 1), one more every `interval_ns` (≥ 1).
    pub fn new(interval_ns: u64, burst: u64) -> Self {
        Bucket {
            tat: CachePadded::new(AtomicU64::new(0)),
            interval_ns: interval_ns.max(1),
            burst: burst.max(1),
        }
    }

    /// The bucket's capacity in units.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// Takes `n` units at time `now_ns` (at most the burst: a larger `n` takes a full
    /// bucket). `Err(wait_ns)`: not enough units; that many nanoseconds from `now_ns` they
    /// would be, and nothing was taken.
    pub fn try_take(&self, now_ns: u64, n: u64) -> Result<(), u64> {
        let cost = n.min(self.burst).saturating_mul(self.interval_ns);
        let limit = self.burst.saturating_mul(self.interval_ns);
        let mut wait = 0;
        let taken = self.tat.fetch_update(AcqRel, Acquire, |tat| {
            let new = tat.max(now_ns).saturating_add(cost);
            let ahead = new - now_ns;
            if ahead <= limit {
                Some(new)
            } else {
                wait = ahead - limit;
                None
            }
        });
        taken.map(|_| ()).map_err(|_| wait)
    }

    /// Takes `n` more units unconditionally (a request that used more than it reserved):
    /// the bucket goes into debt and later takes wait for it. At most one burst per charge,
    /// so one bogus count cannot lock the bucket for centuries.
    pub fn charge(&self, n: u64) {
        let cost = n.min(self.burst).saturating_mul(self.interval_ns);
        let _ = self
            .tat
            .fetch_update(AcqRel, Acquire, |tat| Some(tat.saturating_add(cost)));
    }

    /// Gives back `n` units taken earlier but not used (a reservation settled lower). The
    /// bucket never holds more than its burst: a refund past "full" is absorbed at the next
    /// take, which starts from now.
    pub fn refund(&self, n: u64) {
        let back = n.min(self.burst).saturating_mul(self.interval_ns);
        let _ = self
            .tat
            .fetch_update(AcqRel, Acquire, |tat| Some(tat.saturating_sub(back)));
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn burst_then_rate() {
        // 10 units per second, burst 3.
        let b = Bucket::new(100 * MS, 3);
        let t0 = 5_000 * MS;
        for _ in 0..3 {
            b.try_take(t0, 1).unwrap();
        }
        assert_eq!(b.try_take(t0, 1), Err(100 * MS));
        assert_eq!(b.try_take(t0 + 50 * MS, 1), Err(50 * MS));
        b.try_take(t0 + 100 * MS, 1).unwrap();
        // A long pause refills to the burst, never beyond it.
        let t1 = t0 + 60_000 * MS;
        for _ in 0..3 {
            b.try_take(t1, 1).unwrap();
        }
        assert!(b.try_take(t1, 1).is_err());
    }

    #[test]
    fn weighted_takes_and_refunds() {
        // 1 unit per ms, 1000 burst (tokens per second).
        let b = Bucket::new(MS, 1000);
        let t0 = 10_000 * MS;
        b.try_take(t0, 800).unwrap();
        assert_eq!(b.try_take(t0, 300), Err(100 * MS));
        b.refund(700); // settled at 100 of the 800 reserved
        b.try_take(t0, 900).unwrap();
        assert!(b.try_take(t0, 1).is_err());
        // More than the burst takes a full bucket instead of never succeeding.
        let t1 = t0 + 10_000 * MS;
        b.try_take(t1, 5_000).unwrap();
        assert!(b.try_take(t1, 1).is_err());
    }

    #[test]
    fn a_charge_costs_at_most_one_burst_of_debt() {
        let b = Bucket::new(MS, 10);
        let t0 = 1_000 * MS;
        b.try_take(t0, 10).unwrap();
        b.charge(u64::MAX); // a bogus usage report
        assert!(b.try_take(t0 + 5 * MS, 1).is_err(), "in debt");
        b.try_take(t0 + 21 * MS, 1)
            .expect("debt of one burst is paid off");
    }

    #[test]
    fn refunds_do_not_overfill() {
        let b = Bucket::new(MS, 10);
        let t0 = 1_000 * MS;
        b.try_take(t0, 1).unwrap();
        b.refund(1_000);
        for _ in 0..10 {
            b.try_take(t0, 1).unwrap();
        }
        assert!(b.try_take(t0, 1).is_err(), "burst exceeded after a refund");
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::model;
    use crate::sync::Arc;

    #[test]
    fn loom_bucket_never_admits_more_than_the_burst() {
        model(|| {
            let b = Arc::new(Bucket::new(1_000, 2));
            let admitted = crate::sync::count_true(&b, 3, |b| b.try_take(10_000, 1).is_ok());
            assert_eq!(admitted, 2, "exactly the burst is admitted at one instant");
        });
    }

    #[test]
    fn loom_bucket_refund_races_take() {
        model(|| {
            let b = Arc::new(Bucket::new(1_000, 2));
            b.try_take(10_000, 2).unwrap();
            let t = {
                let b = b.clone();
                loom::thread::spawn(move || b.refund(1))
            };
            let first = b.try_take(10_000, 1).is_ok();
            t.join().unwrap();
            let second = b.try_take(10_000, 1).is_ok();
            assert!(first || second, "the refunded unit is available");
            assert!(!(first && second), "only the refunded unit is available");
        });
    }
}
