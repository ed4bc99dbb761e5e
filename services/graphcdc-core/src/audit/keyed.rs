//! What the audit holds per entity key, in memory (the default) or, with
//! `audit --state-dir`, in a file on local disk, so that its memory stays flat whatever
//! the size of the graph: graph.state's entries ([`super::state::LogEntry`] per key) and
//! the keys a pass met in Neo4j.
//!
//! Both are maps from key to a small value, read back in key order by pages (keyset
//! pagination, as Neo4j is read). On disk each is a redb B-tree file made anew when it is
//! opened; writes gather in memory (up to [`FLUSH_EVERY`]) and reach the file in one
//! sorted transaction per [`Keyed::flush`]; memory then holds redb's page cache
//! ([`CACHE_BYTES`]) and the pending writes. The reconciler keeps its expected state the
//! same way ([`crate::reconcile::store`]).

use crate::error::Context;
use redb::{ReadableDatabase, TableDefinition};
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::{Path, PathBuf};

/// Pending writes that make a disk map write them out.
pub const FLUSH_EVERY: usize = 200_000;

/// redb's page cache per disk map.
pub const CACHE_BYTES: usize = 128 << 20;

const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");

/// A value kept per key: its bytes in the file.
pub trait Value: Clone {
    fn encode(&self, out: &mut Vec<u8>);
    /// # Errors
    /// When the bytes are not a value (a damaged file).
    fn decode(bytes: &[u8]) -> crate::error::Result<Self>;
}

impl Value for () {
    fn encode(&self, out: &mut Vec<u8>) {
        out.clear();
    }
    fn decode(_: &[u8]) -> crate::error::Result<Self> {
        Ok(())
    }
}

/// A map from entity key to `V`, in memory or in a file.
pub enum Keyed<V> {
    Memory(BTreeMap<String, V>),
    Disk(Box<DiskMap<V>>),
}

/// A [`Keyed`] map in a redb file.
pub struct DiskMap<V> {
    db: redb::Database,
    path: PathBuf,
    /// A snapshot of the file as of the last flush.
    reader: redb::ReadOnlyTable<&'static str, &'static [u8]>,
    /// Writes not in the file yet.
    pending: HashMap<String, V>,
}

impl<V: Value> Keyed<V> {
    /// An empty map in memory.
    pub fn memory() -> Self {
        Keyed::Memory(BTreeMap::new())
    }

    /// An empty map in the file `name` in `dir` (created; a file left by an earlier run
    /// is replaced).
    ///
    /// # Errors
    /// When the directory or the file cannot be created.
    pub fn on_disk(dir: &Path, name: &str) -> crate::error::Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the state directory {}", dir.display()))?;
        let path = dir.join(name);
        if path.exists() {
            std::fs::remove_file(&path)
                .with_context(|| format!("removing the old file {}", path.display()))?;
        }
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        let txn = db.begin_write()?;
        txn.open_table(TABLE)?;
        txn.commit()?;
        let reader = db.begin_read()?.open_table(TABLE)?;
        Ok(Keyed::Disk(Box::new(DiskMap {
            db,
            path,
            reader,
            pending: HashMap::new(),
        })))
    }

    /// An empty map kept where `self` is: in memory, or in the file `name` beside
    /// `self`'s file.
    ///
    /// # Errors
    /// When the file cannot be created.
    pub fn beside<W: Value>(&self, name: &str) -> crate::error::Result<Keyed<W>> {
        match self {
            Keyed::Memory(_) => Ok(Keyed::memory()),
            Keyed::Disk(d) => Keyed::on_disk(d.path.parent().unwrap_or(Path::new(".")), name),
        }
    }

    /// The file of a disk map.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Keyed::Memory(_) => None,
            Keyed::Disk(d) => Some(&d.path),
        }
    }

    /// The value of `key`.
    ///
    /// # Errors
    /// When the file cannot be read.
    pub fn get(&self, key: &str) -> crate::error::Result<Option<V>> {
        match self {
            Keyed::Memory(m) => Ok(m.get(key).cloned()),
            Keyed::Disk(d) => match d.pending.get(key) {
                Some(v) => Ok(Some(v.clone())),
                None => d
                    .reader
                    .get(key)
                    .with_context(|| format!("reading {}", d.path.display()))?
                    .map(|v| V::decode(v.value()))
                    .transpose(),
            },
        }
    }

    /// Whether `key` has a value.
    ///
    /// # Errors
    /// When the file cannot be read.
    pub fn contains(&self, key: &str) -> crate::error::Result<bool> {
        match self {
            Keyed::Memory(m) => Ok(m.contains_key(key)),
            Keyed::Disk(d) => Ok(d.pending.contains_key(key)
                || d.reader
                    .get(key)
                    .with_context(|| format!("reading {}", d.path.display()))?
                    .is_some()),
        }
    }

    /// Set the value of `key`.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn insert(&mut self, key: &str, value: V) -> crate::error::Result<()> {
        match self {
            Keyed::Memory(m) => {
                m.insert(key.to_owned(), value);
            }
            Keyed::Disk(d) => {
                d.pending.insert(key.to_owned(), value);
                if d.pending.len() >= FLUSH_EVERY {
                    d.flush()?;
                }
            }
        }
        Ok(())
    }

    /// Write pending values to the file (a disk map; nothing in memory).
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn flush(&mut self) -> crate::error::Result<()> {
        match self {
            Keyed::Memory(_) => Ok(()),
            Keyed::Disk(d) => d.flush(),
        }
    }

    /// Up to `limit` keys after `after` (from the first without), in key order, with
    /// their values. A disk map reads what was flushed ([`Keyed::flush`]).
    ///
    /// # Errors
    /// When the file cannot be read.
    pub fn page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> crate::error::Result<Vec<(String, V)>> {
        let from = after.map_or(Bound::Unbounded, Bound::Excluded);
        match self {
            Keyed::Memory(m) => Ok(m
                .range::<str, _>((from, Bound::Unbounded))
                .take(limit)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()),
            Keyed::Disk(d) => {
                debug_assert!(d.pending.is_empty(), "pages read flushed values");
                let mut page = Vec::new();
                for entry in d.reader.range::<&str>((from, Bound::Unbounded))? {
                    if page.len() == limit {
                        break;
                    }
                    let (key, value) = entry?;
                    page.push((key.value().to_owned(), V::decode(value.value())?));
                }
                Ok(page)
            }
        }
    }

    /// Call `f` with every key and value, in key order, a page at a time.
    ///
    /// # Errors
    /// When the file cannot be read.
    pub fn each(&self, mut f: impl FnMut(&str, &V)) -> crate::error::Result<()> {
        let mut after: Option<String> = None;
        loop {
            let page = self.page(after.as_deref(), 10_000)?;
            for (key, value) in &page {
                f(key, value);
            }
            match page.into_iter().last() {
                Some((last, _)) => after = Some(last),
                None => return Ok(()),
            }
        }
    }
}

impl<V: Value> DiskMap<V> {
    fn flush(&mut self) -> crate::error::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut pending: Vec<(String, V)> = self.pending.drain().collect();
        pending.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(TABLE)?;
            let mut bytes = Vec::new();
            for (key, value) in &pending {
                value.encode(&mut bytes);
                table.insert(key.as_str(), bytes.as_slice())?;
            }
        }
        txn.commit()
            .with_context(|| format!("writing {}", self.path.display()))?;
        self.reader = self.db.begin_read()?.open_table(TABLE)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct Number(u64);

    impl Value for Number {
        fn encode(&self, out: &mut Vec<u8>) {
            out.clear();
            out.extend_from_slice(&self.0.to_le_bytes());
        }
        fn decode(bytes: &[u8]) -> crate::error::Result<Self> {
            Ok(Number(u64::from_le_bytes(bytes.try_into()?)))
        }
    }

    fn all<V: Value>(map: &Keyed<V>) -> Vec<(String, V)> {
        let mut all = Vec::new();
        map.each(|k, v| all.push((k.to_owned(), v.clone())))
            .unwrap();
        all
    }

    /// The same writes give the same answers in memory and on disk, before and after a
    /// flush; pages walk every key once in key order.
    #[test]
    fn memory_and_disk_maps_answer_alike() {
        let dir = tempfile::tempdir().unwrap();
        let mut disk: Keyed<Number> = Keyed::on_disk(dir.path(), "numbers.redb").unwrap();
        let mut memory: Keyed<Number> = Keyed::memory();
        let keys: Vec<String> = (0..25_000)
            .map(|i| format!("Doc:k{}", (i * 7_919) % 25_000))
            .chain(["ünïcode".to_owned(), String::new(), "Doc:k1".to_owned()])
            .collect();
        for (i, key) in keys.iter().enumerate() {
            memory.insert(key, Number(i as u64)).unwrap();
            disk.insert(key, Number(i as u64)).unwrap();
        }
        assert_eq!(disk.get("Doc:k1").unwrap(), memory.get("Doc:k1").unwrap());
        assert_eq!(memory.get("Doc:k1").unwrap(), Some(Number(25_002)));
        disk.flush().unwrap();
        for map in [&memory, &disk] {
            assert_eq!(map.get("Doc:k1").unwrap(), Some(Number(25_002)));
            assert_eq!(map.get("ünïcode").unwrap(), Some(Number(25_000)));
            assert!(map.contains("").unwrap());
            assert!(!map.contains("Doc:k25000").unwrap());
            let page = map.page(Some("Doc:k9"), 3).unwrap();
            let page: Vec<&str> = page.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(page, ["Doc:k90", "Doc:k900", "Doc:k9000"]);
        }
        let (in_memory, on_disk) = (all(&memory), all(&disk));
        assert_eq!(in_memory.len(), 25_002);
        assert!(in_memory.windows(2).all(|w| w[0].0 < w[1].0), "key order");
        assert_eq!(in_memory, on_disk);
        let seen: Keyed<()> = disk.beside("seen.redb").unwrap();
        assert_eq!(seen.path().unwrap(), dir.path().join("seen.redb"));
        assert!(memory.beside::<()>("x").unwrap().path().is_none());
    }

    #[test]
    fn a_disk_map_opened_again_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let mut first: Keyed<()> = Keyed::on_disk(dir.path(), "seen.redb").unwrap();
        first.insert("k", ()).unwrap();
        first.flush().unwrap();
        drop(first);
        let second: Keyed<()> = Keyed::on_disk(dir.path(), "seen.redb").unwrap();
        assert!(!second.contains("k").unwrap());
    }
}
