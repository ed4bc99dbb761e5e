//! Counters and health state shared by a running service, kept in one place so the
//! metrics endpoint and the demo read the same numbers.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Event counters of a processor.
#[derive(Debug, Default)]
pub struct Stats {
    /// Records received from the change topic.
    pub consumed: AtomicU64,
    /// Point writes acknowledged by the sink.
    pub applied: AtomicU64,
    /// Point writes not applied because the sink (or the same batch) held a version
    /// at least as new: duplicates, replays, out-of-order events.
    pub skipped_stale: AtomicU64,
    /// Records sent to the DLQ.
    pub dlq: AtomicU64,
    /// Records whose labels/type match no mapping.
    pub unmapped: AtomicU64,
    /// Batches applied.
    pub batches: AtomicU64,
    /// Retries after transient failures.
    pub retries: AtomicU64,
    /// Partition revocations seen.
    pub rebalances: AtomicU64,
}

impl Stats {
    /// Add `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Current value of `counter`.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Readiness of a service: partitions assigned, circuit closed.
#[derive(Debug, Default)]
pub struct Health {
    /// Partitions currently assigned.
    pub assigned_partitions: AtomicUsize,
    /// Circuit breaker open: the sink keeps failing.
    pub circuit_open: AtomicBool,
    /// The main loop is running.
    pub running: AtomicBool,
}

impl Health {
    /// Whether the service should receive traffic.
    pub fn is_ready(&self) -> bool {
        self.running.load(Ordering::Relaxed) && !self.circuit_open.load(Ordering::Relaxed)
    }
}

/// Gauges of the reconciler's last check, per drift class.
#[derive(Debug, Default)]
pub struct DriftGauges {
    pub missing: AtomicU64,
    pub orphan: AtomicU64,
    pub stale: AtomicU64,
    pub content_mismatch: AtomicU64,
    pub ahead: AtomicU64,
    /// Unix time (ms) when the last check finished.
    pub last_check_unix_ms: AtomicU64,
    /// How long the last check took (ms).
    pub last_check_duration_ms: AtomicU64,
    /// Checks completed.
    pub checks: AtomicU64,
    /// Fixes written or published.
    pub repaired: AtomicU64,
}
