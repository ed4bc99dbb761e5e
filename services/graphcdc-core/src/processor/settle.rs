//! Settling batches that finished: written ones mark their offsets handled; a failed one
//! is retried with backoff, its partitions paused and polled meanwhile (rebalances,
//! records already fetched), and split once its errors may come from one event.

use super::attempt::{apply_once, AttemptError};
use super::batch::BatchOutcome;
use super::in_flight::Finished;
use super::offsets::OffsetTracker;
use super::rebalance::ProcessorContext;
use super::retry::{Backoff, CircuitBreaker};
use super::{drop_revoked, Processor, Settled};
use crate::kafka::Record;
use crate::stats::Stats;
use rdkafka::consumer::{Consumer, StreamConsumer};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

impl Processor {
    /// Settle finished batches, written ones first (their offsets are handled whatever
    /// happens to a failed one); `Some` when the loop must stop (shutdown during
    /// retries, or a fatal error).
    ///
    /// # Errors
    /// When a batch task panicked.
    pub(super) async fn settle(
        &self,
        consumer: &StreamConsumer<ProcessorContext>,
        mut finished: Vec<Finished>,
        next: &mut Vec<Record>,
        tracker: &mut OffsetTracker,
        breaker: &mut CircuitBreaker,
        shutdown: &CancellationToken,
    ) -> crate::error::Result<Option<Settled>> {
        finished.sort_by_key(|done| !done.succeeded());
        for done in finished {
            let (records, result) = done.result?;
            let settled = self
                .finish(
                    consumer,
                    records,
                    result,
                    done.revoked_from,
                    next,
                    tracker,
                    breaker,
                    shutdown,
                )
                .await;
            if !matches!(settled, Settled::Done) {
                return Ok(Some(settled));
            }
        }
        Ok(None)
    }

    /// Settle a written batch: on success mark its offsets handled; on a failure retry
    /// it (partitions paused, records received meanwhile go to `next`) until it
    /// succeeds. After `isolate_after_retries` failures that one event may cause (an
    /// internal sink error), the retry splits the batch so that only the events that keep
    /// failing go to the DLQ. A DLQ that refuses records for good is fatal.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn finish(
        &self,
        consumer: &StreamConsumer<ProcessorContext>,
        mut batch: Vec<Record>,
        mut result: Result<BatchOutcome, AttemptError>,
        revoked_from: usize,
        next: &mut Vec<Record>,
        tracker: &mut OffsetTracker,
        breaker: &mut CircuitBreaker,
        shutdown: &CancellationToken,
    ) -> Settled {
        let p = &self.config.processor;
        let mut backoff = Backoff::new(
            Duration::from_millis(p.retry_initial_ms),
            Duration::from_millis(p.retry_max_ms),
        );
        let mut paused = false;
        let mut failures = 0u32;
        let gone = consumer.context().revoked_during_batch.lock().unwrap()[revoked_from..].to_vec();
        batch.retain(|r| !gone.iter().any(|(t, p)| *t == r.topic && *p == r.partition));
        let settled = loop {
            let e = match result {
                Ok(outcome) => {
                    for r in &batch {
                        tracker.handled(&r.topic, r.partition, r.offset);
                    }
                    self.record(&outcome, batch.len());
                    breaker.success();
                    self.health.set_circuit_open(false);
                    break Settled::Done;
                }
                Err(e) if e.is_fatal() => break Settled::Fatal(e.into()),
                Err(e) => e,
            };
            // Only consecutive failures one event may cause count towards isolating it.
            failures = if e.may_be_event_specific() {
                failures + 1
            } else {
                0
            };
            let isolate = failures >= p.isolate_after_retries;
            let open = breaker.failure();
            self.health.set_circuit_open(open);
            Stats::add(&self.stats.retries, 1);
            let delay = backoff.next_delay();
            tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, circuit_open = open, isolate, "batch failed; partitions paused");
            if !paused {
                consumer.context().retrying.store(true, Ordering::SeqCst);
                if let Ok(assignment) = consumer.assignment() {
                    let _ = consumer.pause(&assignment);
                }
                paused = true;
            }
            if !self
                .wait_paused(consumer, delay, &mut batch, next, tracker, shutdown)
                .await
            {
                break Settled::Interrupted;
            }
            if batch.is_empty() {
                break Settled::Done;
            }
            let span =
                crate::telemetry::batch_span(batch.iter().map(|r| r.headers.as_slice()), &[]);
            result = apply_once(&self.applier, &self.dlq, &self.stats, &batch, None, isolate)
                .instrument(span)
                .await;
        };
        if paused {
            consumer.context().retrying.store(false, Ordering::SeqCst);
            if let Ok(assignment) = consumer.assignment() {
                let _ = consumer.resume(&assignment);
            }
        }
        settled
    }

    /// Keep polling (rebalances, records already fetched) for `delay` while paused.
    /// Returns `false` when shutdown was requested.
    pub(super) async fn wait_paused(
        &self,
        consumer: &StreamConsumer<ProcessorContext>,
        delay: Duration,
        batch: &mut Vec<Record>,
        next: &mut Vec<Record>,
        tracker: &mut OffsetTracker,
        shutdown: &CancellationToken,
    ) -> bool {
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return false,
                received = tokio::time::timeout_at(until, consumer.recv()) => {
                    drop_revoked(consumer, tracker, &mut [batch, next]);
                    match received {
                        Err(_elapsed) => return true,
                        Ok(Ok(message)) => self.accept(Record::from_message(&message), next, tracker),
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "consumer error while paused");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
        }
    }
}
