//! Per-worker in-flight counters: plain atomics, one cache line each, no locks.
//!
//! `InFlight::try_acquire` admits a request only while the count is under a bound, in one
//! compare-and-swap loop, so concurrent admissions can never overshoot the bound; the
//! returned [`LoadGuard`] gives the slot back when the request ends, however it ends.

use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};

use crossbeam::utils::CachePadded;

use super::AtomicU64;

/// In-flight request count of one worker as seen by this edge.
#[derive(Debug, Default)]
pub struct InFlight {
    count: CachePadded<AtomicU64>,
}

impl InFlight {
    /// A zero counter.
    pub fn new() -> Self {
        InFlight {
            count: CachePadded::new(AtomicU64::new(0)),
        }
    }

    /// Requests in flight now.
    pub fn current(&self) -> u64 {
        self.count.load(Acquire)
    }

    /// Takes a slot if fewer than `bound` are in use.
    pub fn try_acquire(&self, bound: u64) -> Option<LoadGuard<'_>> {
        self.count
            .fetch_update(AcqRel, Acquire, |n| (n < bound).then_some(n + 1))
            .ok()
            .map(|_| LoadGuard { counter: self })
    }

    /// Takes a slot unconditionally.
    pub fn acquire(&self) -> LoadGuard<'_> {
        self.count.fetch_add(1, AcqRel);
        LoadGuard { counter: self }
    }

    /// Takes a slot that the caller gives back with [`InFlight::leave`] exactly once (for an
    /// owner that keeps the counter alive through an `Arc`, where a borrowing guard cannot
    /// live).
    pub fn enter(&self) {
        self.count.fetch_add(1, AcqRel);
    }

    /// Gives back a slot taken with [`InFlight::enter`].
    pub fn leave(&self) {
        let prev = self.count.fetch_sub(1, Relaxed);
        debug_assert!(prev > 0, "in-flight counter underflow");
    }
}

/// One in-flight request; releases its slot when dropped. Borrows the counter, so taking
/// and releasing a slot is exactly one atomic read-modify-write each.
#[derive(Debug)]
pub struct LoadGuard<'a> {
    counter: &'a InFlight,
}

impl Drop for LoadGuard<'_> {
    fn drop(&mut self) {
        let prev = self.counter.count.fetch_sub(1, Relaxed);
        debug_assert!(prev > 0, "in-flight counter underflow");
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn bound_is_respected_and_released() {
        let c = InFlight::new();
        let a = c.try_acquire(2).unwrap();
        let _b = c.try_acquire(2).unwrap();
        assert!(c.try_acquire(2).is_none());
        drop(a);
        assert_eq!(c.current(), 1);
        let _d = c.acquire();
        assert_eq!(c.current(), 2);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::model;
    use crate::sync::Arc;

    #[test]
    fn loom_in_flight_never_exceeds_bound_and_returns_to_zero() {
        model(|| {
            let c = Arc::new(InFlight::new());
            let admitted = crate::sync::count_true(&c, 3, |c| {
                let guard = c.try_acquire(2);
                assert!(c.current() <= 2, "bound overshot");
                guard.is_some()
            });
            assert!(admitted >= 2, "a slot was lost");
            assert_eq!(c.current(), 0, "every guard released its slot");
        });
    }

    #[test]
    fn loom_in_flight_concurrent_acquire_release() {
        model(|| {
            let c = Arc::new(InFlight::new());
            let t = {
                let c = c.clone();
                loom::thread::spawn(move || drop(c.acquire()))
            };
            let g = c.acquire();
            assert!(c.current() >= 1);
            drop(g);
            t.join().unwrap();
            assert_eq!(c.current(), 0);
        });
    }
}
