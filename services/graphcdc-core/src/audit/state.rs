//! graph.state per entity, for the audit: for every key the highest version seen, the
//! content hash of that state ([`super::entity_hash`]; none for a tombstone) and the
//! audited targets it belongs to.
//!
//! The reconciler's [`crate::reconcile::expected`] keeps the same log per *point* of a
//! collection, as mapped (vector and payload fields); the audit compares *entities* with
//! Neo4j, including those that map to no point. The folding rules are the same: the
//! highest version wins whatever the order of the records, and a tombstone's version is
//! its [`STATE_VERSION_HEADER`] (without one, the version it removes).
//!
//! The entries are in memory, or with [`LogState::keep_on_disk`] in a file on local disk
//! ([`super::keyed`]): memory then stays flat whatever the number of keys.

use super::keyed::{Keyed, Value};
use super::targets::Targets;
use crate::codec::Codec;
use crate::error::Context;
use crate::kafka::KafkaConfig;
use crate::kafka::{self, Record};
use crate::reconcile::expected::{decode_state_record, tombstone_version};
use rdkafka::consumer::{BaseConsumer, Consumer};
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

/// Tag, version, hash, targets.
const ENTRY_BYTES: usize = 1 + 8 + 16 + 8;

impl Value for LogEntry {
    fn encode(&self, out: &mut Vec<u8>) {
        out.clear();
        out.push(u8::from(self.hash.is_some()));
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&self.hash.unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&self.targets.to_le_bytes());
    }

    fn decode(bytes: &[u8]) -> crate::error::Result<Self> {
        crate::error::ensure!(
            bytes.len() == ENTRY_BYTES,
            "graph.state entry of {} bytes",
            bytes.len()
        );
        let field = |at: usize, len: usize| &bytes[at..at + len];
        let hash = u128::from_le_bytes(field(9, 16).try_into()?);
        Ok(LogEntry {
            version: i64::from_le_bytes(field(1, 8).try_into()?),
            hash: (bytes[0] == 1).then_some(hash),
            targets: u64::from_le_bytes(field(25, 8).try_into()?),
        })
    }
}

/// Name of the entries' file in the state directory.
pub const FILE_NAME: &str = "audit-state.redb";

/// graph.state read to its end, per key; kept current by [`LogState::catch_up`].
pub struct LogState {
    consumer: BaseConsumer,
    topic: String,
    next_offsets: HashMap<i32, i64>,
    /// Every key read so far (flushed after each [`LogState::catch_up`]).
    pub entries: Keyed<LogEntry>,
    /// The highest version of any record read.
    pub max_version: i64,
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
    pub fn open(kafka_config: &KafkaConfig) -> crate::error::Result<Self> {
        let topic = kafka_config.state_topic.clone();
        let group = format!("{}-audit", kafka_config.group_id);
        let consumer = kafka::read_from_beginning(kafka_config, &topic, &group)?;
        Ok(LogState {
            consumer,
            topic,
            next_offsets: HashMap::new(),
            entries: Keyed::memory(),
            max_version: 0,
            undecodable: 0,
        })
    }

    /// Keep the entries in a file in `dir` instead of memory. Before the first read.
    ///
    /// # Errors
    /// When the file cannot be created.
    pub fn keep_on_disk(&mut self, dir: &std::path::Path) -> crate::error::Result<()> {
        crate::error::ensure!(self.next_offsets.is_empty(), "graph.state was read already");
        self.entries = Keyed::on_disk(dir, FILE_NAME)?;
        Ok(())
    }

    /// Partitions with records not read yet: partition → high watermark.
    fn unread(&self) -> crate::error::Result<HashMap<i32, i64>> {
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
    pub async fn catch_up(&mut self, codec: &Codec, targets: &Targets) -> crate::error::Result<()> {
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
        self.entries.flush()
    }

    async fn apply(
        &mut self,
        record: &Record,
        codec: &Codec,
        targets: &Targets,
    ) -> crate::error::Result<()> {
        let Some(key) = record.key.as_deref().map(String::from_utf8_lossy) else {
            self.undecodable += 1;
            return Ok(());
        };
        let Some(payload) = &record.payload else {
            let header = tombstone_version(record);
            return self.fold(&key, |held| {
                let version = header.or(held.map(|h| h.version))?;
                Some(LogEntry {
                    version,
                    hash: None,
                    targets: held.map_or(0, |h| h.targets),
                })
            });
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
        self.fold(&key, |_| Some(entry))
    }

    fn fold(
        &mut self,
        key: &str,
        make: impl FnOnce(Option<&LogEntry>) -> Option<LogEntry>,
    ) -> crate::error::Result<()> {
        if let Some(version) = fold(&mut self.entries, key, make)? {
            self.max_version = self.max_version.max(version);
        }
        Ok(())
    }
}

/// Fold a record into `entries`: `make` gets what is held and returns the new entry,
/// which wins when its version is higher, or equal unless it would bring a tombstone's
/// key back. Returns the version written, if any.
fn fold(
    entries: &mut Keyed<LogEntry>,
    key: &str,
    make: impl FnOnce(Option<&LogEntry>) -> Option<LogEntry>,
) -> crate::error::Result<Option<i64>> {
    let held = entries.get(key)?;
    let Some(new) = make(held.as_ref()) else {
        return Ok(None);
    };
    let wins = held.is_none_or(|h| {
        new.version > h.version
            || (new.version == h.version && (new.hash.is_none() || h.hash.is_some()))
    });
    if !wins {
        return Ok(None);
    }
    entries.insert(key, new)?;
    Ok(Some(new.version))
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

    /// The folding rules, on the entries in memory and in a file alike.
    #[test]
    fn the_highest_version_wins_and_a_tombstone_keeps_the_targets() {
        let dir = tempfile::tempdir().unwrap();
        for mut entries in [
            Keyed::memory(),
            Keyed::on_disk(dir.path(), FILE_NAME).unwrap(),
        ] {
            let mut fold = |key: &str, make: &dyn Fn(Option<&LogEntry>) -> Option<LogEntry>| {
                fold(&mut entries, key, make).unwrap();
                entries.flush().unwrap();
                entries.get(key).unwrap()
            };
            fold("k", &|_| Some(live(5)));
            let held = fold("k", &|_| Some(live(3)));
            assert_eq!(held.unwrap().version, 5, "an older upsert read later");
            // A tombstone without a header deletes the version it removes.
            let held = fold("k", &|held| {
                Some(LogEntry {
                    version: held?.version,
                    hash: None,
                    targets: held?.targets,
                })
            });
            assert_eq!(
                held,
                Some(LogEntry {
                    version: 5,
                    hash: None,
                    targets: 1
                })
            );
            fold("k", &|_| Some(live(4)));
            let held = fold("k", &|_| Some(live(5)));
            assert_eq!(
                held.unwrap().hash,
                None,
                "no resurrection by an older state"
            );
            assert_eq!(fold("k", &|_| Some(live(6))), Some(live(6)), "re-created");
            // A headerless tombstone of an unknown key is nothing to hold against.
            assert_eq!(fold("x", &|held| held.copied()), None);
        }
    }

    #[test]
    fn an_entry_reads_back_from_its_bytes() {
        let mut bytes = Vec::new();
        for entry in [
            live(7),
            LogEntry {
                version: i64::MIN,
                hash: None,
                targets: u64::MAX,
            },
            LogEntry {
                version: -1,
                hash: Some(u128::MAX),
                targets: 0,
            },
        ] {
            entry.encode(&mut bytes);
            assert_eq!(LogEntry::decode(&bytes).unwrap(), entry);
        }
        assert!(LogEntry::decode(&bytes[1..]).is_err());
    }
}
