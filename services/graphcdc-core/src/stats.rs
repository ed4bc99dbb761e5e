//! Counters and health state shared by a running service, kept in one place so the
//! metrics endpoint and the demo read the same numbers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

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
    /// Now − source commit time of every applied write, when the sink acknowledged it:
    /// the end-to-end delay users feel (ms).
    pub freshness: Histogram,
    /// Records per applied batch.
    pub batch_size: Histogram,
    /// Time to apply a batch: sink writes and DLQ sends until acknowledged (ms).
    pub apply_latency: Histogram,
    /// Failed sink calls by class.
    pub sink_errors: SinkErrorCounts,
    /// Point writes acknowledged, per collection.
    pub applied_by_collection: Mutex<BTreeMap<String, u64>>,
    /// Offsets and lag of the assigned partitions, from the consumer's statistics.
    pub partitions: Mutex<BTreeMap<(String, i32), PartitionOffsets>>,
}

/// Failed sink calls by class.
#[derive(Debug, Default)]
pub struct SinkErrorCounts {
    /// Unreachable, timed out, overloaded: the batch was retried.
    pub unavailable: AtomicU64,
    /// The sink refused a write: the batch was split and the culprits sent to the DLQ.
    pub rejected: AtomicU64,
}

/// Offsets of one assigned partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    /// Next offset the group will read after a restart (committed).
    pub committed: i64,
    /// End of the partition (high watermark).
    pub high_watermark: i64,
    /// High watermark − committed.
    pub lag: i64,
}

/// Histogram of whole numbers (milliseconds, events) with unit resolution up to 10,000
/// (and an overflow bucket), lock-free to record.
#[derive(Debug)]
pub struct Histogram {
    buckets: Vec<AtomicU64>,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..=Self::MAX_MS + 1).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Histogram {
    /// Largest value with its own bucket.
    pub const MAX_MS: usize = 10_000;

    /// Record one value (negative values count as 0).
    pub fn record(&self, ms: i64) {
        let index = (ms.max(0) as usize).min(Self::MAX_MS + 1);
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The `q` quantile (0..=1) in ms; `None` when empty. Values above 10 s report
    /// as 10 001.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (ms, bucket) in self.buckets.iter().enumerate() {
            seen += bucket.load(Ordering::Relaxed);
            if seen >= rank {
                return Some(ms as u64);
            }
        }
        Some(Self::MAX_MS as u64 + 1)
    }

    /// Sum of the recorded values (values above 10,000 count as 10,001).
    pub fn sum(&self) -> u64 {
        self.buckets
            .iter()
            .enumerate()
            .map(|(value, b)| value as u64 * b.load(Ordering::Relaxed))
            .sum()
    }

    /// Bucket counts at or below each of `bounds` (ms), for Prometheus-style export.
    pub fn cumulative(&self, bounds: &[u64]) -> Vec<u64> {
        bounds
            .iter()
            .map(|bound| {
                self.buckets
                    .iter()
                    .take((*bound as usize).min(Self::MAX_MS) + 1)
                    .map(|b| b.load(Ordering::Relaxed))
                    .sum()
            })
            .collect()
    }
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
    pub tombstone_vector: AtomicU64,
    /// Unix time (ms) when the last check finished.
    pub last_check_unix_ms: AtomicU64,
    /// How long the last check took (ms).
    pub last_check_duration_ms: AtomicU64,
    /// Checks completed.
    pub checks: AtomicU64,
    /// Fixes written or published.
    pub repaired: AtomicU64,
    /// Checks or repairs that failed (broker, sink) in continuous mode.
    pub failures: AtomicU64,
    /// Failures since the last successful check.
    pub consecutive_failures: AtomicU64,
    /// Repairs the delete guard refused.
    pub repairs_refused: AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles() {
        let h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        for ms in 1..=100 {
            h.record(ms);
        }
        h.record(50_000);
        assert_eq!(h.count(), 101);
        assert_eq!(h.quantile(0.5), Some(51));
        assert_eq!(h.quantile(0.99), Some(100));
        assert_eq!(h.quantile(1.0), Some(10_001));
        assert_eq!(h.cumulative(&[10, 100]), vec![10, 100]);
    }
}

/// Counters of the outbox relay.
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Outbox entries published and deleted.
    pub published: AtomicU64,
    /// Outbox entries marked failed (not convertible into events).
    pub failed: AtomicU64,
    /// Outbox entries waiting, at the last round.
    pub outbox_depth: AtomicU64,
    /// Age of the oldest waiting entry (ms), at the last round.
    pub lag_ms: AtomicU64,
    /// This relay holds the lease.
    pub holds_lease: AtomicBool,
}
