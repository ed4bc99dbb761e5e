//! The metrics of every service, recorded in one place.
//!
//! Each value is recorded once, through a [`Counter`], [`Gauge`] or [`Distribution`]:
//! the call updates an in-process value (what the demo, the bench and the tests read)
//! and the `metrics` facade handle that `metrics-exporter-prometheus` renders on
//! `/metrics`. Handles are resolved when a value is bound to its name and labels, so
//! the Prometheus recorder ([`crate::ops::install_recorder`]) must be installed before
//! a service's stats are created or bound; without a recorder the facade is a no-op.

use metrics::Label;
use metrics_util::storage::Summary;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

/// Metric labels, e.g. `[("group", "g"), ("topic", "t")]`.
pub type Labels = Vec<Label>;

fn labels_with(base: &[Label], extra: &[(&'static str, &str)]) -> Labels {
    let mut labels = base.to_vec();
    labels.extend(extra.iter().map(|(k, v)| Label::new(*k, v.to_string())));
    labels
}

/// A monotonic count.
#[derive(Debug, Default)]
pub struct Counter {
    value: AtomicU64,
    exported: OnceLock<metrics::Counter>,
}

impl Counter {
    fn bind(&self, name: &'static str, labels: &[Label]) {
        let _ = self.exported.set(metrics::counter!(name, labels.to_vec()));
    }

    fn named(name: &'static str) -> Self {
        let counter = Counter::default();
        counter.bind(name, &[]);
        counter
    }

    /// Add `n`.
    pub fn add(&self, n: u64) {
        self.value.fetch_add(n, Ordering::Relaxed);
        if let Some(exported) = self.exported.get() {
            exported.increment(n);
        }
    }

    /// Current value.
    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge {
    bits: AtomicU64,
    exported: OnceLock<metrics::Gauge>,
}

impl Gauge {
    fn bind(&self, name: &'static str, labels: &[Label]) {
        let gauge = metrics::gauge!(name, labels.to_vec());
        gauge.set(self.get());
        let _ = self.exported.set(gauge);
    }

    fn named(name: &'static str) -> Self {
        let gauge = Gauge::default();
        gauge.bind(name, &[]);
        gauge
    }

    /// Set the value.
    pub fn set(&self, value: f64) {
        self.bits.store(value.to_bits(), Ordering::Relaxed);
        if let Some(exported) = self.exported.get() {
            exported.set(value);
        }
    }

    /// Current value.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.bits.load(Ordering::Relaxed))
    }

    /// Set to 1 (`true`) or 0.
    pub fn set_flag(&self, on: bool) {
        self.set(f64::from(u8::from(on)));
    }

    /// Whether the value is not 0.
    pub fn flag(&self) -> bool {
        self.get() != 0.0
    }
}

/// A distribution of values (seconds, events): exported as a Prometheus histogram
/// with the buckets [`crate::ops`] configures for its name; kept in-process as a
/// sketch for quantiles (relative error 0.1% from 1 µs up, no upper bound).
#[derive(Debug)]
pub struct Distribution {
    local: Mutex<Summary>,
    exported: OnceLock<metrics::Histogram>,
}

impl Default for Distribution {
    fn default() -> Self {
        Distribution {
            local: Mutex::new(Summary::new(0.001, 32_768, 1e-6)),
            exported: OnceLock::new(),
        }
    }
}

impl Distribution {
    fn bind(&self, name: &'static str, labels: &[Label]) {
        let _ = self
            .exported
            .set(metrics::histogram!(name, labels.to_vec()));
    }

    /// Record every value of `values`.
    pub fn record_all(&self, values: impl IntoIterator<Item = f64>) {
        let mut local = self.local.lock().unwrap();
        let exported = self.exported.get();
        for value in values {
            local.add(value);
            if let Some(exported) = exported {
                exported.record(value);
            }
        }
    }

    /// Record one value.
    pub fn record(&self, value: f64) {
        self.record_all([value]);
    }

    /// Number of values recorded.
    pub fn count(&self) -> usize {
        self.local.lock().unwrap().count()
    }

    /// The `q` quantile (0..=1); `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.local.lock().unwrap().quantile(q)
    }
}

/// What the embedding step of one collection did (label `collection`).
#[derive(Debug, Default)]
pub struct EmbeddingStats {
    /// Calls to the model, one per batch of texts.
    pub model_calls: Counter,
    /// Texts the model embedded.
    pub embedded: Counter,
    /// Texts whose stored vector was kept (same text hash): no model call.
    pub cache_hits: Counter,
    /// Texts the model refused; their events went to the DLQ.
    pub rejected: Counter,
    /// Seconds per model call.
    pub call_duration: Distribution,
}

impl EmbeddingStats {
    /// Counters bound to `collection`.
    pub fn for_collection(collection: &str) -> Self {
        let stats = EmbeddingStats::default();
        let labels = labels_with(&[], &[("collection", collection)]);
        let by_source = |source| labels_with(&labels, &[("source", source)]);
        stats
            .model_calls
            .bind("graphcdc_embedding_model_calls_total", &labels);
        stats
            .embedded
            .bind("graphcdc_embedding_texts_total", &by_source("model"));
        stats
            .cache_hits
            .bind("graphcdc_embedding_texts_total", &by_source("cache"));
        stats
            .rejected
            .bind("graphcdc_embedding_rejected_total", &labels);
        stats
            .call_duration
            .bind("graphcdc_embedding_call_duration_seconds", &labels);
        stats
    }
}

/// Counters of a processor (labels `group`, `topic`, bound by the processor).
#[derive(Debug, Default)]
pub struct Stats {
    /// Records received from the change topic.
    pub consumed: Counter,
    /// Point writes acknowledged by the sink.
    pub applied: Counter,
    /// Point writes not applied because the sink (or the same batch) held a version
    /// at least as new: duplicates, replays, out-of-order events.
    pub skipped_stale: Counter,
    /// Records sent to the DLQ (all reasons; per reason in [`Stats::dlq_by_reason`]).
    pub dlq: Counter,
    /// Records whose labels/type match no mapping.
    pub unmapped: Counter,
    /// Batches applied.
    pub batches: Counter,
    /// Retries after transient failures.
    pub retries: Counter,
    /// Partition revocations seen.
    pub rebalances: Counter,
    /// Now − source commit time of every applied write, when the sink acknowledged it:
    /// the end-to-end delay users feel (seconds).
    pub freshness: Distribution,
    /// Records per applied batch.
    pub batch_size: Distribution,
    /// Time to apply a batch: sink writes and DLQ sends until acknowledged (seconds).
    pub apply_duration: Distribution,
    /// Sink calls that failed as unavailable (the batch was retried).
    pub sink_unavailable: Counter,
    /// Sink calls that refused a write (the batch was split).
    pub sink_rejected: Counter,
    labels: OnceLock<Labels>,
    dlq_by_reason: Mutex<BTreeMap<&'static str, u64>>,
}

impl Stats {
    /// Add `n` to `counter`.
    pub fn add(counter: &Counter, n: u64) {
        counter.add(n);
    }

    /// Current value of `counter`.
    pub fn get(counter: &Counter) -> u64 {
        counter.get()
    }

    /// Give the exported metrics their `group` and `topic` labels (the first call wins).
    pub fn bind(&self, group: &str, topic: &str) {
        let labels = labels_with(&[], &[("group", group), ("topic", topic)]);
        if self.labels.set(labels.clone()).is_err() {
            return;
        }
        for (name, counter) in [
            ("graphcdc_events_consumed_total", &self.consumed),
            ("graphcdc_points_applied_total", &self.applied),
            ("graphcdc_points_skipped_stale_total", &self.skipped_stale),
            ("graphcdc_events_unmapped_total", &self.unmapped),
            ("graphcdc_batches_total", &self.batches),
            ("graphcdc_retries_total", &self.retries),
            ("graphcdc_rebalances_total", &self.rebalances),
        ] {
            counter.bind(name, &labels);
        }
        for (class, counter) in [
            ("unavailable", &self.sink_unavailable),
            ("rejected", &self.sink_rejected),
        ] {
            let labels = labels_with(&labels, &[("class", class)]);
            counter.bind("graphcdc_sink_errors_total", &labels);
        }
        for (name, distribution) in [
            ("graphcdc_freshness_seconds", &self.freshness),
            ("graphcdc_apply_duration_seconds", &self.apply_duration),
            ("graphcdc_batch_size_events", &self.batch_size),
        ] {
            distribution.bind(name, &labels);
        }
    }

    fn labels(&self) -> &[Label] {
        self.labels.get().map_or(&[], Vec::as_slice)
    }

    /// Count `n` records sent to the DLQ for `reason`.
    pub fn dead_lettered(&self, reason: &'static str, n: u64) {
        self.dlq.add(n);
        *self
            .dlq_by_reason
            .lock()
            .unwrap()
            .entry(reason)
            .or_default() += n;
        let labels = labels_with(self.labels(), &[("reason", reason)]);
        metrics::counter!("graphcdc_events_dlq_total", labels).increment(n);
    }

    /// Records sent to the DLQ, per reason.
    pub fn dlq_by_reason(&self) -> BTreeMap<&'static str, u64> {
        self.dlq_by_reason.lock().unwrap().clone()
    }

    /// Count `n` point writes acknowledged in `collection`.
    pub fn applied_in(&self, collection: &str, n: u64) {
        self.applied.add(n);
        let labels = labels_with(self.labels(), &[("collection", collection)]);
        metrics::counter!("graphcdc_collection_points_applied_total", labels).increment(n);
    }

    /// Committed offset, end and lag of one assigned partition (labels `group`,
    /// `topic`, `partition`).
    pub fn partition_offsets(&self, topic: &str, partition: i32, committed: i64, end: i64) {
        let group = self
            .labels()
            .iter()
            .find(|l| l.key() == "group")
            .map_or("", |l| l.value());
        let labels = labels_with(
            &[],
            &[
                ("group", group),
                ("topic", topic),
                ("partition", &partition.to_string()),
            ],
        );
        let lag = (end - committed).max(0);
        for (name, value) in [
            ("graphcdc_consumer_lag_records", lag),
            ("graphcdc_committed_offset", committed),
            ("graphcdc_high_watermark_offset", end),
        ] {
            metrics::gauge!(name, labels.clone()).set(value as f64);
        }
    }
}

/// Readiness of a processor: loop running, circuit closed; exported as gauges.
#[derive(Debug, Default)]
pub struct Health {
    assigned_partitions: Gauge,
    circuit_open: Gauge,
    ready: Gauge,
    running: AtomicBool,
}

impl Health {
    /// Give the exported gauges their `group` and `topic` labels.
    pub fn bind(&self, group: &str, topic: &str) {
        let labels = labels_with(&[], &[("group", group), ("topic", topic)]);
        self.assigned_partitions
            .bind("graphcdc_partitions_assigned", &labels);
        self.circuit_open.bind("graphcdc_circuit_open", &labels);
        self.ready.bind("graphcdc_ready", &labels);
    }

    /// Whether the service should receive traffic.
    pub fn is_ready(&self) -> bool {
        self.running.load(Ordering::Relaxed) && !self.is_circuit_open()
    }

    /// Whether the circuit breaker is open (the sink keeps failing).
    pub fn is_circuit_open(&self) -> bool {
        self.circuit_open.flag()
    }

    /// Partitions currently assigned.
    pub fn assigned_partitions(&self) -> usize {
        self.assigned_partitions.get() as usize
    }

    /// The main loop started or stopped.
    pub fn set_running(&self, running: bool) {
        self.running.store(running, Ordering::Relaxed);
        self.ready.set_flag(self.is_ready());
    }

    /// The circuit breaker opened or closed.
    pub fn set_circuit_open(&self, open: bool) {
        self.circuit_open.set_flag(open);
        self.ready.set_flag(self.is_ready());
    }

    /// The assignment changed.
    pub fn set_assigned_partitions(&self, n: usize) {
        self.assigned_partitions.set(n as f64);
    }
}

/// Gauges of the reconciler's last check (exported without labels but `class`).
#[derive(Debug)]
pub struct DriftGauges {
    /// Drifted points per class at the last check (`class` label).
    drift: Mutex<BTreeMap<&'static str, Gauge>>,
    /// Unix time (s) when the last check finished.
    pub last_check: Gauge,
    /// How long the last check took (s).
    pub last_check_duration: Gauge,
    /// Checks completed.
    pub checks: Counter,
    /// Fixes written or published.
    pub repaired: Counter,
    /// Checks or repairs that failed (broker, sink) in continuous mode.
    pub failures: Counter,
    /// Failures since the last successful check.
    pub consecutive_failures: Gauge,
    /// Repairs the delete guard refused.
    pub repairs_refused: Counter,
}

impl Default for DriftGauges {
    fn default() -> Self {
        DriftGauges {
            drift: Mutex::default(),
            last_check: Gauge::named("graphcdc_reconcile_last_check_timestamp_seconds"),
            last_check_duration: Gauge::named("graphcdc_reconcile_check_duration_seconds"),
            checks: Counter::named("graphcdc_reconcile_checks_total"),
            repaired: Counter::named("graphcdc_reconcile_repaired_total"),
            failures: Counter::named("graphcdc_reconcile_failures_total"),
            consecutive_failures: Gauge::named("graphcdc_reconcile_consecutive_failures"),
            repairs_refused: Counter::named("graphcdc_reconcile_repairs_refused_total"),
        }
    }
}

impl DriftGauges {
    /// Set the drift gauge of `class`.
    pub fn set_drift(&self, class: &'static str, points: u64) {
        let mut drift = self.drift.lock().unwrap();
        let gauge = drift.entry(class).or_insert_with(|| {
            let gauge = Gauge::default();
            gauge.bind(
                "graphcdc_drift_points",
                &labels_with(&[], &[("class", class)]),
            );
            gauge
        });
        gauge.set(points as f64);
    }

    /// Drifted points of `class` at the last check.
    pub fn drift(&self, class: &str) -> u64 {
        self.drift
            .lock()
            .unwrap()
            .get(class)
            .map_or(0, |g| g.get() as u64)
    }
}

/// Counters of the outbox relay.
#[derive(Debug)]
pub struct RelayStats {
    /// Outbox entries published and deleted.
    pub published: Counter,
    /// Outbox entries marked failed (not convertible into events).
    pub failed: Counter,
    /// Nodes re-emitted because their denormalised context changed (outbox entries
    /// written by the relay).
    pub context_reemitted: Counter,
    /// Changes of a related node whose context fan-out exceeded `max_fanout`: the nodes
    /// beyond it were not re-emitted.
    pub context_fanout_overflow: Counter,
    /// Outbox entries waiting, at the last round.
    pub outbox_depth: Gauge,
    /// Age of the oldest waiting entry (s), at the last round.
    pub lag: Gauge,
    /// 1 while this relay holds the lease.
    pub holds_lease: Gauge,
}

impl Default for RelayStats {
    fn default() -> Self {
        RelayStats {
            published: Counter::named("graphcdc_relay_published_total"),
            failed: Counter::named("graphcdc_relay_failed_total"),
            context_reemitted: Counter::named("graphcdc_relay_context_reemitted_total"),
            context_fanout_overflow: Counter::named("graphcdc_relay_context_fanout_overflow_total"),
            outbox_depth: Gauge::named("graphcdc_relay_outbox_entries"),
            lag: Gauge::named("graphcdc_relay_lag_seconds"),
            holds_lease: Gauge::named("graphcdc_relay_holds_lease"),
        }
    }
}

impl RelayStats {
    /// Whether this relay holds the lease.
    pub fn set_holds_lease(&self, holds: bool) {
        self.holds_lease.set_flag(holds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_quantiles_have_no_upper_bound() {
        let d = Distribution::default();
        assert_eq!(d.quantile(0.5), None);
        for ms in 1..=100 {
            d.record(f64::from(ms) / 1000.0);
        }
        d.record(50.0);
        assert_eq!(d.count(), 101);
        let close = |a: Option<f64>, b: f64| (a.unwrap() - b).abs() <= b * 0.01;
        assert!(close(d.quantile(0.5), 0.051), "{:?}", d.quantile(0.5));
        assert!(close(d.quantile(1.0), 50.0), "{:?}", d.quantile(1.0));
    }

    #[test]
    fn counters_and_gauges_keep_their_in_process_value_without_a_recorder() {
        let stats = Stats::default();
        stats.bind("g", "t");
        stats.dead_lettered("Undecodable", 2);
        stats.dead_lettered("MissingKey", 1);
        stats.applied_in("chunks", 5);
        assert_eq!(Stats::get(&stats.dlq), 3);
        assert_eq!(stats.dlq_by_reason()["Undecodable"], 2);
        assert_eq!(Stats::get(&stats.applied), 5);
        let health = Health::default();
        health.set_running(true);
        assert!(health.is_ready());
        health.set_circuit_open(true);
        assert!(!health.is_ready() && health.is_circuit_open());
    }
}
