//! `graphcdc replay`: rebuild "the store as of time T" (or roll a fixed mapping forward)
//! into a shadow target, without touching the live one. Reads the change topic with its
//! own consumer (assigned partitions, no group commits) from a start bound to an end
//! bound, and applies the events through the processor's batch path (version fence,
//! tombstones), so a replay never resurrects a deleted entity.
//!
//! After a successful replay, [`swap_alias`] points an alias at the shadow target in one
//! atomic step: a Qdrant collection alias (server), or a symlink renamed over the alias
//! path (embedded).

use crate::codec::{Codec, SchemaRegistry};
use crate::config::Config;
use crate::error::Context;
use crate::kafka::{self, Record};
use crate::mapping::Mapper;
use crate::processor::batch::BatchApplier;
use crate::sink::VectorSink;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Records applied per batch.
const BATCH: usize = 500;

/// A replay fails when no record arrives for this long while partitions are unfinished.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    pub records: u64,
    pub applied: u64,
    pub skipped_stale: u64,
    /// Poison records (not sent to the DLQ by a replay).
    pub poison: u64,
}

/// Where a replay starts on each partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayStart {
    /// The earliest offset still on the topic.
    Beginning,
    /// The first record at or after this time (Unix ms); partitions with nothing after it
    /// are skipped.
    Time(i64),
    /// These offsets (raised to the earliest one still on the topic); partitions a list
    /// leaves out start at the earliest offset.
    Offsets(OffsetSpec),
}

/// Where a replay stops on each partition; the bound itself is not read (exclusive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplayEnd {
    /// The end of each partition when the replay starts (its high watermark).
    Now,
    /// Before the first record at or after this time (Unix ms).
    Time(i64),
    /// Before these offsets (capped at the high watermark); partitions a list leaves out
    /// run to [`ReplayEnd::Now`].
    Offsets(OffsetSpec),
}

/// Offsets of the first records at or after `ms` on `partitions`; `None` where there is
/// none.
fn offsets_at(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
    ms: i64,
) -> crate::error::Result<HashMap<i32, Option<i64>>> {
    let mut times = TopicPartitionList::new();
    for p in partitions {
        times.add_partition_offset(topic, *p, Offset::Offset(ms))?;
    }
    let found = consumer.offsets_for_times(times, kafka::ADMIN_TIMEOUT)?;
    Ok(partitions
        .iter()
        .map(|p| {
            let offset = found
                .find_partition(topic, *p)
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
            (*p, offset)
        })
        .collect())
}

/// Replay the change topic of `config` from `from` to `to` into `sink` (see
/// [`ShadowTarget::open`] for the config and sink of a shadow target).
///
/// # Errors
/// When the topic cannot be read, an offset list names a partition the topic does not
/// have, no record arrives for two minutes while partitions are unfinished, or the sink
/// fails.
pub async fn replay(
    config: &Config,
    sink: Arc<dyn VectorSink>,
    from: ReplayStart,
    to: ReplayEnd,
) -> crate::error::Result<ReplayReport> {
    crate::sink::ensure_collections(sink.as_ref(), &config.mappings).await?;
    let codec = Arc::new(Codec::new(SchemaRegistry::from_config(&config.registry)?));
    let applier = BatchApplier::new(
        codec,
        Mapper::new(config.mappings.clone(), config.processor.max_payload_bytes),
        Arc::new(crate::embed::Embeddings::from_mappings(&config.mappings).await?),
        sink,
    );
    let topic = &config.kafka.changes_topic;
    let mut client = kafka::client_config(&config.kafka);
    client
        .set("group.id", format!("{}-replay", config.kafka.group_id))
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = client.create().context("creating replay reader")?;
    let partitions = kafka::partition_ids(&consumer, topic)?;
    if let ReplayStart::Offsets(spec) = &from {
        spec.check("--from-offset", topic, &partitions)?;
    }
    if let ReplayEnd::Offsets(spec) = &to {
        spec.check("--to-offset", topic, &partitions)?;
    }

    let mut watermarks: HashMap<i32, (i64, i64)> = HashMap::new();
    for p in &partitions {
        watermarks.insert(
            *p,
            consumer.fetch_watermarks(topic, *p, kafka::ADMIN_TIMEOUT)?,
        );
    }
    // First offset to read (before raising it to the low watermark); `None`: nothing.
    let starts: HashMap<i32, Option<i64>> = match &from {
        ReplayStart::Beginning => partitions.iter().map(|p| (*p, Some(0))).collect(),
        ReplayStart::Offsets(spec) => partitions
            .iter()
            .map(|p| (*p, Some(spec.get(*p).unwrap_or(0))))
            .collect(),
        ReplayStart::Time(ms) => offsets_at(&consumer, topic, &partitions, *ms)?,
    };
    // First offset not to read (before capping it at the high watermark).
    let ends: HashMap<i32, Option<i64>> = match &to {
        ReplayEnd::Now => partitions.iter().map(|p| (*p, None)).collect(),
        ReplayEnd::Offsets(spec) => partitions.iter().map(|p| (*p, spec.get(*p))).collect(),
        ReplayEnd::Time(ms) => offsets_at(&consumer, topic, &partitions, *ms)?,
    };

    let mut assignment = TopicPartitionList::new();
    // Per open partition: its end bound and the next offset expected.
    let mut open: HashMap<i32, (i64, i64)> = HashMap::new();
    let mut total: u64 = 0;
    for p in &partitions {
        let (low, high) = watermarks[p];
        let start = starts[p].map_or(high, |s| s.max(low));
        let end = ends[p].map_or(high, |e| e.min(high));
        if start < end {
            assignment.add_partition_offset(topic, *p, Offset::Offset(start))?;
            open.insert(*p, (end, start));
            total += (end - start) as u64;
        }
    }
    tracing::info!(partitions = open.len(), events = total, "replay started");
    let mut report = ReplayReport::default();
    if open.is_empty() {
        return Ok(report);
    }
    consumer.assign(&assignment)?;
    let mut progress = Progress::new(total);
    let mut done: u64 = 0;
    let mut batch: Vec<Record> = Vec::with_capacity(BATCH);
    let mut deadline = Instant::now() + IDLE_TIMEOUT;
    while !open.is_empty() {
        let task = "replaying: no record for two minutes while partitions are unfinished";
        if let Some(record) = kafka::poll_record(&consumer, deadline, task)? {
            deadline = Instant::now() + IDLE_TIMEOUT;
            let (partition, offset) = (record.partition, record.offset);
            if let Some((end, next)) = open.get_mut(&partition) {
                let end = *end;
                if offset < end {
                    done += (offset + 1 - *next).max(0) as u64;
                    *next = offset + 1;
                    batch.push(record);
                }
                if offset + 1 >= end {
                    open.remove(&partition);
                }
            }
        }
        if batch.len() >= BATCH {
            apply(&applier, &mut batch, &mut report).await?;
            progress.update(done);
            deadline = Instant::now() + IDLE_TIMEOUT;
        }
    }
    if !batch.is_empty() {
        apply(&applier, &mut batch, &mut report).await?;
    }
    progress.finish(done);
    Ok(report)
}

async fn apply(
    applier: &BatchApplier,
    batch: &mut Vec<Record>,
    report: &mut ReplayReport,
) -> crate::error::Result<()> {
    let outcome = applier.apply(batch).await?;
    report.records += batch.len() as u64;
    report.applied += outcome.applied;
    report.skipped_stale += outcome.skipped_stale;
    report.poison += outcome.poisoned.len() as u64;
    for (index, error) in &outcome.poisoned {
        let r = &batch[*index];
        tracing::warn!(partition = r.partition, offset = r.offset, %error, "poison record skipped by the replay");
    }
    batch.clear();
    Ok(())
}

mod alias;
mod bounds;
mod progress;
mod shadow;
#[cfg(test)]
mod tests;

pub use alias::{check_alias, swap_alias, AliasSwap};
pub use bounds::OffsetSpec;
use progress::Progress;
pub use shadow::{shadow_collection, ShadowTarget};
