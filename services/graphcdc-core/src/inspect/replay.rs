//! `graphcdc replay`: rebuild "the store as of time T" (or roll a fixed mapping forward)
//! into a shadow target, without touching the live one. Reads the change topic with its
//! own consumer (assigned partitions, no group commits) from a start bound to an end
//! bound, and applies the events through the processor's batch path (version fence,
//! tombstones), so a replay never resurrects a deleted entity.

use super::history::Start;
use crate::codec::{Codec, SchemaRegistry};
use crate::config::Config;
use crate::kafka::{self, Record};
use crate::mapping::Mapper;
use crate::processor::batch::BatchApplier;
use crate::sink::{CollectionSpec, VectorSink};
use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Records applied per batch.
const BATCH: usize = 500;

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    pub records: u64,
    pub applied: u64,
    pub skipped_stale: u64,
    /// Poison records (not sent to the DLQ by a replay).
    pub poison: u64,
}

/// Offsets of `topic` for `start` on every partition.
fn offsets_at(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
    ms: i64,
) -> anyhow::Result<HashMap<i32, Offset>> {
    let mut times = TopicPartitionList::new();
    for p in partitions {
        times.add_partition_offset(topic, *p, Offset::Offset(ms))?;
    }
    let found = consumer.offsets_for_times(times, kafka::ADMIN_TIMEOUT)?;
    Ok(partitions
        .iter()
        .map(|p| {
            (
                *p,
                found
                    .find_partition(topic, *p)
                    .map_or(Offset::End, |e| e.offset()),
            )
        })
        .collect())
}

/// Replay the change topic of `config` from `from` up to `to_ms` (record time, exclusive;
/// the current end when `None`) into `sink`.
///
/// # Errors
/// When the topic cannot be read or the sink keeps failing.
pub async fn replay(
    config: &Config,
    sink: Arc<dyn VectorSink>,
    from: Start,
    to_ms: Option<i64>,
) -> anyhow::Result<ReplayReport> {
    for m in &config.mappings {
        sink.ensure_collection(&CollectionSpec {
            name: m.collection.clone(),
            vector_name: m.vector_name.clone(),
            dimension: m.dimension,
            distance: m.distance,
        })
        .await?;
    }
    let codec = Arc::new(Codec::new(SchemaRegistry::from_config(&config.registry)?));
    let applier = BatchApplier::new(
        codec,
        Mapper::new(config.mappings.clone(), config.processor.max_payload_bytes),
        sink,
    );
    let topic = &config.kafka.changes_topic;
    let mut client = kafka::client_config(&config.kafka);
    client
        .set("group.id", format!("{}-replay", config.kafka.group_id))
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = client.create().context("creating replay reader")?;
    let partitions = kafka::partition_ids(&consumer, topic)?;

    // End bound per partition: the first offset at/after `to`, or today's end.
    let mut ends: HashMap<i32, i64> = HashMap::new();
    for p in &partitions {
        let (_, high) = consumer.fetch_watermarks(topic, *p, kafka::ADMIN_TIMEOUT)?;
        ends.insert(*p, high);
    }
    if let Some(to) = to_ms {
        for (p, offset) in offsets_at(&consumer, topic, &partitions, to)? {
            if let Offset::Offset(o) = offset {
                ends.insert(p, o);
            }
        }
    }
    let starts: HashMap<i32, Offset> = match from {
        Start::Beginning => partitions.iter().map(|p| (*p, Offset::Beginning)).collect(),
        Start::Offset(o) => partitions.iter().map(|p| (*p, Offset::Offset(o))).collect(),
        Start::Time(ms) => offsets_at(&consumer, topic, &partitions, ms)?,
    };
    let mut assignment = TopicPartitionList::new();
    let mut open: HashMap<i32, i64> = HashMap::new();
    for p in &partitions {
        let (low, _) = consumer.fetch_watermarks(topic, *p, kafka::ADMIN_TIMEOUT)?;
        let start = match starts[p] {
            Offset::Offset(o) => o.max(low),
            Offset::End => ends[p],
            _ => low,
        };
        if start < ends[p] {
            assignment.add_partition_offset(topic, *p, Offset::Offset(start))?;
            open.insert(*p, ends[p]);
        }
    }
    let total: i64 = open.keys().map(|p| ends[p]).sum::<i64>();
    tracing::info!(
        partitions = open.len(),
        end_offsets = total,
        "replay started"
    );
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} replay: {pos} records, {per_sec}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    let mut report = ReplayReport::default();
    if open.is_empty() {
        return Ok(report);
    }
    consumer.assign(&assignment)?;
    let mut batch: Vec<Record> = Vec::with_capacity(BATCH);
    let deadline = std::time::Instant::now() + Duration::from_secs(3_600);
    while !open.is_empty() {
        let task = "replaying (an hour at most)";
        if let Some(record) = kafka::poll_record(&consumer, deadline, task)? {
            let end = open.get(&record.partition).copied();
            if end.is_some_and(|end| record.offset + 1 >= end) {
                open.remove(&record.partition);
            }
            if end.is_some_and(|end| record.offset < end) {
                batch.push(record);
            }
        }
        if batch.len() >= BATCH {
            apply(&applier, &mut batch, &mut report).await?;
            bar.set_position(report.records);
        }
    }
    if !batch.is_empty() {
        apply(&applier, &mut batch, &mut report).await?;
    }
    bar.finish_and_clear();
    Ok(report)
}

async fn apply(
    applier: &BatchApplier,
    batch: &mut Vec<Record>,
    report: &mut ReplayReport,
) -> anyhow::Result<()> {
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
