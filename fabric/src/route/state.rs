//! Live per-worker state shared by every routing table epoch and every topology generation
//! the worker is part of (a reload keeps an unchanged worker's state: health, load and
//! connections): health, capacity, load, its upstream connections. All fields are atomics
//! written by the worker's connection tasks and read lock-free by the request path.

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU64};

use crate::config::DEFAULT_MAX_CONCURRENT;
use crate::edge::upstream::Links;
use crate::shutdown::Shutdown;
use crate::sync::InFlight;

/// Source of [`WorkerState::uid`]s.
static NEXT_UID: AtomicU64 = AtomicU64::new(1);

/// One worker's live state.
#[derive(Debug)]
pub struct WorkerState {
    /// Unique for the process's lifetime, whatever generation the worker is in: a request
    /// excludes the workers that failed it by uid, across reloads.
    pub uid: u64,
    /// Requests this edge has in flight on the worker.
    pub in_flight: InFlight,
    /// What this edge observes about the worker.
    pub health: super::health::Health,
    /// The edge's connections to it.
    pub links: Links,
    /// A health probe of the (ejected) worker is running.
    pub probing: AtomicBool,
    /// Fired when the worker leaves the topology: its connections drain, then close.
    pub retired: Shutdown,
    healthy: AtomicBool,
    capacity: AtomicU64,
    reported_in_flight: AtomicU64,
    reported_queue: AtomicU64,
}

impl WorkerState {
    /// A worker not yet connected (unhealthy), with `connections` connection slots.
    pub fn with_links(connections: usize) -> Self {
        WorkerState {
            uid: NEXT_UID.fetch_add(1, Relaxed),
            in_flight: InFlight::new(),
            health: Default::default(),
            links: Links::new(connections),
            probing: AtomicBool::new(false),
            retired: Shutdown::new(),
            healthy: AtomicBool::new(false),
            capacity: AtomicU64::new(0),
            reported_in_flight: AtomicU64::new(0),
            reported_queue: AtomicU64::new(0),
        }
    }

    /// Whether the worker can take new requests (connected, not draining, not retired).
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Acquire)
    }

    /// Whether the worker has left the topology.
    pub fn is_retired(&self) -> bool {
        self.retired.is_triggered()
    }

    /// Sets health; returns whether it changed (so the caller rebuilds the table).
    pub fn set_healthy(&self, healthy: bool) -> bool {
        // A retired worker is never routable again (it is out of every newer table anyway).
        let healthy = healthy && !self.is_retired();
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
