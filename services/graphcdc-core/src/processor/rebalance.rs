//! Rebalance hooks of the processor's consumer: commit what is durable on revoke,
//! remember revoked partitions, track the assignment, keep new partitions paused during
//! retries.
//!
//! The revoke does not sync the sink: librdkafka calls these hooks from inside the
//! processor task's poll, and blocking a runtime thread there on an async sink (whose
//! flush runs on tokio's blocking pool) would stall the rebalance and risks hanging the
//! task. Offsets of writes acknowledged since the last sync stay uncommitted; the next
//! owner reads those events again (at most `processor.commit_interval_ms` of them; none
//! with the default 0) and the version fence skips what is already in the sink.

use super::durable::Unsynced;
use crate::stats::{Health, Stats};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::{ClientContext, Statistics, TopicPartitionList};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Rebalance hooks: commit on revoke, remember revoked partitions, track assignment,
/// and keep newly assigned partitions paused while a batch is being retried.
pub struct ProcessorContext {
    /// Partitions revoked since the main loop last dropped their records.
    pub revoked: Mutex<Vec<(String, i32)>>,
    /// Partitions revoked while batches were in flight, in order: a batch's records of
    /// partitions revoked after it was handed to its task must not be retried (their
    /// next owner writes them). Cleared when a batch starts with none in flight.
    pub revoked_during_batch: Mutex<Vec<(String, i32)>>,
    /// A batch is being retried: every assigned partition must stay paused.
    pub retrying: AtomicBool,
    /// Offsets of writes the sink acknowledged but has not made durable yet.
    pub unsynced: Mutex<Unsynced>,
    pub stats: Arc<Stats>,
    pub health: Arc<Health>,
}

impl ClientContext for ProcessorContext {
    /// Offsets and lag of the assigned partitions (every `statistics.interval.ms`).
    fn stats(&self, statistics: Statistics) {
        for (topic, t) in &statistics.topics {
            for (id, p) in &t.partitions {
                if *id < 0 || !p.desired || p.hi_offset < 0 {
                    continue;
                }
                // Before the first commit the group starts from the partition's start.
                let committed = if p.committed_offset >= 0 {
                    p.committed_offset
                } else {
                    p.lo_offset.max(0)
                };
                self.stats
                    .partition_offsets(topic, *id, committed, p.hi_offset);
            }
        }
    }
}

impl ConsumerContext for ProcessorContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let revoked_now = match rebalance {
            Rebalance::Revoke(partitions) => {
                // Only offsets of durable writes are ever stored, so committing them is
                // safe (unless the assignment is already lost to another member).
                if !consumer.assignment_lost() {
                    commit_stored(consumer, CommitMode::Sync);
                }
                // librdkafka keeps a partition's pause flag across revoke/assign.
                let _ = consumer.resume(partitions);
                (*partitions).clone()
            }
            Rebalance::Error(e) => {
                tracing::warn!(error = %e, "rebalance error: dropping the whole assignment");
                let assignment = consumer.assignment().unwrap_or_default();
                // rdkafka unassigns next, and the pause flag would outlive it.
                let _ = consumer.resume(&assignment);
                assignment
            }
            Rebalance::Assign(_) => return,
        };
        let mut revoked = self.revoked.lock().unwrap();
        let mut during_batch = self.revoked_during_batch.lock().unwrap();
        for p in revoked_now.elements() {
            revoked.push((p.topic().to_owned(), p.partition()));
            during_batch.push((p.topic().to_owned(), p.partition()));
        }
        Stats::add(&self.stats.rebalances, 1);
        tracing::info!(partitions = revoked_now.count(), "partitions revoked");
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let assigned = consumer.assignment().map_or(0, |a| a.count());
        self.health.set_assigned_partitions(assigned);
        if let Rebalance::Assign(partitions) = rebalance {
            // A partition keeps its pause flag across revoke and assign: set it to what
            // the processor needs now, whatever came before.
            if self.retrying.load(Ordering::SeqCst) {
                let _ = consumer.pause(partitions);
            } else {
                let _ = consumer.resume(partitions);
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
pub fn commit_stored<C: ConsumerContext, K: Consumer<C>>(consumer: &K, mode: CommitMode) {
    match consumer.commit_consumer_state(mode) {
        Ok(()) | Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => tracing::warn!(error = %e, "offset commit failed"),
    }
}
