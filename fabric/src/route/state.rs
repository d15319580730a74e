//! Live per-worker state shared by every routing table epoch: health, capacity, load.
//! All fields are atomics written by the worker's connection task and read lock-free by
//! the request path.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Release};

use crate::config::DEFAULT_MAX_CONCURRENT;
use crate::sync::InFlight;

/// One worker's live state.
#[derive(Debug, Default)]
pub struct WorkerState {
    /// Requests this edge has in flight on the worker.
    pub in_flight: InFlight,
    /// What this edge observes about the worker.
    pub health: super::health::Health,
    healthy: AtomicBool,
    capacity: AtomicU64,
    reported_in_flight: AtomicU64,
    reported_queue: AtomicU64,
}

impl WorkerState {
    /// A worker not yet connected (unhealthy).
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the worker can take new requests (connected and not draining).
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Acquire)
    }

    /// Sets health; returns whether it changed (so the caller rebuilds the table).
    pub fn set_healthy(&self, healthy: bool) -> bool {
        self.healthy.swap(healthy, Release) != healthy
    }

    /// The worker's advertised concurrency (SETTINGS), or the default if unknown.
    pub fn capacity(&self) -> u64 {
        match self.capacity.load(Acquire) {
            0 => DEFAULT_MAX_CONCURRENT.into(),
            c => c,
        }
    }

    /// Records the worker's SETTINGS.
    pub fn set_capacity(&self, capacity: u64) {
        self.capacity.store(capacity, Release);
    }

    /// Records a LOAD report.
    pub fn set_reported(&self, in_flight: u64, queue_depth: u64) {
        self.reported_in_flight.store(in_flight, Release);
        self.reported_queue.store(queue_depth, Release);
    }

    /// The worker's load: the larger of this edge's in-flight count and the worker's own
    /// report (which includes other edges' requests), plus its queue.
    pub fn load(&self) -> u64 {
        self.in_flight
            .current()
            .max(self.reported_in_flight.load(Acquire))
            + self.reported_queue.load(Acquire)
    }

    /// How much the worker's own report exceeds this edge's count (other edges' load and
    /// its queue).
    pub fn reported_extra(&self) -> u64 {
        let reported = self.reported_in_flight.load(Acquire) + self.reported_queue.load(Acquire);
        reported.saturating_sub(self.in_flight.current())
    }

    /// The worker's queue depth from its last LOAD report.
    pub fn queue_depth(&self) -> u64 {
        self.reported_queue.load(Acquire)
    }

    /// This edge's in-flight count.
    pub fn local_in_flight(&self) -> u64 {
        self.in_flight.current()
    }
}
