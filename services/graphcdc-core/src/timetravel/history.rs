//! `graphcdc history <key>`: an entity's timeline on the change topic, with a property
//! diff between consecutive versions. Reads only the key's partition, found with the same
//! partitioner the producers use (the Java client's murmur2).

use crate::codec::Codec;
use crate::error::Context;
use crate::event::{CaptureMode, Op, PropertyValue};
use crate::kafka;
use crate::kafka::partitioner::partition_for;
use crate::kafka::KafkaConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// Where a history scan starts.
#[derive(Debug, Clone, Copy)]
pub enum Start {
    Beginning,
    Offset(i64),
    /// Unix time in ms.
    Time(i64),
}

/// One property change between two versions.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "change", rename_all = "lowercase")]
pub enum Diff {
    Added {
        name: String,
        value: PropertyValue,
    },
    Removed {
        name: String,
    },
    Changed {
        name: String,
        old: PropertyValue,
        new: PropertyValue,
    },
}

/// One event of the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryEntry {
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    pub version: i64,
    pub op: Op,
    pub mode: CaptureMode,
    pub diff: Vec<Diff>,
}

fn diff(old: &BTreeMap<String, PropertyValue>, new: &BTreeMap<String, PropertyValue>) -> Vec<Diff> {
    let mut out = Vec::new();
    for (name, value) in new {
        match old.get(name) {
            None => out.push(Diff::Added {
                name: name.clone(),
                value: value.clone(),
            }),
            Some(previous) if previous != value => out.push(Diff::Changed {
                name: name.clone(),
                old: previous.clone(),
                new: value.clone(),
            }),
            Some(_) => {}
        }
    }
    for name in old.keys().filter(|n| !new.contains_key(*n)) {
        out.push(Diff::Removed { name: name.clone() });
    }
    out
}

/// Every change of `key` on the change topic from `start`, in offset order.
///
/// # Errors
/// When the topic cannot be read.
pub async fn history(
    kafka_config: &KafkaConfig,
    codec: &Codec,
    key: &str,
    start: Start,
) -> crate::error::Result<Vec<HistoryEntry>> {
    let topic = &kafka_config.changes_topic;
    let mut client = kafka::client_config(kafka_config);
    client
        .set("group.id", format!("{}-history", kafka_config.group_id))
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = client.create().context("creating history reader")?;
    let partitions = kafka::partition_ids(&consumer, topic)?.len() as i32;
    let partition = partition_for(key.as_bytes(), partitions);
    let (_, high) = consumer.fetch_watermarks(topic, partition, kafka::ADMIN_TIMEOUT)?;
    let offset = match start {
        Start::Beginning => Offset::Beginning,
        Start::Offset(o) => Offset::Offset(o),
        Start::Time(ms) => {
            let mut times = TopicPartitionList::new();
            times.add_partition_offset(topic, partition, Offset::Offset(ms))?;
            let found = consumer.offsets_for_times(times, kafka::ADMIN_TIMEOUT)?;
            found
                .find_partition(topic, partition)
                .map_or(Offset::End, |e| e.offset())
        }
    };
    let mut out = Vec::new();
    let mut assignment = TopicPartitionList::new();
    assignment.add_partition_offset(topic, partition, offset)?;
    consumer.assign(&assignment)?;
    let mut previous: BTreeMap<String, PropertyValue> = BTreeMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let position = consumer
            .position()?
            .find_partition(topic, partition)
            .and_then(|e| e.offset().to_raw());
        if position.is_some_and(|p| p >= high) || high == 0 || matches!(offset, Offset::End) {
            break;
        }
        let task = "reading the key's partition to its end";
        let Some(record) = kafka::poll_record(&consumer, deadline, task)? else {
            continue;
        };
        let reached_end = record.offset + 1 >= high;
        if record.key.as_deref() == Some(key.as_bytes()) {
            if let Some(Ok(event)) = match &record.payload {
                Some(p) => Some(codec.decode_change(p).await),
                None => None,
            } {
                out.push(HistoryEntry {
                    partition,
                    offset: record.offset,
                    timestamp_ms: record.timestamp_ms,
                    version: event.version,
                    op: event.op,
                    mode: event.source.mode,
                    diff: diff(&previous, &event.properties),
                });
                previous = event.properties;
            }
        }
        if reached_end {
            break;
        }
    }
    Ok(out)
}

/// The timeline as a table.
pub fn table(entries: &[HistoryEntry]) -> String {
    let mut out = format!(
        "{:>8} {:>14} {:>8} {:<7} {:<8} diff\n",
        "offset", "time_ms", "version", "op", "mode"
    );
    for e in entries {
        let diff: Vec<String> = e
            .diff
            .iter()
            .map(|d| match d {
                Diff::Added { name, value } => format!("+{name}={}", short(value)),
                Diff::Removed { name } => format!("-{name}"),
                Diff::Changed { name, old, new } => {
                    format!("~{name}: {} → {}", short(old), short(new))
                }
            })
            .collect();
        out.push_str(&format!(
            "{:>8} {:>14} {:>8} {:<7} {:<8} {}\n",
            e.offset,
            e.timestamp_ms.unwrap_or(0),
            e.version,
            format!("{:?}", e.op).to_lowercase(),
            format!("{:?}", e.mode).to_lowercase(),
            diff.join("; ")
        ));
    }
    out
}

fn short(value: &PropertyValue) -> String {
    let text = serde_json::to_string(value).unwrap_or_default();
    if text.chars().count() > 40 {
        format!("{}…", text.chars().take(40).collect::<String>())
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_lists_added_changed_removed() {
        let old = BTreeMap::from([
            ("a".to_owned(), PropertyValue::Long(1)),
            ("b".to_owned(), PropertyValue::Null),
        ]);
        let new = BTreeMap::from([
            ("a".to_owned(), PropertyValue::Long(2)),
            ("c".to_owned(), PropertyValue::Bool(true)),
        ]);
        let d = diff(&old, &new);
        assert_eq!(d.len(), 3);
        assert!(d.contains(&Diff::Removed { name: "b".into() }));
    }
}
