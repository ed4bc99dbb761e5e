//! The processor: a consumer group member that applies the change topic to a sink.
//!
//! Guarantees, in the order the loop keeps them:
//! - offsets are stored and committed only after the sink acknowledged the batch and the
//!   DLQ acknowledged its poison records, only up to the highest contiguous handled
//!   offset of each partition ([`offsets::OffsetTracker`]), and only after a
//!   [`VectorSink::sync`] made those writes durable ([`durable`]): the sink is synced
//!   and the offsets committed at most every `processor.commit_interval_ms`, while
//!   writes are visible in the sink as soon as it applied them;
//! - batch n+1 is received, decoded and mapped while batch n is being written; up to
//!   `processor.max_batches_in_flight` batches (default 1) are written at once, and only
//!   batches with disjoint record (entity) keys, so each key's events reach the sink in
//!   offset order ([`in_flight`]); a failed batch is retried alone, after every other
//!   batch in flight settled;
//! - a transient failure pauses the partitions and retries the same batch with backoff;
//!   nothing is committed meanwhile and the consumer keeps polling so rebalances are
//!   served; after `breaker_threshold` failures the circuit opens (not ready);
//! - on revoke, stored (durable) offsets are committed synchronously and records of
//!   revoked partitions are dropped (the next owner reads them again, from the last
//!   offset a sync covered: the sink is not synced inside the rebalance callback);
//! - on shutdown the in-flight batch is finished, the sink synced, offsets committed and
//!   the group left.

mod attempt;
pub mod batch;
pub mod config;
pub mod durable;
mod in_flight;
pub mod offsets;
pub mod rebalance;
pub mod retry;
mod settle;

pub use config::ProcessorConfig;

use crate::codec::{Codec, SchemaRegistry};
use crate::config::Config;
use crate::dlq::{self, DeadLetterQueue};
use crate::embed::Embeddings;
use crate::error::Context;
use crate::kafka::{self, Record};
use crate::mapping::Mapper;
use crate::sink::VectorSink;
use crate::stats::{Health, Stats};
pub(crate) use attempt::run_batch;
use attempt::InFlight;
use batch::PreparedBatch;
use batch::{BatchApplier, BatchOutcome};
use durable::Unsynced;
use in_flight::{Finished, InFlightBatches};
use offsets::OffsetTracker;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rebalance::{commit_stored, ProcessorContext};
use retry::CircuitBreaker;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How a batch was settled.
enum Settled {
    /// Written (and its poison records in the DLQ): its offsets are handled.
    Done,
    /// Shutdown came during the retries: left uncommitted.
    Interrupted,
    /// Retrying cannot help: stop the process.
    Fatal(crate::error::Error),
}

/// How long an idle consumer waits for a record before checking for shutdown again.
const IDLE_POLL: Duration = Duration::from_millis(500);

/// A configured processor, ready to run.
pub struct Processor {
    config: Config,
    applier: Arc<BatchApplier>,
    /// The applier's sink, synced before offsets are committed.
    sink: Arc<dyn VectorSink>,
    dlq: Arc<DeadLetterQueue>,
    stats: Arc<Stats>,
    health: Arc<Health>,
}

impl Processor {
    /// Build the processor and create missing collections (with their version index).
    ///
    /// # Errors
    /// When the registry config is bad, the DLQ producer cannot be created, a
    /// collection cannot be created, or an embedding model cannot be set up.
    pub async fn new(
        config: Config,
        sink: Arc<dyn VectorSink>,
        stats: Arc<Stats>,
        health: Arc<Health>,
    ) -> crate::error::Result<Self> {
        let embeddings = Arc::new(Embeddings::from_mappings(&config.mappings).await?);
        Self::with_embeddings(config, sink, stats, health, embeddings).await
    }

    /// [`Processor::new`] with embedding steps set up by the caller (who can then read
    /// their counts, or embed queries with the same model).
    ///
    /// # Errors
    /// As [`Processor::new`].
    pub async fn with_embeddings(
        config: Config,
        sink: Arc<dyn VectorSink>,
        stats: Arc<Stats>,
        health: Arc<Health>,
        embeddings: Arc<Embeddings>,
    ) -> crate::error::Result<Self> {
        let codec = Arc::new(Codec::new(SchemaRegistry::from_config(&config.registry)?));
        crate::sink::ensure_collections(sink.as_ref(), &config.mappings).await?;
        let mapper = Mapper::new(config.mappings.clone(), config.processor.max_payload_bytes);
        let max_record_bytes = match config.kafka.properties.get("message.max.bytes") {
            Some(v) => v
                .expose()
                .parse()
                .context("kafka.properties.message.max.bytes")?,
            None => dlq::DEFAULT_MAX_RECORD_BYTES,
        };
        let dlq = DeadLetterQueue::new(
            kafka::producer(&config.kafka)?,
            config.kafka.dlq_topic.clone(),
            config.kafka.group_id.clone(),
            max_record_bytes,
        );
        stats.bind(&config.kafka.group_id, &config.kafka.changes_topic);
        health.bind(&config.kafka.group_id, &config.kafka.changes_topic);
        Ok(Processor {
            applier: Arc::new(BatchApplier::new(codec, mapper, embeddings, sink.clone())),
            sink,
            dlq: Arc::new(dlq),
            config,
            stats,
            health,
        })
    }

    fn consumer(&self) -> crate::error::Result<StreamConsumer<ProcessorContext>> {
        let kafka = &self.config.kafka;
        let mut config = kafka::client_config(kafka);
        config
            .set("group.id", &kafka.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        kafka::set_defaults(
            &mut config,
            kafka,
            &[
                ("auto.offset.reset", "earliest"),
                ("session.timeout.ms", "10000"),
                ("heartbeat.interval.ms", "2000"),
                // librdkafka's 500 ms default holds back partitions with little traffic:
                // it dominated end-to-end freshness in docs/benchmarks.md.
                ("fetch.wait.max.ms", "50"),
                // Partition offsets and lag for /metrics.
                ("statistics.interval.ms", "5000"),
            ],
        );
        let context = ProcessorContext {
            revoked: Mutex::new(Vec::new()),
            revoked_during_batch: Mutex::new(Vec::new()),
            retrying: AtomicBool::new(false),
            unsynced: Mutex::new(Unsynced::default()),
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
    /// Fatal errors only (consumer cannot be created, a batch task panicked, the DLQ
    /// refuses records for good); transient ones are retried.
    pub async fn run(self, shutdown: CancellationToken) -> crate::error::Result<()> {
        let consumer = self.consumer()?;
        self.health.set_running(true);
        tracing::info!(topic = %self.config.kafka.changes_topic, group = %self.config.kafka.group_id, "processor started");
        let mut tracker = OffsetTracker::default();
        let mut breaker = CircuitBreaker::new(self.config.processor.breaker_threshold);
        let mut next: Vec<Record> = Vec::new();
        let mut in_flight = InFlightBatches::new(self.config.processor.max_batches_in_flight);
        let mut finished: Vec<Finished> = Vec::new();
        let mut stop = None;
        loop {
            let stopping = self
                .fill(
                    &consumer,
                    &mut next,
                    &mut tracker,
                    (&mut in_flight, &mut finished),
                    &shutdown,
                )
                .await;
            drop_revoked(&consumer, &mut tracker, &mut [&mut next]);
            // Decode and map the next batch while the sink still writes earlier ones
            // (a registry outage here is retried by the batch task).
            let mut prepared = match next.is_empty() {
                true => None,
                false => self.applier.prepare(&next).await.ok(),
            };
            // The next batch goes out once no batch in flight holds one of its keys and
            // there is room; with nothing to write, wait for a batch to settle it.
            let mut keys = in_flight.keys_of(&next);
            while (next.is_empty() && finished.is_empty()) || in_flight.must_wait(&keys) {
                match in_flight.next_finished().await {
                    Some(done) => finished.push(done),
                    None => break,
                }
            }
            finished.extend(in_flight.take_ready());
            if !finished.is_empty() {
                // A failed batch is retried alone: settle every other batch first.
                let retried = !finished.iter().all(Finished::succeeded);
                if retried {
                    while let Some(done) = in_flight.next_finished().await {
                        finished.push(done);
                    }
                }
                if let Some(settled) = self
                    .settle(
                        &consumer,
                        std::mem::take(&mut finished),
                        &mut next,
                        &mut tracker,
                        &mut breaker,
                        &shutdown,
                    )
                    .await?
                {
                    stop = Some(settled);
                    break;
                }
                // Records received during retries join `next`, revoked ones leave it:
                // prepare it again then, and take its keys anew.
                if drop_revoked(&consumer, &mut tracker, &mut [&mut next]) || retried {
                    prepared = None;
                    keys = in_flight.keys_of(&next);
                }
                acknowledge(&consumer, &mut tracker);
            }
            if !next.is_empty() {
                let revoked_from = {
                    let mut revoked = consumer.context().revoked_during_batch.lock().unwrap();
                    if in_flight.is_empty() {
                        revoked.clear();
                    }
                    revoked.len()
                };
                let task = self.spawn_batch(std::mem::take(&mut next), prepared);
                in_flight.push(task, keys, revoked_from);
                // Let the batch task start now: tokio runs a freshly spawned task on this
                // worker (not stealable) once this task yields, and preparing the next
                // batch does not yield.
                tokio::task::yield_now().await;
            }
            if self.sync_if_due(&consumer, false).await {
                commit_stored(&consumer, CommitMode::Async);
            }
            if stopping {
                break;
            }
        }
        if stop.is_none() {
            let mut rest = Vec::new();
            while let Some(done) = in_flight.next_finished().await {
                rest.push(done);
            }
            stop = self
                .settle(
                    &consumer,
                    rest,
                    &mut Vec::new(),
                    &mut tracker,
                    &mut breaker,
                    &shutdown,
                )
                .await?;
        }
        if matches!(stop, Some(Settled::Interrupted)) {
            tracing::warn!("shutdown during retries: the failing batch is left uncommitted");
        }
        acknowledge(&consumer, &mut tracker);
        self.sync_if_due(&consumer, true).await;
        commit_stored(&consumer, CommitMode::Sync);
        consumer.unsubscribe();
        self.health.set_running(false);
        if let Some(Settled::Fatal(e)) = stop {
            tracing::error!(error = %e, "processor stopped: acknowledged offsets committed, the failing batch left uncommitted");
            return Err(e);
        }
        tracing::info!("processor stopped: offsets committed, group left");
        Ok(())
    }

    /// Receive into `batch` until it is full, its oldest record waited long enough, or
    /// shutdown is requested (returns `true` then). While the batch is empty it also
    /// returns as soon as a batch in flight finishes, so its offsets are committed
    /// without waiting for new records.
    async fn fill(
        &self,
        consumer: &StreamConsumer<ProcessorContext>,
        batch: &mut Vec<Record>,
        tracker: &mut OffsetTracker,
        (in_flight, finished): (&mut InFlightBatches, &mut Vec<Finished>),
        shutdown: &CancellationToken,
    ) -> bool {
        let max_wait = Duration::from_millis(self.config.processor.batch_max_wait_ms);
        let mut deadline = (!batch.is_empty()).then(|| Instant::now() + max_wait);
        // An idle consumer still syncs and commits what the sink acknowledged.
        let sync_at = consumer
            .context()
            .unsynced
            .lock()
            .unwrap()
            .due(self.commit_interval());
        while batch.len() < self.config.processor.batch_max_events {
            let until = deadline.unwrap_or_else(|| Instant::now() + IDLE_POLL);
            let watch_task = batch.is_empty() && !in_flight.is_empty();
            let watch_sync = batch.is_empty() && sync_at.is_some();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return true,
                _ = tokio::time::sleep_until(sync_at.unwrap_or(until)), if watch_sync => return false,
                done = in_flight.next_finished(), if watch_task => {
                    finished.extend(done);
                    return false;
                }
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

    /// Write `records` (and send their poison records to the DLQ) on a task of their own.
    fn spawn_batch(&self, records: Vec<Record>, prepared: Option<PreparedBatch>) -> InFlight {
        tokio::spawn(run_batch(
            self.applier.clone(),
            self.dlq.clone(),
            self.stats.clone(),
            records,
            prepared,
        ))
    }

    fn record(&self, outcome: &BatchOutcome, records: usize) {
        let s = &self.stats;
        s.batch_size.record(records as f64);
        s.apply_duration.record(outcome.apply_ms as f64 / 1000.0);
        s.sink_rejected.add(outcome.sink_rejections);
        for (collection, n) in &outcome.applied_by_collection {
            s.applied_in(collection, *n);
        }
        s.skipped_stale.add(outcome.skipped_stale);
        s.unmapped.add(outcome.unmapped);
        for (_, poison) in &outcome.poisoned {
            s.dead_lettered(poison.kind.reason(), 1);
        }
        s.batches.add(1);
        s.freshness
            .record_all(outcome.freshness_ms.iter().map(|ms| *ms as f64 / 1000.0));
    }

    fn commit_interval(&self) -> Duration {
        Duration::from_millis(self.config.processor.commit_interval_ms)
    }

    /// Once the commit interval is up (`now`: at once), sync the sink and store the
    /// offsets of every write acknowledged before the sync, for the caller to commit
    /// (only offsets of durable writes are ever stored); `true` when a sync was due.
    async fn sync_if_due(&self, consumer: &StreamConsumer<ProcessorContext>, now: bool) -> bool {
        let context = consumer.context();
        let due = context.unsynced.lock().unwrap().due(self.commit_interval());
        match due {
            Some(due) if now || Instant::now() >= due => {}
            _ => return false,
        }
        let retry_in = self.commit_interval().max(Duration::from_millis(
            self.config.processor.retry_initial_ms,
        ));
        if !durable::sync_and_store(self.sink.as_ref(), &context.unsynced, consumer, retry_in).await
        {
            self.stats.sink_unavailable.add(1);
        }
        true
    }
}

/// Hand the offsets the sink acknowledged to those waiting for a sync.
fn acknowledge(consumer: &StreamConsumer<ProcessorContext>, tracker: &mut OffsetTracker) {
    let acknowledged = tracker.take_committable();
    if !acknowledged.is_empty() {
        consumer
            .context()
            .unsynced
            .lock()
            .unwrap()
            .acknowledged(acknowledged);
    }
}

/// Drop records of partitions revoked since the last call (their next owner reads them);
/// `true` when any partition was revoked.
fn drop_revoked(
    consumer: &StreamConsumer<ProcessorContext>,
    tracker: &mut OffsetTracker,
    batches: &mut [&mut Vec<Record>],
) -> bool {
    let revoked = std::mem::take(&mut *consumer.context().revoked.lock().unwrap());
    let any = !revoked.is_empty();
    for (topic, partition) in revoked {
        tracker.forget(&topic, partition);
        consumer
            .context()
            .unsynced
            .lock()
            .unwrap()
            .forget(&topic, partition);
        for batch in batches.iter_mut() {
            batch.retain(|r| !(r.topic == topic && r.partition == partition));
        }
    }
    any
}
