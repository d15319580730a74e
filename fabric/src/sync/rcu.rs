//! `RcuCell`: read-copy-update publication of an `Arc<T>` (the routing table).
//!
//! Readers are lock-free: two counter updates, two loads and a reference-count increment;
//! they retry only if a writer flips the epoch under them. Writers (table rebuilds, off the
//! hot path) are serialised by a mutex, swap the pointer, flip the epoch, and wait until
//! every reader that might still hold the old pointer unregistered before releasing it.
//!
//! Why it is safe (checked by `loom_rcu_*`): a reader registers in `readers[e & 1]` and
//! then re-reads `epoch` with a read-modify-write; only if it is still `e` does it load the
//! pointer. A writer that
//! removes pointer P swapped it out *before* flipping away from the epoch current at that
//! time and waits for that epoch's readers. A reader that loaded P either registered in
//! that epoch (so the writer waits for it) or registered in the one before, in which case
//! the writer that installed P waited for it before finishing, and the writer removing P
//! cannot start until that one has finished.
#![allow(unsafe_code)]

use std::fmt;
use std::sync::atomic::Ordering::SeqCst;

use super::{yield_now, Arc, AtomicPtr, AtomicUsize, Mutex};

/// A lock-free readable, atomically replaceable `Arc<T>`.
pub struct RcuCell<T> {
    ptr: AtomicPtr<T>,
    epoch: AtomicUsize,
    readers: [AtomicUsize; 2],
    writer: Mutex<()>,
}

impl<T> RcuCell<T> {
    /// A cell holding `value`.
    pub fn new(value: Arc<T>) -> Self {
        RcuCell {
            ptr: AtomicPtr::new(Arc::into_raw(value) as *mut T),
            epoch: AtomicUsize::new(0),
            readers: [AtomicUsize::new(0), AtomicUsize::new(0)],
            writer: Mutex::new(()),
        }
    }

    /// Registers as a reader and returns the current pointer; the caller must unregister
    /// (drop the returned guard) once done with it.
    fn enter(&self) -> (ReadGuard<'_>, *const T) {
        loop {
            let epoch = self.epoch.load(SeqCst);
            let slot = &self.readers[epoch & 1];
            slot.fetch_add(1, SeqCst);
            // An RMW, not a load: it reads the latest epoch in modification order, and if
            // that is still `epoch` a writer flipping later synchronises with it and so sees
            // our registration. (A plain load would need store→load SeqCst ordering, which
            // loom does not model and weaker hardware orders only with a full fence.)
            if self.epoch.fetch_add(0, SeqCst) != epoch {
                // A writer flipped between our two reads: it may not wait for this slot.
                slot.fetch_sub(1, SeqCst);
                continue;
            }
            return (ReadGuard { slot }, self.ptr.load(SeqCst));
        }
    }

    /// The current value, as an owned `Arc`. Lock-free; never blocks on writers.
    pub fn load(&self) -> Arc<T> {
        let (_guard, p) = self.enter();
        // SAFETY: `p` came from `Arc::into_raw` and its reference is released only by the
        // writer that swaps it out, after the slot `_guard` holds drops to zero; see the
        // module docs.
        unsafe {
            Arc::increment_strong_count(p);
            Arc::from_raw(p)
        }
    }

    /// Runs `f` on the current value without touching its reference count: the cheapest
    /// read. A writer waits for `f` to return before releasing the value, so `f` must be
    /// short (the route decision is ~100 ns).
    pub fn read<R>(&self, f: impl FnOnce(&T) -> R) -> R {
        let (_guard, p) = self.enter();
        // SAFETY: as in `load`: the value stays alive while `_guard` keeps us registered.
        f(unsafe { &*p })
    }

    /// Publishes `value`; returns once no reader can still obtain the previous one (the
    /// previous value itself lives on in readers' clones).
    pub fn store(&self, value: Arc<T>) {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.ptr.swap(Arc::into_raw(value) as *mut T, SeqCst);
        let epoch = self.epoch.fetch_add(1, SeqCst);
        while self.readers[epoch & 1].load(SeqCst) != 0 {
            yield_now();
        }
        // SAFETY: `old` came from `Arc::into_raw`; no reader can load it any more (it was
        // swapped out) and every reader that loaded it has taken its own reference.
        drop(unsafe { Arc::from_raw(old) });
    }
}

/// A registered reader; unregisters on drop (also if the reader panics).
struct ReadGuard<'a> {
    slot: &'a AtomicUsize,
}

impl Drop for ReadGuard<'_> {
    fn drop(&mut self) {
        self.slot.fetch_sub(1, SeqCst);
    }
}

impl<T> Drop for RcuCell<T> {
    fn drop(&mut self) {
        // SAFETY: `&mut self`: no reader or writer is active; the pointer is the cell's own.
        drop(unsafe { Arc::from_raw(self.ptr.load(SeqCst)) });
    }
}

// SAFETY-relevant: the cell hands out `Arc<T>` across threads, so it needs what `Arc<T>` needs.
unsafe impl<T: Send + Sync> Send for RcuCell<T> {}
unsafe impl<T: Send + Sync> Sync for RcuCell<T> {}

impl<T: fmt::Debug> fmt::Debug for RcuCell<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RcuCell").field(&self.load()).finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn load_sees_latest_store() {
        let cell = RcuCell::new(Arc::new(1));
        let first = cell.load();
        cell.store(Arc::new(2));
        assert_eq!(*first, 1, "old readers keep their snapshot");
        assert_eq!(*cell.load(), 2);
        assert_eq!(cell.read(|v| *v + 1), 3);
        assert_eq!(
            Arc::strong_count(&first),
            1,
            "the cell released the old value"
        );
    }

    #[test]
    fn concurrent_readers_and_writer() {
        let cell = Arc::new(RcuCell::new(Arc::new(0u64)));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let cell = cell.clone();
                std::thread::spawn(move || {
                    let mut last = 0;
                    for _ in 0..20_000 {
                        let v = *cell.load();
                        assert!(v >= last, "values only grow");
                        last = v;
                    }
                })
            })
            .collect();
        for i in 1..=2_000 {
            cell.store(Arc::new(i));
        }
        for r in readers {
            r.join().unwrap();
        }
        assert_eq!(*cell.load(), 2_000);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::model;
    use crate::sync::AtomicBool;

    /// A value that records its own destruction, so a reader can check it never sees a
    /// dropped value.
    struct Tracked {
        value: usize,
        alive: Arc<AtomicBool>,
    }

    impl Drop for Tracked {
        fn drop(&mut self) {
            self.alive.store(false, SeqCst);
        }
    }

    fn tracked(value: usize) -> (Arc<Tracked>, Arc<AtomicBool>) {
        let alive = Arc::new(AtomicBool::new(true));
        (
            Arc::new(Tracked {
                value,
                alive: alive.clone(),
            }),
            alive,
        )
    }

    #[test]
    fn loom_rcu_reader_never_sees_freed_value() {
        model(|| {
            let (v0, _) = tracked(0);
            let cell = Arc::new(RcuCell::new(v0));
            let reader = {
                let cell = cell.clone();
                loom::thread::spawn(move || {
                    for _ in 0..2 {
                        let v = cell.load();
                        assert!(v.alive.load(SeqCst), "reader got a freed value");
                        assert!(v.value <= 2);
                    }
                })
            };
            let (v1, alive1) = tracked(1);
            let (v2, _) = tracked(2);
            cell.store(v1);
            cell.store(v2);
            reader.join().unwrap();
            assert_eq!(cell.load().value, 2);
            assert!(!alive1.load(SeqCst), "replaced values are released");
        });
    }

    #[test]
    fn loom_rcu_two_readers_one_writer() {
        model(|| {
            let (v0, _) = tracked(0);
            let cell = Arc::new(RcuCell::new(v0));
            let readers: Vec<_> = (0..2)
                .map(|_| {
                    let cell = cell.clone();
                    loom::thread::spawn(move || {
                        // One reader through `read` (no refcount), one through `load`.
                        cell.read(|v| {
                            assert!(v.alive.load(SeqCst), "read() saw a freed value");
                        });
                        let v = cell.load();
                        assert!(v.alive.load(SeqCst));
                        v.value
                    })
                })
                .collect();
            let (v1, _) = tracked(1);
            cell.store(v1);
            for r in readers {
                assert!(r.join().unwrap() <= 1);
            }
        });
    }
}
