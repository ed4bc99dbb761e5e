//! Looking again at what a scan found, so a check under live traffic reports only real
//! drift, and judges every entity however often it changes.
//!
//! The scan compares the sink with the state topic as read just before it, so a processor
//! applying a live stream makes points look ahead (applied after the state was read),
//! orphans (created after), or stale and missing (published, not applied yet). Every
//! candidate, whatever its class, is looked at again before it is reported:
//!
//! 1. **Barrier.** When some candidate has the sink behind the state (stale, missing),
//!    the change topic's high watermarks are taken after the scan, and the reconciler
//!    waits, at most the grace period, until the processor's group (`kafka.group_id`) has
//!    committed them on every partition. A state record and its change record are
//!    published together, so every state the scan compared with has its change record
//!    below the barrier (assumed: a publisher does not leave a change record unsent for
//!    longer than the scan once its state record is acknowledged).
//! 2. **Fresh reads.** The sink is read again for just those points (tombstones that kept
//!    a vector: that collection's list again), *then* the state topic is read to its new
//!    end, so a sink version seen now has its state record read too.
//! 3. **Judgement** against the fresh state ("behind" includes a live point whose key the
//!    state deleted at a newer version: the sink lacks the delete):
//!    - matches: not drift (it was in flight);
//!    - the sink is not behind (ahead, orphan, content mismatch, tombstone vector): drift
//!      after a second look ~300 ms later for ahead and orphans (a state record may be
//!      acknowledged a moment after its change record was applied); the age of the state
//!      plays no part, so a hot key is judged like any other;
//!    - the sink is behind the fresh state but holds at least the version the scan
//!      expected (any version, for a key the state did not know then): not drift, the
//!      key changed again after the scan and the next check judges that version;
//!    - the sink is older than the version the scan expected: drift when the processor
//!      passed the barrier (it has applied that change: the sink lost it), or when the
//!      state is older than the grace period (a stopped or lagging processor); otherwise
//!      the point is counted "not yet judged" (`in_grace`).
//!
//! Under steady traffic with a processor that keeps up, the barrier is passed within a
//! batch, so every entity is judged in every check. `--grace 0s` judges at once: no wait
//! for the processor, and every state the sink lacks is drift.

use super::classify::{judge, vector_presence, Drift, DriftClass, DriftReport};
use super::Reconciler;
use crate::error::Context;
use crate::kafka;
use crate::kafka::KafkaConfig;
use futures::{StreamExt, TryStreamExt};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Sink reads in flight during a re-check.
const CONCURRENT_READS: usize = 16;
/// Pause before the second look at points the sink holds newer than the state.
const SECOND_LOOK: Duration = Duration::from_millis(300);
/// Poll interval while waiting for the processor.
const POSITION_POLL: Duration = Duration::from_millis(200);

/// Where the processor's consumer group is on the change topic.
pub struct ProcessorPosition {
    consumer: BaseConsumer,
    topic: String,
}

impl ProcessorPosition {
    /// A reader of `kafka.group_id`'s committed offsets (it never joins the group).
    ///
    /// # Errors
    /// When the client cannot be created.
    pub fn new(kafka_config: &KafkaConfig) -> crate::error::Result<Self> {
        let mut config = kafka::client_config(kafka_config);
        config
            .set("group.id", &kafka_config.group_id)
            .set("enable.auto.commit", "false");
        Ok(ProcessorPosition {
            consumer: config.create().context("creating offsets reader")?,
            topic: kafka_config.changes_topic.clone(),
        })
    }

    /// The change topic's high watermarks now.
    fn barrier(&self) -> crate::error::Result<HashMap<i32, (i64, i64)>> {
        tokio::task::block_in_place(|| {
            kafka::partition_ids(&self.consumer, &self.topic)?
                .into_iter()
                .map(|p| {
                    let marks = self
                        .consumer
                        .fetch_watermarks(&self.topic, p, kafka::ADMIN_TIMEOUT)
                        .context("fetching change topic watermarks")?;
                    Ok((p, marks))
                })
                .collect()
        })
    }

    /// Whether the group has committed `barrier` (high watermarks, with the low ones for
    /// partitions it never committed on) on every partition.
    fn passed(&self, barrier: &HashMap<i32, (i64, i64)>) -> crate::error::Result<bool> {
        let mut tpl = TopicPartitionList::new();
        for p in barrier.keys() {
            tpl.add_partition(&self.topic, *p);
        }
        let committed = tokio::task::block_in_place(|| {
            self.consumer
                .committed_offsets(tpl, kafka::ADMIN_TIMEOUT)
                .context("fetching the processor's committed offsets")
        })?;
        Ok(barrier.iter().all(|(p, (low, high))| {
            match committed
                .find_partition(&self.topic, *p)
                .map(|e| e.offset())
            {
                Some(Offset::Offset(o)) => o >= *high,
                _ => high <= low,
            }
        }))
    }
}

/// A candidate of the scan and the version the scan expected for it.
struct Candidate {
    drift: Drift,
    /// The state's version when the scan compared (before the barrier).
    known_before: Option<i64>,
    /// Kafka timestamp (ms) of that state record.
    known_at_ms: Option<i64>,
}

/// What a look at candidates found.
#[derive(Default)]
struct Looked {
    drifts: Vec<Candidate>,
    pending: u64,
}

impl Reconciler {
    /// Look again at every candidate of `report` (module doc) and keep only real drift.
    ///
    /// # Errors
    /// When the state topic or the sink cannot be read.
    pub(super) async fn recheck(
        &mut self,
        report: &mut DriftReport,
        grace: Duration,
    ) -> crate::error::Result<()> {
        let mut candidates = Vec::with_capacity(report.drifts.len());
        for drift in std::mem::take(&mut report.drifts) {
            let lookup = self.expected.lookup(&drift.id)?;
            let (known_before, known_at_ms) = match drift.class {
                // Live in the sink and deleted later on the state topic: behind.
                DriftClass::Orphan => match lookup.deleted {
                    Some(d) if drift.sink_version.is_some_and(|v| v < d.version) => {
                        (Some(d.version), Some(d.timestamp_ms))
                    }
                    _ => (None, None),
                },
                _ => (
                    drift.expected_version,
                    lookup.point.as_ref().map(|e| e.timestamp_ms),
                ),
            };
            candidates.push(Candidate {
                drift,
                known_before,
                known_at_ms,
            });
        }
        report.rechecked = candidates.len() as u64;
        if candidates.is_empty() {
            return Ok(());
        }
        let behind = candidates.iter().any(|c| {
            matches!(c.drift.class, DriftClass::Stale | DriftClass::Missing)
                || (c.drift.class == DriftClass::Orphan && c.known_before.is_some())
        });
        let passed = behind && self.wait_for_processor(grace).await;
        let first = self.look(candidates, passed, grace).await?;
        let (again, mut kept): (Vec<_>, Vec<_>) = first
            .drifts
            .into_iter()
            .partition(|c| matches!(c.drift.class, DriftClass::Ahead | DriftClass::Orphan));
        let mut pending = first.pending;
        if !again.is_empty() {
            tokio::time::sleep(SECOND_LOOK).await;
            let second = self.look(again, passed, grace).await?;
            pending += second.pending;
            kept.extend(second.drifts);
        }
        report.drifts = kept.into_iter().map(|c| c.drift).collect();
        report.in_grace = pending;
        report.sort();
        Ok(())
    }

    /// Wait, at most `grace`, until the processor has committed the change topic's
    /// current end; whether it did. A broker that cannot say counts as "not passed".
    async fn wait_for_processor(&self, grace: Duration) -> bool {
        let deadline = Instant::now() + grace;
        let result = async {
            let barrier = self.position.barrier()?;
            loop {
                if self.position.passed(&barrier)? {
                    return Ok(true);
                }
                if Instant::now() + POSITION_POLL > deadline {
                    return Ok(false);
                }
                tokio::time::sleep(POSITION_POLL).await;
            }
        }
        .await;
        result.unwrap_or_else(|e: crate::error::Error| {
            tracing::warn!(error = %format!("{e:#}"), "cannot read the processor's position; judging by age");
            false
        })
    }

    /// Read the sink for `candidates`, then the state topic to its end, and judge them.
    async fn look(
        &mut self,
        candidates: Vec<Candidate>,
        passed: bool,
        grace: Duration,
    ) -> crate::error::Result<Looked> {
        let sink = self.sink.clone();
        let reads: Vec<_> = futures::stream::iter(
            candidates
                .iter()
                .filter(|c| !c.drift.class.is_vector_presence()),
        )
        .map(|c| {
            let sink = sink.clone();
            async move {
                let stored = sink.get(&c.drift.collection, c.drift.id).await?;
                Ok::<_, crate::sink::SinkError>((c.drift.id, stored))
            }
        })
        .buffer_unordered(CONCURRENT_READS)
        .try_collect()
        .await?;
        let reads: HashMap<Uuid, _> = reads.into_iter().collect();
        let mut presence: HashSet<(Uuid, DriftClass)> = HashSet::new();
        let collections: HashSet<&str> = candidates
            .iter()
            .filter(|c| c.drift.class.is_vector_presence())
            .map(|c| c.drift.collection.as_str())
            .collect();
        for collection in collections {
            if let Some(vector_name) = self.vector_names.get(collection) {
                let found = vector_presence(sink.as_ref(), collection, vector_name).await?;
                presence.extend(found.iter().map(|(class, p)| (p.id, *class)));
            }
        }
        self.catch_up().await?;
        let now_ms = crate::unix_ms();
        let mut looked = Looked::default();
        for c in candidates {
            let d = &c.drift;
            if d.class.is_vector_presence() {
                if presence.contains(&(d.id, d.class)) {
                    looked.drifts.push(c);
                }
                continue;
            }
            let stored = reads.get(&d.id).and_then(Option::as_ref);
            let lookup = self.expected.lookup(&d.id)?;
            let Some(drift) = judge(&d.collection, d.id, stored, &lookup) else {
                continue;
            };
            let sink_version = stored.map_or(i64::MIN, |s| s.version);
            let behind = match drift.class {
                DriftClass::Stale | DriftClass::Missing => true,
                DriftClass::Orphan => lookup.deleted_version().is_some_and(|at| sink_version < at),
                _ => false,
            };
            if !behind {
                looked.drifts.push(Candidate { drift, ..c });
                continue;
            }
            if c.known_before.is_none_or(|v| sink_version >= v) {
                // The sink holds what the scan expected (for a point the state did not
                // know then: anything); what came since is in flight.
                continue;
            }
            let lost = passed;
            let due_at = c.known_at_ms.or_else(|| lookup.timestamp_ms());
            let old = due_at.is_some_and(|t| now_ms - t >= grace.as_millis() as i64);
            if lost || old {
                looked.drifts.push(Candidate { drift, ..c });
            } else {
                looked.pending += 1;
            }
        }
        Ok(looked)
    }
}
