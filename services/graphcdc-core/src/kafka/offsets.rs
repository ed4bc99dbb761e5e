//! A consumer group's committed offsets, the topic's watermarks and the lag between them,
//! per partition (`graphcdc offsets`, the processor's catch-up checks).

use super::client::{client_config, ADMIN_TIMEOUT};
use super::config::KafkaConfig;
use super::topics::partition_ids;
use crate::error::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
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

/// A client of `group` that commits only when told (reads and resets offsets).
///
/// # Errors
/// When librdkafka rejects a configuration property.
pub fn group_client(kafka_config: &KafkaConfig, group: &str) -> crate::error::Result<BaseConsumer> {
    let mut config = client_config(kafka_config);
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false");
    config.create().context("creating offsets client")
}

/// Committed offsets and lag of `group` on `topic`, per partition.
///
/// # Errors
/// When metadata, watermarks or committed offsets cannot be fetched.
pub fn group_offsets(
    kafka_config: &KafkaConfig,
    group: &str,
    topic: &str,
) -> crate::error::Result<Vec<PartitionOffsets>> {
    let consumer = group_client(kafka_config, group)?;
    let partitions = partition_ids(&consumer, topic)?;
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition(topic, *p);
    }
    let committed = consumer
        .committed_offsets(tpl, ADMIN_TIMEOUT)
        .context("fetching committed offsets")?;
    partitions
        .into_iter()
        .map(|partition| {
            let (low, high) = consumer
                .fetch_watermarks(topic, partition, ADMIN_TIMEOUT)
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

/// Total lag of consumer group `group` on `topic` (see [`group_offsets`]).
///
/// # Errors
/// When metadata, watermarks or committed offsets cannot be fetched.
pub fn group_lag(kafka: &KafkaConfig, group: &str, topic: &str) -> crate::error::Result<i64> {
    Ok(group_offsets(kafka, group, topic)?
        .iter()
        .map(|p| p.lag)
        .sum())
}
