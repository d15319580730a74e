//! A shared byte budget: how many request bytes the edge holds in memory at once, across
//! every protocol. Reservations grow as bytes arrive and give everything back when dropped.
//! One atomic read-modify-write per reservation step; never exceeds the budget.

use std::sync::atomic::Ordering::{AcqRel, Acquire};

use crossbeam::utils::CachePadded;

use super::{Arc, AtomicU64};

/// The budget, shared by every connection of an edge.
#[derive(Debug)]
pub struct ByteBudget {
    used: CachePadded<AtomicU64>,
    max: u64,
}

impl ByteBudget {
    /// A budget of `max` bytes.
    pub fn new(max: u64) -> Arc<Self> {
        Arc::new(ByteBudget {
            used: CachePadded::new(AtomicU64::new(0)),
            max,
        })
    }

    /// Bytes reserved now.
    pub fn used(&self) -> u64 {
        self.used.load(Acquire)
    }

    /// The budget.
    pub fn max(&self) -> u64 {
        self.max
    }

    fn take(&self, n: u64) -> bool {
        self.used
            .fetch_update(AcqRel, Acquire, |u| {
                u.checked_add(n).filter(|&total| total <= self.max)
            })
            .is_ok()
    }

    /// An empty reservation of `budget`, grown with [`Reservation::grow`]. (An associated
    /// function: loom's `Arc` cannot be a method receiver.)
    pub fn reservation(budget: &Arc<Self>) -> Reservation {
        Reservation {
            budget: budget.clone(),
            held: 0,
        }
    }
}

/// Bytes one request holds; released when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<ByteBudget>,
    held: u64,
}

impl Reservation {
    /// Reserves `n` more bytes; `false` (nothing reserved) when the budget is spent.
    pub fn grow(&mut self, n: u64) -> bool {
        let ok = self.budget.take(n);
        if ok {
            self.held += n;
        }
        ok
    }

    /// Bytes held.
    pub fn held(&self) -> u64 {
        self.held
    }

    /// Gives everything held back now (as dropping does); the reservation stays usable.
    pub fn release(&mut self) {
        if self.held > 0 {
            self.budget.used.fetch_sub(self.held, AcqRel);
            self.held = 0;
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_budget_and_releases_on_drop() {
        let b = ByteBudget::new(100);
        let mut r1 = ByteBudget::reservation(&b);
        assert!(r1.grow(60));
        let mut r2 = ByteBudget::reservation(&b);
        assert!(!r2.grow(41), "over budget");
        assert!(r2.grow(40));
        assert_eq!(b.used(), 100);
        drop(r1);
        assert_eq!(b.used(), 40);
        drop(r2);
        assert_eq!(b.used(), 0);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::model;

    #[test]
    fn loom_budget_never_overcommits_and_returns_to_zero() {
        model(|| {
            let b = ByteBudget::new(10);
            let admitted = crate::sync::count_true(&b, 2, |b| {
                let mut r = ByteBudget::reservation(b);
                let ok = r.grow(6);
                assert!(b.used() <= 10, "budget overcommitted");
                ok
            });
            assert!(admitted >= 1, "an admissible reservation was refused");
            assert_eq!(b.used(), 0);
        });
    }
}
