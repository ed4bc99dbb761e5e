//! The processor: a consumer group member that applies the change topic to a sink.
//!
//! Guarantees, in the order the loop keeps them:
//! - offsets are stored and committed only after the sink acknowledged the batch and the
//!   DLQ acknowledged its poison records, and only up to the highest contiguous handled
//!   offset of each partition ([`offsets::OffsetTracker`]);
//! - a transient failure pauses the partitions and retries the same batch with backoff;
//!   nothing is committed meanwhile and the consumer keeps polling so rebalances are
//!   served; after `breaker_threshold` failures the circuit opens (not ready);
//! - on revoke, stored offsets are committed synchronously and records of revoked
//!   partitions are dropped (the next owner reads them again);
//! - on shutdown the in-flight batch is finished, offsets are committed, the group is left.

pub mod batch;
pub mod dlq;
pub mod offsets;
pub mod retry;

use crate::codec::{Codec, SchemaRegistry};
use crate::config::Config;
use crate::error::SinkError;
use crate::kafka::{self, Record};
use crate::mapping::Mapper;
use crate::sink::{CollectionSpec, VectorSink};
use crate::stats::{Health, Stats};
use anyhow::Context;
use batch::{BatchApplier, BatchOutcome};
use dlq::DeadLetterQueue;
use offsets::OffsetTracker;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use retry::{Backoff, CircuitBreaker};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long an idle consumer waits for a record before checking for shutdown again.
const IDLE_POLL: Duration = Duration::from_millis(500);

/// Rebalance hooks: commit on revoke, remember revoked partitions, track assignment,
/// and keep newly assigned partitions paused while a batch is being retried.
struct ProcessorContext {
    revoked: Mutex<Vec<(String, i32)>>,
    /// A batch is being retried: every assigned partition must stay paused.
    retrying: AtomicBool,
    stats: Arc<Stats>,
    health: Arc<Health>,
}

impl ClientContext for ProcessorContext {}

impl ConsumerContext for ProcessorContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let revoked_now = match rebalance {
            Rebalance::Revoke(partitions) => {
                // Only acknowledged offsets are ever stored, so committing them is safe
                // (unless the assignment is already lost to another member).
                if !consumer.assignment_lost() {
                    commit_stored(consumer, CommitMode::Sync);
                }
                // librdkafka keeps a partition's pause flag across revoke/assign.
                let _ = consumer.resume(partitions);
                (*partitions).clone()
            }
            Rebalance::Error(e) => {
                tracing::warn!(error = %e, "rebalance error: dropping the whole assignment");
                consumer.assignment().unwrap_or_default()
            }
            Rebalance::Assign(_) => return,
        };
        let mut revoked = self.revoked.lock().unwrap();
        for p in revoked_now.elements() {
            revoked.push((p.topic().to_owned(), p.partition()));
        }
        Stats::add(&self.stats.rebalances, 1);
        tracing::info!(partitions = revoked_now.count(), "partitions revoked");
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let assigned = consumer.assignment().map_or(0, |a| a.count());
        self.health
            .assigned_partitions
            .store(assigned, Ordering::Relaxed);
        if let Rebalance::Assign(partitions) = rebalance {
            if self.retrying.load(Ordering::SeqCst) {
                let _ = consumer.pause(partitions);
            }
            tracing::info!(partitions = partitions.count(), "partitions assigned");
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        if let Err(e) = result {
            if !matches!(
                e,
                KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)
            ) {
                tracing::warn!(error = %e, "offset commit failed; the next commit covers it");
            }
        }
    }
}

/// Commit the stored offsets; "nothing to commit" is not an error.
fn commit_stored<C: ConsumerContext, K: Consumer<C>>(consumer: &K, mode: CommitMode) {
    match consumer.commit_consumer_state(mode) {
        Ok(()) | Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => tracing::warn!(error = %e, "offset commit failed"),
    }
}

/// A configured processor, ready to run.
pub struct Processor {
    config: Config,
    applier: BatchApplier,
    dlq: DeadLetterQueue,
    stats: Arc<Stats>,
    health: Arc<Health>,
}

impl Processor {
    /// Build the processor and create missing collections (with their version index).
    ///
    /// # Errors
    /// When the registry config is bad, the DLQ producer cannot be created, or a
    /// collection cannot be created.
    pub async fn new(
        config: Config,
        sink: Arc<dyn VectorSink>,
        stats: Arc<Stats>,
        health: Arc<Health>,
    ) -> anyhow::Result<Self> {
        let codec = Arc::new(Codec::new(SchemaRegistry::from_config(&config.registry)?));
        for m in &config.mappings {
            let spec = CollectionSpec {
                name: m.collection.clone(),
                vector_name: m.vector_name.clone(),
                dimension: m.dimension,
                distance: m.distance,
            };
            sink.ensure_collection(&spec).await.with_context(|| {
                format!("creating collection {:?} in {}", m.collection, sink.name())
            })?;
        }
        let mapper = Mapper::new(config.mappings.clone(), config.processor.max_payload_bytes);
        let dlq = DeadLetterQueue::new(
            kafka::producer(&config.kafka)?,
            config.kafka.dlq_topic.clone(),
            config.kafka.group_id.clone(),
        );
        Ok(Processor {
            applier: BatchApplier::new(codec, mapper, sink),
            dlq,
            config,
            stats,
            health,
        })
    }

    fn consumer(&self) -> anyhow::Result<StreamConsumer<ProcessorContext>> {
        let kafka = &self.config.kafka;
        let mut config = kafka::client_config(kafka);
        config
            .set("group.id", &kafka.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        for (key, value) in [
            ("auto.offset.reset", "earliest"),
            ("session.timeout.ms", "10000"),
            ("heartbeat.interval.ms", "2000"),
            // librdkafka's 500 ms default holds back partitions with little traffic:
            // it dominated end-to-end freshness in docs/benchmarks.md.
            ("fetch.wait.max.ms", "50"),
        ] {
            if !kafka.properties.contains_key(key) {
                config.set(key, value);
            }
        }
        let context = ProcessorContext {
            revoked: Mutex::new(Vec::new()),
            retrying: AtomicBool::new(false),
            stats: self.stats.clone(),
            health: self.health.clone(),
        };
        let consumer: StreamConsumer<ProcessorContext> = config
            .create_with_context(context)
            .context("creating Kafka consumer")?;
        consumer
            .subscribe(&[&kafka.changes_topic])
            .with_context(|| format!("subscribing to {}", kafka.changes_topic))?;
        Ok(consumer)
    }

    /// Consume and apply until `shutdown` is cancelled; then finish the in-flight batch,
    /// commit, and leave the group.
    ///
    /// # Errors
    /// Fatal errors only (consumer cannot be created); transient ones are retried.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let consumer = self.consumer()?;
        self.health.running.store(true, Ordering::Relaxed);
        tracing::info!(topic = %self.config.kafka.changes_topic, group = %self.config.kafka.group_id, "processor started");
        let mut tracker = OffsetTracker::default();
        let mut breaker = CircuitBreaker::new(self.config.processor.breaker_threshold);
        let mut batch: Vec<Record> = Vec::new();
        loop {
            let stopping = self
                .fill(&consumer, &mut batch, &mut tracker, &shutdown)
                .await;
            drop_revoked(&consumer, &mut tracker, &mut [&mut batch]);
            if !batch.is_empty() {
                let taken = std::mem::take(&mut batch);
                match self
                    .apply_with_retry(&consumer, taken, &mut tracker, &mut breaker, &shutdown)
                    .await
                {
                    Some(carry) => batch = carry,
                    None => break,
                }
                self.commit(&consumer, &mut tracker, CommitMode::Async);
            }
            if stopping {
                break;
            }
        }
        self.commit(&consumer, &mut tracker, CommitMode::Sync);
        commit_stored(&consumer, CommitMode::Sync);
        consumer.unsubscribe();
        self.health.running.store(false, Ordering::Relaxed);
        tracing::info!("processor stopped: offsets committed, group left");
        Ok(())
    }

    /// Receive into `batch` until it is full, its oldest record waited long enough, or
    /// shutdown is requested (returns `true` then).
    async fn fill(
        &self,
        consumer: &StreamConsumer<ProcessorContext>,
        batch: &mut Vec<Record>,
        tracker: &mut OffsetTracker,
        shutdown: &CancellationToken,
    ) -> bool {
        let max_wait = Duration::from_millis(self.config.processor.batch_max_wait_ms);
        let mut deadline = (!batch.is_empty()).then(|| Instant::now() + max_wait);
        while batch.len() < self.config.processor.batch_max_events {
            let until = deadline.unwrap_or_else(|| Instant::now() + IDLE_POLL);
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return true,
                received = tokio::time::timeout_at(until, consumer.recv()) => {
                    drop_revoked(consumer, tracker, &mut [batch]);
                    match received {
                        Err(_elapsed) if deadline.is_some() => break,
                        Err(_elapsed) => {}
                        Ok(Ok(message)) => {
                            self.accept(Record::from_message(&message), batch, tracker);
                            deadline.get_or_insert_with(|| Instant::now() + max_wait);
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "consumer error (retrying)");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
        }
        false
    }

    fn accept(&self, record: Record, batch: &mut Vec<Record>, tracker: &mut OffsetTracker) {
        tracker.received(&record.topic, record.partition, record.offset);
        Stats::add(&self.stats.consumed, 1);
        batch.push(record);
    }

    /// Apply `batch` until it succeeds; returns the records received meanwhile (to start
    /// the next batch), or `None` when shutdown interrupted the retries.
    async fn apply_with_retry(
        &self,
        consumer: &StreamConsumer<ProcessorContext>,
        mut batch: Vec<Record>,
        tracker: &mut OffsetTracker,
        breaker: &mut CircuitBreaker,
        shutdown: &CancellationToken,
    ) -> Option<Vec<Record>> {
        let p = &self.config.processor;
        let mut backoff = Backoff::new(
            Duration::from_millis(p.retry_initial_ms),
            Duration::from_millis(p.retry_max_ms),
        );
        let mut paused = false;
        let mut carry = Vec::new();
        loop {
            match self.apply_once(&batch).await {
                Ok(outcome) => {
                    for r in &batch {
                        tracker.handled(&r.topic, r.partition, r.offset);
                    }
                    self.record(&outcome);
                    breaker.success();
                    self.health.circuit_open.store(false, Ordering::Relaxed);
                    break;
                }
                Err(e) => {
                    let open = breaker.failure();
                    self.health.circuit_open.store(open, Ordering::Relaxed);
                    Stats::add(&self.stats.retries, 1);
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, circuit_open = open, "batch failed; partitions paused");
                    if !paused {
                        consumer.context().retrying.store(true, Ordering::SeqCst);
                        if let Ok(assignment) = consumer.assignment() {
                            let _ = consumer.pause(&assignment);
                        }
                        paused = true;
                    }
                    let until = Instant::now() + delay;
                    loop {
                        tokio::select! {
                            biased;
                            _ = shutdown.cancelled() => {
                                tracing::warn!(records = batch.len(), "shutdown during retries: batch left uncommitted");
                                return None;
                            }
                            received = tokio::time::timeout_at(until, consumer.recv()) => {
                                drop_revoked(consumer, tracker, &mut [&mut batch, &mut carry]);
                                match received {
                                    Err(_elapsed) => break,
                                    Ok(Ok(message)) => self.accept(Record::from_message(&message), &mut carry, tracker),
                                    Ok(Err(e)) => {
                                        tracing::warn!(error = %e, "consumer error while paused");
                                        tokio::time::sleep(Duration::from_millis(100)).await;
                                    }
                                }
                            }
                        }
                    }
                    if batch.is_empty() {
                        break;
                    }
                }
            }
        }
        if paused {
            consumer.context().retrying.store(false, Ordering::SeqCst);
            if let Ok(assignment) = consumer.assignment() {
                let _ = consumer.resume(&assignment);
            }
        }
        Some(carry)
    }

    /// Apply to the sink, then send poison records to the DLQ; both acknowledged or error.
    async fn apply_once(&self, batch: &[Record]) -> Result<BatchOutcome, SinkError> {
        let outcome = self.applier.apply(batch).await?;
        if !outcome.poisoned.is_empty() {
            for (index, error) in &outcome.poisoned {
                let r = &batch[*index];
                tracing::warn!(topic = %r.topic, partition = r.partition, offset = r.offset, %error, "poison event sent to the DLQ");
            }
            let poisoned: Vec<_> = outcome
                .poisoned
                .iter()
                .map(|(index, error)| (&batch[*index], error.clone()))
                .collect();
            self.dlq
                .send_all(&poisoned)
                .await
                .map_err(|e| SinkError::Unavailable(e.to_string()))?;
        }
        Ok(outcome)
    }

    fn record(&self, outcome: &BatchOutcome) {
        Stats::add(&self.stats.applied, outcome.applied);
        Stats::add(&self.stats.skipped_stale, outcome.skipped_stale);
        Stats::add(&self.stats.unmapped, outcome.unmapped);
        Stats::add(&self.stats.dlq, outcome.poisoned.len() as u64);
        Stats::add(&self.stats.batches, 1);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        for commit_time in &outcome.applied_commit_times {
            self.stats.freshness.record(now_ms - commit_time);
        }
    }

    /// Store the committable offsets and commit them.
    fn commit(
        &self,
        consumer: &StreamConsumer<ProcessorContext>,
        tracker: &mut OffsetTracker,
        mode: CommitMode,
    ) {
        let committable = tracker.take_committable();
        if committable.is_empty() {
            return;
        }
        let mut offsets = TopicPartitionList::new();
        for (topic, partition, offset) in &committable {
            if let Err(e) = offsets.add_partition_offset(topic, *partition, Offset::Offset(*offset))
            {
                tracing::warn!(error = %e, "bad offset");
            }
        }
        if let Err(e) = consumer.store_offsets(&offsets) {
            tracing::warn!(error = %e, "storing offsets failed (partition revoked?)");
        }
        commit_stored(consumer, mode);
    }
}

/// Drop records of partitions revoked since the last call; their next owner reads them.
fn drop_revoked(
    consumer: &StreamConsumer<ProcessorContext>,
    tracker: &mut OffsetTracker,
    batches: &mut [&mut Vec<Record>],
) {
    let revoked = std::mem::take(&mut *consumer.context().revoked.lock().unwrap());
    for (topic, partition) in revoked {
        tracker.forget(&topic, partition);
        for batch in batches.iter_mut() {
            batch.retain(|r| !(r.topic == topic && r.partition == partition));
        }
    }
}
