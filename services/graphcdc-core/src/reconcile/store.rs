//! Where the reconciler keeps the expected state: in memory (the default), or in a file
//! on local disk for states larger than its memory allows.
//!
//! One slot per point id: the point the sink should hold ([`ExpectedPoint`]), or the
//! version its key was deleted at ([`DeletedAt`]). Slots are ordered by id, as Qdrant
//! scrolls, so the points of a run of buckets are one range read. Beside the slots the
//! store keeps, in memory, the number of live points per collection and bucket (256 KiB
//! per collection): what the bucketed check compares with the sink's counts.
//!
//! **On disk** ([`StateStore::on_disk`]) the slots live in a redb B-tree file. Writes
//! gather in memory and reach the file in one sorted transaction per
//! [`StateStore::flush`] (the reader flushes after each read of the topic, and every
//! [`FLUSH_EVERY`] slots); memory then holds redb's page cache ([`CACHE_BYTES`]), the
//! counts and the pending writes, whatever the number of points. The file is created
//! empty when the reconciler starts: after a restart the state is read from the topic
//! again. What it costs is in `docs/benchmarks.md` ("Expected state on disk").

use crate::error::Context;
use crate::mapping::{bucket_of, BUCKETS};
use redb::{ReadableDatabase, TableDefinition};
use std::collections::{BTreeMap, HashMap};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// What one point should look like, and where its state record is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedPoint {
    pub collection: u16,
    pub key: Box<str>,
    pub version: i64,
    pub hash: u128,
    pub partition: i32,
    pub offset: i64,
    /// Kafka timestamp of the state record (ms), for the grace period.
    pub timestamp_ms: i64,
}

/// Where a key was deleted on the state topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeletedAt {
    pub version: i64,
    /// Kafka timestamp of the tombstone (ms), for the grace period.
    pub timestamp_ms: i64,
}

/// Pending writes that make the disk store write them out.
pub const FLUSH_EVERY: usize = 200_000;

/// redb's page cache for the disk store.
pub const CACHE_BYTES: usize = 256 << 20;

/// Name of the store's file in its directory.
pub const FILE_NAME: &str = "expected-state.redb";

const SLOTS: TableDefinition<u128, &[u8]> = TableDefinition::new("slots");

/// What the state topic says of one point id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    /// The point the sink should hold.
    Live(ExpectedPoint),
    /// Its key was deleted at this version.
    Deleted(DeletedAt),
}

/// The version a slot holds, without its key: what a fold compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    Live { collection: u16, version: i64 },
    Deleted { version: i64 },
}

impl Held {
    pub fn version(self) -> i64 {
        match self {
            Held::Live { version, .. } | Held::Deleted { version } => version,
        }
    }
}

/// The expected state's slots and per-bucket live counts.
pub struct StateStore {
    slots: Slots,
    /// Live points per collection index and bucket.
    live: Vec<Vec<u32>>,
    live_total: u64,
}

enum Slots {
    Memory(BTreeMap<u128, Slot>),
    Disk(Box<DiskSlots>),
}

struct DiskSlots {
    db: redb::Database,
    path: PathBuf,
    /// A snapshot of the file as of the last flush.
    reader: redb::ReadOnlyTable<u128, &'static [u8]>,
    /// Writes not in the file yet.
    pending: HashMap<u128, Slot>,
}

impl StateStore {
    /// An empty store in memory (~130 B per point).
    pub fn memory(collections: usize) -> Self {
        Self::with(Slots::Memory(BTreeMap::new()), collections)
    }

    /// An empty store in a file in `dir` (created; a file left by an earlier run is
    /// replaced).
    ///
    /// # Errors
    /// When the directory or the file cannot be created.
    pub fn on_disk(dir: &Path, collections: usize) -> crate::error::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the state directory {}", dir.display()))?;
        let path = dir.join(FILE_NAME);
        if path.exists() {
            std::fs::remove_file(&path)
                .with_context(|| format!("removing the old state file {}", path.display()))?;
        }
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .with_context(|| format!("creating the state file {}", path.display()))?;
        let txn = db.begin_write()?;
        txn.open_table(SLOTS)?;
        txn.commit()?;
        let reader = db.begin_read()?.open_table(SLOTS)?;
        let disk = DiskSlots {
            db,
            path,
            reader,
            pending: HashMap::new(),
        };
        Ok(Self::with(Slots::Disk(Box::new(disk)), collections))
    }

    fn with(slots: Slots, collections: usize) -> Self {
        StateStore {
            slots,
            live: vec![vec![0; BUCKETS]; collections],
            live_total: 0,
        }
    }

    /// The file of a disk store.
    pub fn path(&self) -> Option<&Path> {
        match &self.slots {
            Slots::Memory(_) => None,
            Slots::Disk(d) => Some(&d.path),
        }
    }

    /// Live points in all collections.
    pub fn len(&self) -> u64 {
        self.live_total
    }

    /// Whether no point is live.
    pub fn is_empty(&self) -> bool {
        self.live_total == 0
    }

    /// Live points of collection `c` per bucket.
    pub fn live_per_bucket(&self, c: u16) -> &[u32] {
        self.live.get(c as usize).map_or(&[], Vec::as_slice)
    }

    /// The slot of `id`.
    ///
    /// # Errors
    /// When the state file cannot be read.
    pub fn get(&self, id: &Uuid) -> crate::error::Result<Option<Slot>> {
        let key = id.as_u128();
        match &self.slots {
            Slots::Memory(m) => Ok(m.get(&key).cloned()),
            Slots::Disk(d) => match d.pending.get(&key) {
                Some(slot) => Ok(Some(slot.clone())),
                None => d.read(key, decode),
            },
        }
    }

    /// The version `id`'s slot holds, without decoding its key.
    ///
    /// # Errors
    /// When the state file cannot be read.
    pub fn held(&self, id: &Uuid) -> crate::error::Result<Option<Held>> {
        let key = id.as_u128();
        match &self.slots {
            Slots::Memory(m) => Ok(m.get(&key).map(held_of)),
            Slots::Disk(d) => match d.pending.get(&key) {
                Some(slot) => Ok(Some(held_of(slot))),
                None => d.read(key, decode_held),
            },
        }
    }

    /// Set the slot of `id`.
    ///
    /// # Errors
    /// When the state file cannot be read or written.
    pub fn set(&mut self, id: Uuid, slot: Slot) -> crate::error::Result<()> {
        let old = self.held(&id)?;
        let bucket = bucket_of(&id) as usize;
        if let Some(Held::Live { collection, .. }) = old {
            self.live[collection as usize][bucket] -= 1;
            self.live_total -= 1;
        }
        if let Slot::Live(p) = &slot {
            self.live[p.collection as usize][bucket] += 1;
            self.live_total += 1;
        }
        match &mut self.slots {
            Slots::Memory(m) => {
                m.insert(id.as_u128(), slot);
            }
            Slots::Disk(d) => {
                d.pending.insert(id.as_u128(), slot);
                if d.pending.len() >= FLUSH_EVERY {
                    d.flush()?;
                }
            }
        }
        Ok(())
    }

    /// Write pending slots to the file (a disk store; nothing in memory).
    ///
    /// # Errors
    /// When the state file cannot be written.
    pub fn flush(&mut self) -> crate::error::Result<()> {
        match &mut self.slots {
            Slots::Memory(_) => Ok(()),
            Slots::Disk(d) => d.flush(),
        }
    }

    /// Call `f` with each live point of collection `c` in buckets `buckets`, in id order.
    /// A disk store reads what was flushed ([`StateStore::flush`]; the reader flushes
    /// after every read of the topic).
    ///
    /// # Errors
    /// When the state file cannot be read.
    pub fn each_live(
        &self,
        c: u16,
        buckets: RangeInclusive<u16>,
        mut f: impl FnMut(Uuid, &ExpectedPoint),
    ) -> crate::error::Result<()> {
        let ids = bucket_ids(&buckets);
        match &self.slots {
            Slots::Memory(m) => {
                for (key, slot) in m.range(ids) {
                    match slot {
                        Slot::Live(p) if p.collection == c => f(Uuid::from_u128(*key), p),
                        _ => {}
                    }
                }
            }
            Slots::Disk(d) => {
                debug_assert!(d.pending.is_empty(), "ranges read flushed slots");
                for entry in d.reader.range(ids)? {
                    let (key, value) = entry?;
                    match decode(value.value())? {
                        Slot::Live(p) if p.collection == c => f(Uuid::from_u128(key.value()), &p),
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }

    /// The live points of collection `c` in buckets `buckets`, in id order
    /// ([`StateStore::each_live`]).
    ///
    /// # Errors
    /// When the state file cannot be read.
    pub fn live_in(
        &self,
        c: u16,
        buckets: RangeInclusive<u16>,
    ) -> crate::error::Result<Vec<(Uuid, ExpectedPoint)>> {
        let mut live = Vec::new();
        self.each_live(c, buckets, |id, p| live.push((id, p.clone())))?;
        Ok(live)
    }
}

/// The ids of a run of buckets.
fn bucket_ids(buckets: &RangeInclusive<u16>) -> RangeInclusive<u128> {
    let first = (*buckets.start() as u128) << 112;
    let last = ((*buckets.end() as u128) << 112) | ((1u128 << 112) - 1);
    first..=last
}

impl DiskSlots {
    fn read<T>(
        &self,
        key: u128,
        f: fn(&[u8]) -> crate::error::Result<T>,
    ) -> crate::error::Result<Option<T>> {
        let value = self
            .reader
            .get(key)
            .with_context(|| format!("reading the state file {}", self.path.display()))?;
        value.map(|v| f(v.value())).transpose()
    }

    fn flush(&mut self) -> crate::error::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut pending: Vec<(u128, Slot)> = self.pending.drain().collect();
        pending.sort_unstable_by_key(|(key, _)| *key);
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(SLOTS)?;
            let mut bytes = Vec::new();
            for (key, slot) in &pending {
                encode(slot, &mut bytes);
                table.insert(key, bytes.as_slice())?;
            }
        }
        txn.commit()
            .with_context(|| format!("writing the state file {}", self.path.display()))?;
        self.reader = self.db.begin_read()?.open_table(SLOTS)?;
        Ok(())
    }
}

fn held_of(slot: &Slot) -> Held {
    match slot {
        Slot::Live(p) => Held::Live {
            collection: p.collection,
            version: p.version,
        },
        Slot::Deleted(d) => Held::Deleted { version: d.version },
    }
}

const LIVE: u8 = 1;
const DELETED: u8 = 2;
/// Tag, collection, version, hash, partition, offset, timestamp; then the key.
const LIVE_HEADER: usize = 1 + 2 + 8 + 16 + 4 + 8 + 8;

fn encode(slot: &Slot, out: &mut Vec<u8>) {
    out.clear();
    match slot {
        Slot::Live(p) => {
            out.push(LIVE);
            out.extend_from_slice(&p.collection.to_le_bytes());
            out.extend_from_slice(&p.version.to_le_bytes());
            out.extend_from_slice(&p.hash.to_le_bytes());
            out.extend_from_slice(&p.partition.to_le_bytes());
            out.extend_from_slice(&p.offset.to_le_bytes());
            out.extend_from_slice(&p.timestamp_ms.to_le_bytes());
            out.extend_from_slice(p.key.as_bytes());
        }
        Slot::Deleted(d) => {
            out.push(DELETED);
            out.extend_from_slice(&d.version.to_le_bytes());
            out.extend_from_slice(&d.timestamp_ms.to_le_bytes());
        }
    }
}

/// Little-endian fields of a slot's bytes, in order.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> crate::error::Result<[u8; N]> {
        crate::error::ensure!(self.0.len() >= N, "state file slot too short");
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        Ok(head.try_into().expect("split at N"))
    }
}

fn decode(bytes: &[u8]) -> crate::error::Result<Slot> {
    let mut f = Fields(bytes);
    match f.take::<1>()?[0] {
        LIVE => {
            let collection = u16::from_le_bytes(f.take()?);
            let version = i64::from_le_bytes(f.take()?);
            let hash = u128::from_le_bytes(f.take()?);
            let partition = i32::from_le_bytes(f.take()?);
            let offset = i64::from_le_bytes(f.take()?);
            let timestamp_ms = i64::from_le_bytes(f.take()?);
            let key = std::str::from_utf8(f.0).context("state file slot key")?;
            Ok(Slot::Live(ExpectedPoint {
                collection,
                key: key.into(),
                version,
                hash,
                partition,
                offset,
                timestamp_ms,
            }))
        }
        DELETED => Ok(Slot::Deleted(DeletedAt {
            version: i64::from_le_bytes(f.take()?),
            timestamp_ms: i64::from_le_bytes(f.take()?),
        })),
        tag => crate::error::bail!("state file slot with unknown tag {tag}"),
    }
}

fn decode_held(bytes: &[u8]) -> crate::error::Result<Held> {
    match bytes.first() {
        Some(&LIVE) if bytes.len() >= LIVE_HEADER => {
            let mut f = Fields(&bytes[1..]);
            let collection = u16::from_le_bytes(f.take()?);
            let version = i64::from_le_bytes(f.take()?);
            Ok(Held::Live {
                collection,
                version,
            })
        }
        _ => match decode(bytes)? {
            Slot::Deleted(d) => Ok(Held::Deleted { version: d.version }),
            Slot::Live(_) => crate::error::bail!("state file slot too short"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(collection: u16, version: i64, key: &str) -> ExpectedPoint {
        ExpectedPoint {
            collection,
            key: key.into(),
            version,
            hash: u128::MAX - version as u128,
            partition: 3,
            offset: -7 + version,
            timestamp_ms: 1_700_000_000_000 + version,
        }
    }

    fn id(bucket: u16, low: u64) -> Uuid {
        Uuid::from_u128(((bucket as u128) << 112) | low as u128)
    }

    /// The same writes give the same answers in memory and on disk, before and after a
    /// flush, and the counts follow every change of a slot.
    #[test]
    fn memory_and_disk_stores_answer_alike() {
        let dir = tempfile::tempdir().unwrap();
        let mut disk = StateStore::on_disk(dir.path(), 2).unwrap();
        let mut memory = StateStore::memory(2);
        let writes = [
            (id(0, 1), Slot::Live(point(0, 1, "a"))),
            (id(0, 2), Slot::Live(point(1, 4, "b"))),
            (id(7, 1), Slot::Live(point(0, 2, "ünïcode"))),
            (id(u16::MAX, u64::MAX), Slot::Live(point(1, 9, "last"))),
            (
                id(0, 1),
                Slot::Deleted(DeletedAt {
                    version: 5,
                    timestamp_ms: 11,
                }),
            ),
            (id(7, 1), Slot::Live(point(0, 3, "ünïcode"))),
        ];
        for flush_between in [false, true] {
            for (i, slot) in &writes {
                memory.set(*i, slot.clone()).unwrap();
                disk.set(*i, slot.clone()).unwrap();
                if flush_between {
                    disk.flush().unwrap();
                }
            }
            disk.flush().unwrap();
            for store in [&memory, &disk] {
                assert_eq!(store.len(), 3);
                assert_eq!(store.live_per_bucket(0)[0], 0);
                assert_eq!(store.live_per_bucket(1)[0], 1);
                assert_eq!(store.live_per_bucket(0)[7], 1);
                assert_eq!(store.live_per_bucket(1)[u16::MAX as usize], 1);
                assert_eq!(
                    store.held(&id(0, 1)).unwrap(),
                    Some(Held::Deleted { version: 5 })
                );
                assert_eq!(
                    store.get(&id(7, 1)).unwrap(),
                    Some(Slot::Live(point(0, 3, "ünïcode")))
                );
                assert_eq!(store.get(&id(9, 9)).unwrap(), None);
                let all: Vec<Uuid> = store
                    .live_in(1, 0..=u16::MAX)
                    .unwrap()
                    .into_iter()
                    .map(|(i, _)| i)
                    .collect();
                assert_eq!(all, vec![id(0, 2), id(u16::MAX, u64::MAX)]);
                assert_eq!(store.live_in(0, 1..=6).unwrap(), vec![]);
                assert_eq!(store.live_in(0, 7..=7).unwrap().len(), 1);
            }
        }
    }

    #[test]
    fn a_new_disk_store_replaces_the_file_of_an_earlier_run() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = StateStore::on_disk(dir.path(), 1).unwrap();
        first.set(id(1, 1), Slot::Live(point(0, 1, "k"))).unwrap();
        first.flush().unwrap();
        drop(first);
        let second = StateStore::on_disk(dir.path(), 1).unwrap();
        assert_eq!(second.get(&id(1, 1)).unwrap(), None);
        assert!(second.path().unwrap().ends_with(FILE_NAME));
    }
}
