//! graph.state per entity, for the audit: for every key the highest version seen, the
//! content hash of that state ([`super::entity_hash`]; none for a tombstone) and the
//! audited targets it belongs to.
//!
//! The reconciler's [`crate::reconcile::expected`] keeps the same log per *point* of a
//! collection, as mapped (vector and payload fields); the audit compares *entities* with
//! Neo4j, including those that map to no point. The folding rules are the same: the
//! highest version wins whatever the order of the records, and a tombstone's version is
//! its [`STATE_VERSION_HEADER`] (without one, the version it removes).

use super::targets::Targets;
use crate::codec::Codec;
use crate::config::KafkaConfig;
use crate::kafka::{self, Record};
use crate::reconcile::expected::{decode_state_record, tombstone_version};
use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// What graph.state holds for one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogEntry {
    /// The highest version of the key (of its state or of its delete).
    pub version: i64,
    /// Content hash of that state; `None` when the key's latest record is a tombstone.
    pub hash: Option<u128>,
    /// The audited targets (bits of [`Targets`]) the state belongs to; 0 when unmapped.
    pub targets: u64,
}

/// graph.state read to its end, per key; kept current by [`LogState::catch_up`].
pub struct LogState {
    consumer: BaseConsumer,
    topic: String,
    next_offsets: HashMap<i32, i64>,
    /// Every key read so far.
    pub entries: HashMap<String, LogEntry>,
    /// Records that could not be decoded (counted, not audited).
    pub undecodable: u64,
}

/// How long reading graph.state may go without a record before the read fails (a long
/// topic is read to its end however long it takes).
const IDLE: Duration = Duration::from_secs(60);

impl LogState {
    /// A reader of the state topic from its beginning (no group commits).
    ///
    /// # Errors
    /// When the consumer cannot be created or the topic has no partitions.
    pub fn open(kafka_config: &KafkaConfig) -> anyhow::Result<Self> {
        let mut config = kafka::client_config(kafka_config);
        config
            .set("group.id", format!("{}-audit", kafka_config.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false");
        kafka::set_defaults(&mut config, kafka_config, &[("fetch.wait.max.ms", "10")]);
        let consumer: BaseConsumer = config.create().context("creating state topic reader")?;
        let topic = kafka_config.state_topic.clone();
        let mut assignment = TopicPartitionList::new();
        for p in kafka::partition_ids(&consumer, &topic)? {
            assignment.add_partition_offset(&topic, p, Offset::Beginning)?;
        }
        consumer
            .assign(&assignment)
            .context("assigning state topic partitions")?;
        Ok(LogState {
            consumer,
            topic,
            next_offsets: HashMap::new(),
            entries: HashMap::new(),
            undecodable: 0,
        })
    }

    /// Partitions with records not read yet: partition → high watermark.
    fn unread(&self) -> anyhow::Result<HashMap<i32, i64>> {
        let mut unread = HashMap::new();
        for e in self.consumer.assignment()?.elements() {
            let (low, high) = self
                .consumer
                .fetch_watermarks(&self.topic, e.partition(), kafka::ADMIN_TIMEOUT)
                .context("fetching state topic watermarks")?;
            let next = self
                .next_offsets
                .get(&e.partition())
                .copied()
                .unwrap_or(low)
                .max(low);
            if next < high {
                unread.insert(e.partition(), high);
            }
        }
        Ok(unread)
    }

    /// Read every record up to the topic's current end.
    ///
    /// # Errors
    /// When no record arrives for a minute, or the schema registry is unavailable.
    pub async fn catch_up(&mut self, codec: &Codec, targets: &Targets) -> anyhow::Result<()> {
        let mut unread = tokio::task::block_in_place(|| self.unread())?;
        let mut deadline = Instant::now() + IDLE;
        while !unread.is_empty() {
            let task = "reading the state topic to its end (no record for 60 s)";
            let Some(record) = kafka::poll_record(&self.consumer, deadline, task)? else {
                continue;
            };
            deadline = Instant::now() + IDLE;
            self.next_offsets
                .insert(record.partition, record.offset + 1);
            if unread
                .get(&record.partition)
                .is_some_and(|high| record.offset + 1 >= *high)
            {
                unread.remove(&record.partition);
            }
            self.apply(&record, codec, targets).await?;
        }
        Ok(())
    }

    async fn apply(
        &mut self,
        record: &Record,
        codec: &Codec,
        targets: &Targets,
    ) -> anyhow::Result<()> {
        let Some(key) = record.key.as_deref().map(String::from_utf8_lossy) else {
            self.undecodable += 1;
            return Ok(());
        };
        let Some(payload) = &record.payload else {
            let header = tombstone_version(record);
            fold(&mut self.entries, &key, |held| {
                let version = header.or(held.map(|h| h.version))?;
                Some(LogEntry {
                    version,
                    hash: None,
                    targets: held.map_or(0, |h| h.targets),
                })
            });
            return Ok(());
        };
        let Some(state) = decode_state_record(codec, &key, payload).await? else {
            self.undecodable += 1;
            return Ok(());
        };
        let entry = LogEntry {
            version: state.version,
            hash: Some(super::entity_hash(
                state.kind,
                &state.labels,
                state.relationship.as_ref(),
                &state.properties,
            )),
            targets: targets.of_state(&state),
        };
        fold(&mut self.entries, &key, |_| Some(entry));
        Ok(())
    }
}

/// Fold a record into `entries`: `make` gets what is held and returns the new entry,
/// which wins when its version is higher, or equal unless it would bring a tombstone's
/// key back.
fn fold(
    entries: &mut HashMap<String, LogEntry>,
    key: &str,
    make: impl FnOnce(Option<&LogEntry>) -> Option<LogEntry>,
) {
    let held = entries.get(key);
    let Some(new) = make(held) else {
        return;
    };
    let wins = held.is_none_or(|h| {
        new.version > h.version
            || (new.version == h.version && (new.hash.is_none() || h.hash.is_some()))
    });
    if wins {
        entries.insert(key.to_owned(), new);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(version: i64) -> LogEntry {
        LogEntry {
            version,
            hash: Some(version as u128),
            targets: 1,
        }
    }

    #[test]
    fn the_highest_version_wins_and_a_tombstone_keeps_the_targets() {
        let mut entries = HashMap::new();
        fold(&mut entries, "k", |_| Some(live(5)));
        fold(&mut entries, "k", |_| Some(live(3)));
        assert_eq!(entries["k"].version, 5, "an older upsert read later");
        // A tombstone without a header deletes the version it removes.
        fold(&mut entries, "k", |held| {
            Some(LogEntry {
                version: held?.version,
                hash: None,
                targets: held?.targets,
            })
        });
        assert_eq!(
            entries["k"],
            LogEntry {
                version: 5,
                hash: None,
                targets: 1
            }
        );
        fold(&mut entries, "k", |_| Some(live(4)));
        fold(&mut entries, "k", |_| Some(live(5)));
        assert_eq!(entries["k"].hash, None, "no resurrection by an older state");
        fold(&mut entries, "k", |_| Some(live(6)));
        assert_eq!(entries["k"], live(6), "re-created");
        // A headerless tombstone of an unknown key is nothing to hold against.
        fold(&mut entries, "x", |held| held.copied());
        assert!(!entries.contains_key("x"));
    }
}
