//! A worker's counters, observable by tests and the admin surface without timers: every
//! change notifies waiters.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tokio::sync::Notify;

/// Live counters of a worker.
#[derive(Debug, Default)]
pub struct WorkerStats {
    in_flight: AtomicU64,
    queued: AtomicU64,
    completed: AtomicU64,
    cancelled: AtomicU64,
    rejected: AtomicU64,
    tokens: AtomicU64,
    changed: Notify,
}

/// A copy of the counters at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Requests generating now.
    pub in_flight: u64,
    /// Requests waiting for a generation slot.
    pub queued: u64,
    /// Requests that ended with END.
    pub completed: u64,
    /// Requests whose client went away mid-generation (generation stopped).
    pub cancelled: u64,
    /// Requests answered with ERROR before generating.
    pub rejected: u64,
    /// Tokens generated.
    pub tokens: u64,
}

/// Which counter an event moves.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Event {
    Queued,
    Dequeued,
    Started,
    Completed,
    Cancelled,
    Rejected,
    Token,
}

impl WorkerStats {
    pub(crate) fn record(&self, e: Event) {
        match e {
            Event::Queued => self.queued.fetch_add(1, Relaxed),
            Event::Dequeued => self.queued.fetch_sub(1, Relaxed),
            Event::Started => self.in_flight.fetch_add(1, Relaxed),
            Event::Completed => {
                self.in_flight.fetch_sub(1, Relaxed);
                self.completed.fetch_add(1, Relaxed)
            }
            Event::Cancelled => {
                self.in_flight.fetch_sub(1, Relaxed);
                self.cancelled.fetch_add(1, Relaxed)
            }
            Event::Rejected => self.rejected.fetch_add(1, Relaxed),
            Event::Token => return self.tokens_add(),
        };
        self.changed.notify_waiters();
    }

    fn tokens_add(&self) {
        // Tokens change constantly; they do not wake waiters.
        self.tokens.fetch_add(1, Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            in_flight: self.in_flight.load(Relaxed),
            queued: self.queued.load(Relaxed),
            completed: self.completed.load(Relaxed),
            cancelled: self.cancelled.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            tokens: self.tokens.load(Relaxed),
        }
    }

    /// Waits until `pred` holds for the counters (checked on every request-level change).
    pub async fn wait_until(&self, pred: impl Fn(&StatsSnapshot) -> bool) -> StatsSnapshot {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let s = self.snapshot();
            if pred(&s) {
                return s;
            }
            notified.await;
        }
    }
}
