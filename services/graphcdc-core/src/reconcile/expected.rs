//! The expected content of the sink, read from the compacted state topic.
//!
//! Kept compact: per point only the key, version, content hash and where the latest
//! state record sits (no payloads, no vectors). The reader does not rely on compaction
//! having happened, nor on the topic being in version order: the highest version of a
//! key wins whatever order its records are read in.
//!
//! - An upsert replaces the expected point only when its version is at least the one
//!   held, and above the version the key was last deleted at.
//! - A tombstone (null value) removes the key, and leaves a "deleted at vN" marker so an
//!   older upsert read later does not bring it back. N is the version in the tombstone's
//!   [`STATE_VERSION_HEADER`](crate::kafka::STATE_VERSION_HEADER) (graphcdc's
//!   publishers write it); a tombstone without it (another producer) is taken as
//!   deleting the version it removes. A tombstone older than the version held is
//!   ignored.
//! - A key whose labels no longer map to a collection leaves it only when that record is
//!   not older than the point held there; a record older than any version held for its
//!   key, in any collection, is ignored whole.
//!
//! How each record folds in is [`super::fold`]. The state is held by a [`StateStore`]:
//! in memory, or in a file on local disk ([`ExpectedState::keep_on_disk`]). Markers cost a slot per deleted key still on the
//! topic (compaction removes tombstones after `delete.retention.ms`; a marker stays while
//! the reader runs). What no
//! reader can undo: once compaction has removed a newer tombstone or upsert, the older
//! record left is all a fresh reader sees; keeping graph.state monotonic is the job of its
//! writers. The reader keeps following the topic between checks.

pub use super::fold::{fold_delete, fold_state, fold_upsert, repair_source, tombstone_version};
pub use super::store::{DeletedAt, ExpectedPoint};
use super::store::{Slot, StateStore};
use crate::codec::Codec;
use crate::error::Context;
use crate::event::EntityState;
use crate::kafka::{self, Record};
use crate::mapping::{bucket_of, point_id, Mapper, PointWrite};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use uuid::Uuid;

/// What the expected state says of one point id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lookup {
    /// The point the sink should hold.
    pub point: Option<ExpectedPoint>,
    /// Where its key was deleted, when it was.
    pub deleted: Option<DeletedAt>,
}

impl Lookup {
    /// The version the key was deleted at.
    pub fn deleted_version(&self) -> Option<i64> {
        self.deleted.map(|d| d.version)
    }

    /// Kafka timestamp of the record that made it what it is.
    pub fn timestamp_ms(&self) -> Option<i64> {
        self.point
            .as_ref()
            .map(|p| p.timestamp_ms)
            .or(self.deleted.map(|d| d.timestamp_ms))
    }
}

/// Expected points by point id, plus the reader that keeps them current.
pub struct ExpectedState {
    consumer: BaseConsumer,
    topic: String,
    collections: Vec<String>,
    /// Expected points, and the points deleted on the state topic, by id.
    store: StateStore,
    /// State records that map to no valid point (bad vector, …), counted once each.
    pub invalid_records: u64,
    /// Records read so far.
    pub records_read: u64,
    /// Next offset to read per partition.
    next_offsets: HashMap<i32, i64>,
    /// Buckets whose points changed since [`ExpectedState::take_touched`].
    touched: HashSet<(u16, u16)>,
    /// The reader could not seek back to a record it did not apply.
    reopen: bool,
}

/// Parse a 32-hex-digit content hash; 0 for anything else.
pub fn parse_hash(hex: &str) -> u128 {
    u128::from_str_radix(hex, 16).unwrap_or(0)
}

impl ExpectedState {
    /// A reader of `topic` from the beginning (no consumer group, no commits).
    ///
    /// # Errors
    /// When the consumer cannot be created or the topic has no partitions.
    pub fn open(kafka: &crate::kafka::KafkaConfig, mapper: &Mapper) -> crate::error::Result<Self> {
        let topic = kafka.state_topic.clone();
        let group = format!("{}-reconciler", kafka.group_id);
        let consumer = kafka::read_from_beginning(kafka, &topic, &group)?;
        let mut collections: Vec<String> = Vec::new();
        for m in mapper.mappings() {
            if !collections.contains(&m.collection) {
                collections.push(m.collection.clone());
            }
        }
        Ok(ExpectedState {
            consumer,
            topic,
            store: StateStore::memory(collections.len()),
            collections,
            invalid_records: 0,
            records_read: 0,
            next_offsets: HashMap::new(),
            touched: HashSet::new(),
            reopen: false,
        })
    }

    /// Keep the state in a file in `dir` instead of memory ([`StateStore::on_disk`]);
    /// before the first read.
    ///
    /// # Errors
    /// When the file cannot be created, or the state was read already.
    pub fn keep_on_disk(&mut self, dir: &std::path::Path) -> crate::error::Result<()> {
        crate::error::ensure!(
            self.records_read == 0,
            "the expected state moves to disk before it is read"
        );
        self.store = StateStore::on_disk(dir, self.collections.len())?;
        Ok(())
    }

    /// Where the expected state is held.
    pub fn store(&self) -> &StateStore {
        &self.store
    }

    /// Expected live points, in all collections.
    pub fn len(&self) -> u64 {
        self.store.len()
    }

    /// Whether no point is expected.
    pub fn is_empty(&self) -> bool {
        self.store.is_empty()
    }

    /// What the state says of `id`: the point expected, or the delete.
    ///
    /// # Errors
    /// When the state file cannot be read.
    pub fn lookup(&self, id: &Uuid) -> crate::error::Result<Lookup> {
        Ok(match self.store.get(id)? {
            Some(Slot::Live(p)) => Lookup {
                point: Some(p),
                deleted: None,
            },
            Some(Slot::Deleted(d)) => Lookup {
                point: None,
                deleted: Some(d),
            },
            None => Lookup::default(),
        })
    }

    /// Collections the mapping writes to, in config order.
    pub fn collections(&self) -> &[String] {
        &self.collections
    }

    fn collection_index(&self, name: &str) -> u16 {
        self.collections.iter().position(|c| c == name).unwrap_or(0) as u16
    }

    /// Partitions with records not read yet: partition → high watermark to reach.
    fn unread(&self) -> crate::error::Result<HashMap<i32, i64>> {
        let mut unread = HashMap::new();
        for (partition, (low, high)) in self.watermarks()? {
            let next = self
                .next_offsets
                .get(&partition)
                .copied()
                .unwrap_or(low)
                .max(low);
            if next < high {
                unread.insert(partition, high);
            }
        }
        Ok(unread)
    }

    /// Low and high watermarks of every assigned partition: two ListOffsets requests for
    /// all partitions (earliest, latest), or one request per partition when the broker
    /// does not answer those.
    fn watermarks(&self) -> crate::error::Result<HashMap<i32, (i64, i64)>> {
        let batched = (|| -> Option<HashMap<i32, (i64, i64)>> {
            // The "timestamps" Beginning (-2) and End (-1) ask for the earliest and
            // the latest offset (rdkafka refuses them as `Offset::Offset(-2)`).
            let ends = |at: Offset| -> Option<HashMap<i32, i64>> {
                let mut request = TopicPartitionList::new();
                for e in self.consumer.assignment().ok()?.elements() {
                    request
                        .add_partition_offset(&self.topic, e.partition(), at)
                        .ok()?;
                }
                let tpl = self
                    .consumer
                    .offsets_for_times(request, kafka::ADMIN_TIMEOUT)
                    .ok()?;
                tpl.elements()
                    .iter()
                    .map(|e| match e.offset() {
                        Offset::Offset(o) if o >= 0 => Some((e.partition(), o)),
                        _ => None,
                    })
                    .collect()
            };
            let (low, high) = (ends(Offset::Beginning)?, ends(Offset::End)?);
            low.into_iter()
                .map(|(p, low)| Some((p, (low, *high.get(&p)?))))
                .collect()
        })();
        if let Some(marks) = batched {
            return Ok(marks);
        }
        let mut marks = HashMap::new();
        for e in self.consumer.assignment()?.elements() {
            let pair = self
                .consumer
                .fetch_watermarks(&self.topic, e.partition(), kafka::ADMIN_TIMEOUT)
                .context("fetching state topic watermarks")?;
            marks.insert(e.partition(), pair);
        }
        Ok(marks)
    }

    /// Read everything up to the current end of the topic into the expected state,
    /// however long that takes: `stall` bounds the wait for the *next* record, not the
    /// whole read, so a topic of any size converges. On an error nothing is lost: what
    /// was applied stays, and a record consumed but not applied (registry unavailable) is
    /// read again by the next call (the reader seeks back to it).
    ///
    /// # Errors
    /// When no record arrives within `stall` while the topic has unread records, or a
    /// record cannot be applied.
    pub async fn catch_up(
        &mut self,
        codec: &Codec,
        mapper: &Mapper,
        stall: Duration,
    ) -> crate::error::Result<()> {
        let mut unread = self.unread()?;
        let mut deadline = std::time::Instant::now() + stall;
        while !unread.is_empty() {
            let task = "reading the state topic to its end (no record within the stall timeout)";
            let Some(record) = kafka::poll_record(&self.consumer, deadline, task)? else {
                continue;
            };
            deadline = std::time::Instant::now() + stall;
            if let Err(e) = self.apply(&record, codec, mapper).await {
                self.seek_back(record.partition, record.offset);
                self.store.flush()?;
                return Err(e);
            }
            self.next_offsets
                .insert(record.partition, record.offset + 1);
            if unread
                .get(&record.partition)
                .is_some_and(|high| record.offset + 1 >= *high)
            {
                unread.remove(&record.partition);
            }
        }
        self.store.flush()
    }

    /// Have the reader deliver `partition` from `offset` again (a record consumed but not
    /// applied); failing that, the next read starts over from the beginning.
    fn seek_back(&mut self, partition: i32, offset: i64) {
        let sought = self.consumer.seek(
            &self.topic,
            partition,
            Offset::Offset(offset),
            kafka::ADMIN_TIMEOUT,
        );
        if let Err(e) = sought {
            tracing::warn!(error = %e, partition, offset, "cannot seek the state reader back; it will be reopened");
            self.reopen = true;
        }
    }

    /// Whether the reader lost its place and must be reopened (the state read from the
    /// beginning again).
    pub fn needs_reopen(&self) -> bool {
        self.reopen
    }

    /// Buckets (collection index, [`bucket_of`]) whose expected points changed since the
    /// last call: the log side of the bucketed check ([`super::buckets`]).
    pub fn take_touched(&mut self) -> HashSet<(u16, u16)> {
        std::mem::take(&mut self.touched)
    }

    fn touch(&mut self, id: &Uuid, collection: u16) {
        self.touched.insert((collection, bucket_of(id)));
    }

    /// Fold one state record into the expected state.
    ///
    /// # Errors
    /// When the schema registry is unavailable: the reader must then be reopened, since
    /// the record was consumed but not applied.
    async fn apply(
        &mut self,
        record: &Record,
        codec: &Codec,
        mapper: &Mapper,
    ) -> crate::error::Result<()> {
        self.records_read += 1;
        let Some(key) = record.key.as_deref().map(String::from_utf8_lossy) else {
            self.invalid_records += 1;
            return Ok(());
        };
        let Some(payload) = &record.payload else {
            let version = tombstone_version(record);
            let at_ms = record.timestamp_ms.unwrap_or(0);
            for (c, collection) in self.collections.clone().iter().enumerate() {
                let id = point_id(collection, &key);
                fold_delete(&mut self.store, id, version, at_ms)?;
                self.touch(&id, c as u16);
            }
            return Ok(());
        };
        let Some(state) = decode_state_record(codec, &key, payload).await? else {
            self.invalid_records += 1;
            return Ok(());
        };
        let Ok(writes) = mapper.map(&state.to_event(String::new(), repair_source())) else {
            self.invalid_records += 1;
            return Ok(());
        };
        let ids: Vec<Uuid> = self
            .collections
            .iter()
            .map(|collection| point_id(collection, &key))
            .collect();
        let writes: Vec<(Uuid, ExpectedPoint)> = writes
            .iter()
            .map(|w| (w.id, self.expected_point(w, record)))
            .collect();
        let at_ms = record.timestamp_ms.unwrap_or(0);
        if fold_state(&mut self.store, &ids, writes, state.version, at_ms)? {
            for (c, id) in ids.iter().enumerate() {
                self.touch(id, c as u16);
            }
        }
        Ok(())
    }

    fn expected_point(&self, write: &PointWrite, record: &Record) -> ExpectedPoint {
        ExpectedPoint {
            collection: self.collection_index(&write.collection),
            key: write.key.as_str().into(),
            version: write.version,
            hash: parse_hash(&write.hash),
            partition: record.partition,
            offset: record.offset,
            timestamp_ms: record.timestamp_ms.unwrap_or(0),
        }
    }

    /// Read the full state records of `wanted` points again, each at its recorded
    /// position: the reader seeks to every wanted offset (reading on instead when the next
    /// one is near), so a repair reads its records, not the topic, and holds only them.
    /// A record no longer at its offset (compacted after a newer state was read) is left
    /// out: the next check judges the newer state.
    ///
    /// # Errors
    /// When the topic cannot be read (no record within a minute).
    pub async fn fetch_states(
        &self,
        kafka_config: &crate::kafka::KafkaConfig,
        codec: &Codec,
        mapper: &Mapper,
        wanted: &HashSet<Uuid>,
    ) -> crate::error::Result<HashMap<Uuid, EntityState>> {
        let mut by_location: std::collections::BTreeMap<(i32, i64), Vec<Uuid>> =
            std::collections::BTreeMap::new();
        for id in wanted {
            if let Some(Slot::Live(p)) = self.store.get(id)? {
                by_location
                    .entry((p.partition, p.offset))
                    .or_default()
                    .push(*id);
            }
        }
        let mut found = HashMap::new();
        if by_location.is_empty() {
            return Ok(found);
        }
        let reader = ExpectedState::open(kafka_config, mapper)?;
        // Read on rather than seek when the next wanted record is this close.
        const READ_ON: i64 = 500;
        let stall = Duration::from_secs(60);
        let task = "reading state records again for the repair";
        let mut at: Option<(i32, i64)> = None;
        for ((partition, offset), ids) in &by_location {
            let near = at.is_some_and(|(p, next)| {
                p == *partition && *offset >= next && *offset - next < READ_ON
            });
            if !near {
                let mut assignment = TopicPartitionList::new();
                assignment.add_partition_offset(
                    &reader.topic,
                    *partition,
                    Offset::Offset(*offset),
                )?;
                reader
                    .consumer
                    .assign(&assignment)
                    .context("assigning the state topic partition to read again")?;
            }
            let deadline = std::time::Instant::now() + stall;
            let record = loop {
                let Some(record) = kafka::poll_record(&reader.consumer, deadline, task)? else {
                    continue;
                };
                if record.partition == *partition && record.offset >= *offset {
                    break record;
                }
            };
            at = Some((*partition, record.offset + 1));
            if record.offset != *offset {
                continue;
            }
            let Some(payload) = &record.payload else {
                continue;
            };
            let Ok(state) = codec.decode_state(payload).await else {
                continue;
            };
            found.extend(ids.iter().map(|id| (*id, state.clone())));
        }
        Ok(found)
    }
}

/// Decode a state record's value: `None` for one that does not decode (logged at debug;
/// the caller counts it).
///
/// # Errors
/// When the schema registry is unavailable: the record must be read again later.
pub async fn decode_state_record(
    codec: &Codec,
    key: &str,
    payload: &[u8],
) -> crate::error::Result<Option<EntityState>> {
    match codec.decode_state(payload).await {
        Ok(state) => Ok(Some(state)),
        Err(crate::codec::DecodeError::RegistryUnavailable(e)) => {
            crate::error::bail!(
                External,
                "schema registry unavailable while reading the state topic: {e}"
            )
        }
        Err(e) => {
            tracing::debug!(%key, error = %e, "undecodable state record");
            Ok(None)
        }
    }
}
