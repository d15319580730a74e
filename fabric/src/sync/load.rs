//! Per-worker in-flight counters: plain atomics, one cache line each, no locks.
//!
//! `InFlight::try_acquire` admits a request only while the count is under a bound, in one
//! compare-and-swap loop, so concurrent admissions can never overshoot the bound; the
//! returned [`LoadGuard`] gives the slot back when the request ends, however it ends.

use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};

use crossbeam::utils::CachePadded;

use super::{Arc, AtomicU64};

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
    pub fn try_acquire(this: &Arc<Self>, bound: u64) -> Option<LoadGuard> {
        this.count
            .fetch_update(AcqRel, Acquire, |n| (n < bound).then_some(n + 1))
            .ok()
            .map(|_| LoadGuard {
                counter: this.clone(),
            })
    }

    /// Takes a slot unconditionally.
    pub fn acquire(this: &Arc<Self>) -> LoadGuard {
        this.count.fetch_add(1, AcqRel);
        LoadGuard {
            counter: this.clone(),
        }
    }
}

/// One in-flight request; releases its slot when dropped.
#[derive(Debug)]
pub struct LoadGuard {
    counter: Arc<InFlight>,
}

impl Drop for LoadGuard {
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
        let c = Arc::new(InFlight::new());
        let a = InFlight::try_acquire(&c, 2).unwrap();
        let _b = InFlight::try_acquire(&c, 2).unwrap();
        assert!(InFlight::try_acquire(&c, 2).is_none());
        drop(a);
        assert_eq!(c.current(), 1);
        let _d = InFlight::acquire(&c);
        assert_eq!(c.current(), 2);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::model;

    #[test]
    fn loom_in_flight_never_exceeds_bound_and_returns_to_zero() {
        model(|| {
            let c = Arc::new(InFlight::new());
            let handles: Vec<_> = (0..3)
                .map(|_| {
                    let c = c.clone();
                    loom::thread::spawn(move || {
                        let guard = InFlight::try_acquire(&c, 2);
                        assert!(c.current() <= 2, "bound overshot");
                        guard.is_some()
                    })
                })
                .collect();
            let admitted = handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(|a| *a)
                .count();
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
                loom::thread::spawn(move || drop(InFlight::acquire(&c)))
            };
            let g = InFlight::acquire(&c);
            assert!(c.current() >= 1);
            drop(g);
            t.join().unwrap();
            assert_eq!(c.current(), 0);
        });
    }
}
