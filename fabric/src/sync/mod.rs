//! Lock-free shared state of the hot path, and the shim that swaps std's sync types for
//! loom's under `--cfg loom` so each piece is model-checked (`loom_*` tests).

pub mod bucket;
pub mod budget;
pub mod load;
pub mod rcu;

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize};
#[cfg(loom)]
pub(crate) use loom::sync::{Arc, Mutex};
#[cfg(loom)]
pub(crate) use loom::thread::yield_now;

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize};
#[cfg(not(loom))]
pub(crate) use std::sync::{Arc, Mutex};
#[cfg(not(loom))]
pub(crate) use std::thread::yield_now;

pub use bucket::Bucket;
pub use budget::{ByteBudget, Reservation};
pub use load::{InFlight, LoadGuard};
pub use rcu::RcuCell;

/// Runs `f` on `n` loom threads sharing `state`; how many of them returned true.
#[cfg(all(test, loom))]
pub(crate) fn count_true<T: Send + Sync + 'static>(
    state: &Arc<T>,
    n: usize,
    f: fn(&Arc<T>) -> bool,
) -> usize {
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let s = state.clone();
            loom::thread::spawn(move || f(&s))
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("no panic"))
        .filter(|ok| *ok)
        .count()
}

/// Runs a loom model with a preemption bound of 3: exhaustive for the small models here
/// within seconds (the loom docs' recommended setting; bugs need few preemptions).
#[cfg(all(test, loom))]
pub(crate) fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(f);
}
