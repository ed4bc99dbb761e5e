//! `graphcdc offsets`: a consumer group's committed offsets and lag per partition, and
//! resetting them (to the earliest, the latest, or a point in time) while the group is
//! stopped, like `kafka-consumer-groups --reset-offsets`.

use crate::config::KafkaConfig;
use crate::kafka;
use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

/// One partition of a group's position on a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionOffsets {
    pub partition: i32,
    /// Committed offset (next to read), if the group committed one.
    pub committed: Option<i64>,
    pub low: i64,
    pub high: i64,
    /// High watermark minus the committed offset (or the low watermark without commit).
    pub lag: i64,
}

/// Where a reset moves the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    Earliest,
    Latest,
    /// The first offset at or after this Unix time (ms).
    Time(i64),
}

fn client(kafka_config: &KafkaConfig, group: &str) -> anyhow::Result<BaseConsumer> {
    let mut config = kafka::client_config(kafka_config);
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false");
    config.create().context("creating offsets client")
}

/// Committed offsets and lag of `group` on `topic`, per partition.
///
/// # Errors
/// When metadata, watermarks or committed offsets cannot be fetched.
pub fn show(
    kafka_config: &KafkaConfig,
    group: &str,
    topic: &str,
) -> anyhow::Result<Vec<PartitionOffsets>> {
    let consumer = client(kafka_config, group)?;
    let partitions = kafka::partition_ids(&consumer, topic)?;
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition(topic, *p);
    }
    let committed = consumer
        .committed_offsets(tpl, kafka::ADMIN_TIMEOUT)
        .context("fetching committed offsets")?;
    partitions
        .into_iter()
        .map(|partition| {
            let (low, high) = consumer
                .fetch_watermarks(topic, partition, kafka::ADMIN_TIMEOUT)
                .context("fetching watermarks")?;
            let committed = match committed
                .find_partition(topic, partition)
                .map(|e| e.offset())
            {
                Some(Offset::Offset(o)) => Some(o),
                _ => None,
            };
            let lag = (high - committed.unwrap_or(low)).max(0);
            Ok(PartitionOffsets {
                partition,
                committed,
                low,
                high,
                lag,
            })
        })
        .collect()
}

/// Move `group` on `topic` to `to`; with `dry_run` only compute the new offsets.
/// Returns (partition, old committed, new committed).
///
/// # Errors
/// Refuses while the group has active members, and when the broker cannot say (no
/// DescribeGroups) unless `force`; broker errors otherwise.
pub fn reset(
    kafka_config: &KafkaConfig,
    group: &str,
    topic: &str,
    to: ResetTo,
    dry_run: bool,
    force: bool,
) -> anyhow::Result<Vec<(i32, Option<i64>, i64)>> {
    let consumer = client(kafka_config, group)?;
    match consumer.fetch_group_list(Some(group), kafka::ADMIN_TIMEOUT) {
        Ok(groups) => {
            if let Some(g) = groups.groups().iter().find(|g| g.name() == group) {
                anyhow::ensure!(
                    g.members().is_empty(),
                    "consumer group {group} has {} active member(s) (state {}): stop them before resetting offsets",
                    g.members().len(),
                    g.state()
                );
            }
        }
        Err(e) => anyhow::ensure!(
            force,
            "cannot tell whether consumer group {group} has active members (the broker did not answer DescribeGroups: {e}); stop them and pass --force"
        ),
    }
    let current = show(kafka_config, group, topic)?;
    let targets: Vec<(i32, Option<i64>, i64)> = match to {
        ResetTo::Earliest => current
            .iter()
            .map(|p| (p.partition, p.committed, p.low))
            .collect(),
        ResetTo::Latest => current
            .iter()
            .map(|p| (p.partition, p.committed, p.high))
            .collect(),
        ResetTo::Time(ms) => {
            let mut times = TopicPartitionList::new();
            for p in &current {
                times.add_partition_offset(topic, p.partition, Offset::Offset(ms))?;
            }
            let found = consumer.offsets_for_times(times, kafka::ADMIN_TIMEOUT)?;
            current
                .iter()
                .map(|p| {
                    let offset = match found.find_partition(topic, p.partition).map(|e| e.offset())
                    {
                        Some(Offset::Offset(o)) => o,
                        _ => p.high,
                    };
                    (p.partition, p.committed, offset)
                })
                .collect()
        }
    };
    if !dry_run {
        let mut tpl = TopicPartitionList::new();
        for (partition, _, offset) in &targets {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
        }
        consumer
            .commit(&tpl, CommitMode::Sync)
            .context("committing the reset offsets")?;
    }
    Ok(targets)
}
