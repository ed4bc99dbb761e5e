//! Audit/export sink: every accepted write is appended as one JSON line to
//! `{path}/{collection}/{NNNNNNNN}.jsonl`, rotating to a new file at `max_file_bytes`,
//! and synced to disk before it is acknowledged. An in-memory index of the latest
//! record per point (rebuilt from the files when a collection is opened) gives the same
//! version fence, scan and get as the other sinks. The index holds the reserved fields
//! and where the line is, not the payload: `get` reads the line back from its file, so
//! the sink's memory does not grow with payload size. The files are the product: a
//! versioned, replayable history of what the sink accepted.
//!
//! This file holds the sink and its [`VectorSink`] calls; `files` the lines, the index
//! and reading them back.

use super::{CollectionSpec, Fence, ScanCursor, ScanPage, StoredPoint, VectorSink};
use crate::mapping::PointWrite;
use crate::sink::error::SinkError;
use async_trait::async_trait;
use files::{
    file_name, index_line, io, load, open_append, read_line_at, stored_point, Collection, Line,
};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use uuid::Uuid;

mod files;

/// Sink writing JSON Lines files under a directory.
pub struct JsonlSink {
    root: PathBuf,
    max_file_bytes: u64,
    collections: Mutex<HashMap<String, Arc<Mutex<Collection>>>>,
}

impl JsonlSink {
    /// A sink under `root`, rotating files at `max_file_bytes`.
    ///
    /// # Errors
    /// When `root` cannot be created.
    pub fn open(root: &Path, max_file_bytes: u64) -> crate::error::Result<Self> {
        std::fs::create_dir_all(root).map_err(|e| {
            crate::error::err!(External, "sink.path: cannot create {}: {e}", root.display())
        })?;
        Ok(JsonlSink {
            root: root.to_owned(),
            max_file_bytes: max_file_bytes.max(1),
            collections: Mutex::new(HashMap::new()),
        })
    }

    fn collection(&self, name: &str) -> Result<Arc<Mutex<Collection>>, SinkError> {
        if let Some(c) = self.collections.lock().unwrap().get(name) {
            return Ok(c.clone());
        }
        let dir = self.root.join(name);
        if !dir.is_dir() {
            return Err(SinkError::Rejected(format!(
                "collection {name:?} does not exist"
            )));
        }
        let collection = Arc::new(Mutex::new(load(&dir)?));
        self.collections
            .lock()
            .unwrap()
            .insert(name.to_owned(), collection.clone());
        Ok(collection)
    }

    /// Append `lines` to the collection, rotate when full, sync, update the index.
    fn append(&self, c: &mut Collection, lines: Vec<Line>) -> Result<(), SinkError> {
        for line in lines {
            let mut text =
                serde_json::to_vec(&line).map_err(|e| SinkError::Rejected(e.to_string()))?;
            text.push(b'\n');
            if c.size > 0 && c.size + text.len() as u64 > self.max_file_bytes {
                c.file.sync_data().map_err(io)?;
                c.file_no += 1;
                c.file = open_append(&c.dir.join(file_name(c.file_no)))?;
                c.size = 0;
            }
            c.file.write_all(&text).map_err(io)?;
            let offset = c.size;
            c.size += text.len() as u64;
            index_line(&mut c.index, line, c.file_no, offset);
        }
        c.file.sync_data().map_err(io)
    }
}

#[async_trait]
impl VectorSink for JsonlSink {
    fn name(&self) -> &'static str {
        "jsonl"
    }

    async fn describe(
        &self,
        _collection: &str,
        _vector_name: &str,
    ) -> Result<Option<CollectionSpec>, SinkError> {
        Ok(None)
    }

    async fn ensure_collection(&self, spec: &CollectionSpec) -> Result<(), SinkError> {
        std::fs::create_dir_all(self.root.join(&spec.name)).map_err(io)?;
        self.collection(&spec.name).map(|_| ())
    }

    async fn versions(
        &self,
        collection: &str,
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, i64>, SinkError> {
        let c = self.collection(collection)?;
        let c = c.lock().unwrap();
        Ok(ids
            .iter()
            .filter_map(|id| c.index.get(id).map(|p| (*id, p.point.version)))
            .collect())
    }

    /// Every write is synced to disk before it is acknowledged.
    async fn sync(&self) -> Result<(), SinkError> {
        Ok(())
    }

    async fn write(
        &self,
        collection: &str,
        points: &[PointWrite],
        fence: Fence,
    ) -> Result<(), SinkError> {
        let c = self.collection(collection)?;
        let mut c = c.lock().unwrap();
        let written_at_ms = crate::unix_ms();
        let lines: Vec<Line> = super::latest_per_point(points)
            .into_iter()
            .filter(|p| {
                c.index.get(&p.id).is_none_or(|stored| match fence {
                    Fence::Newer => stored.point.version < p.version,
                    Fence::NewerOrEqual => stored.point.version <= p.version,
                })
            })
            .map(|p| Line {
                id: p.id,
                key: p.key.clone(),
                version: p.version,
                hash: p.hash.clone(),
                deleted: p.is_tombstone(),
                purged: false,
                commit_time_ms: p.commit_time_ms,
                written_at_ms,
                vector: p.vector.clone(),
                payload: p.payload.clone(),
            })
            .collect();
        self.append(&mut c, lines)
    }

    async fn purge(&self, collection: &str, points: &[(Uuid, i64)]) -> Result<(), SinkError> {
        let c = self.collection(collection)?;
        let mut c = c.lock().unwrap();
        let written_at_ms = crate::unix_ms();
        let lines: Vec<Line> = points
            .iter()
            .filter_map(|(id, version)| {
                let stored = &c
                    .index
                    .get(id)
                    .filter(|s| s.point.version <= *version)?
                    .point;
                Some(Line {
                    id: *id,
                    key: stored.key.clone(),
                    version: stored.version,
                    hash: String::new(),
                    deleted: true,
                    purged: true,
                    commit_time_ms: 0,
                    written_at_ms,
                    vector: None,
                    payload: serde_json::Map::new(),
                })
            })
            .collect();
        self.append(&mut c, lines)
    }

    async fn scan(
        &self,
        collection: &str,
        from: Option<ScanCursor>,
        limit: usize,
    ) -> Result<ScanPage, SinkError> {
        let c = self.collection(collection)?;
        let c = c.lock().unwrap();
        // Only the pipeline writes these files: every id is a UUID.
        let from = match from {
            Some(ScanCursor::Uuid(id)) => id,
            Some(ScanCursor::Num(_)) | None => Uuid::nil(),
        };
        let mut range = c.index.range(from..);
        let points = range
            .by_ref()
            .take(limit)
            .map(|(_, p)| p.point.clone())
            .collect();
        Ok(ScanPage {
            points,
            foreign: Vec::new(),
            next: range.next().map(|(id, _)| ScanCursor::Uuid(*id)),
        })
    }

    async fn get(&self, collection: &str, id: Uuid) -> Result<Option<StoredPoint>, SinkError> {
        let c = self.collection(collection)?;
        let c = c.lock().unwrap();
        let Some(indexed) = c.index.get(&id) else {
            return Ok(None);
        };
        let line = read_line_at(&c.dir, indexed.file_no, indexed.offset)?;
        Ok(Some(stored_point(line, true)))
    }

    async fn count_live(&self, collection: &str) -> Result<u64, SinkError> {
        let c = self.collection(collection)?;
        let c = c.lock().unwrap();
        Ok(c.index.values().filter(|p| !p.point.deleted).count() as u64)
    }
}
