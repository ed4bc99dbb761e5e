//! Audit/export sink: every accepted write is appended as one JSON line to
//! `{path}/{collection}/{NNNNNNNN}.jsonl`, rotating to a new file at `max_file_bytes`,
//! and synced to disk before it is acknowledged. An in-memory index of the latest
//! record per point (rebuilt from the files when a collection is opened) gives the same
//! version fence, scan and get as the other sinks. The index holds the reserved fields
//! and where the line is, not the payload: `get` reads the line back from its file, so
//! the sink's memory does not grow with payload size. The files are the product: a
//! versioned, replayable history of what the sink accepted.

use super::{CollectionSpec, Fence, ScanCursor, ScanPage, StoredPoint, VectorSink};
use crate::error::SinkError;
use crate::mapping::{PointWrite, RESERVED_PREFIX};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// One line of a file.
#[derive(Debug, Serialize, Deserialize)]
struct Line {
    id: Uuid,
    key: String,
    version: i64,
    hash: String,
    /// A tombstone (delete).
    deleted: bool,
    /// Removed for good by a purge.
    #[serde(default)]
    purged: bool,
    commit_time_ms: i64,
    written_at_ms: i64,
    #[serde(default)]
    vector: Option<Vec<f32>>,
    #[serde(default)]
    payload: serde_json::Map<String, serde_json::Value>,
}

/// The latest record of a point: its reserved fields (no payload) and where its line is.
struct Indexed {
    point: StoredPoint,
    file_no: u32,
    offset: u64,
}

/// One collection: its open file and the latest point per id.
struct Collection {
    dir: PathBuf,
    file: File,
    file_no: u32,
    size: u64,
    index: BTreeMap<Uuid, Indexed>,
}

/// Sink writing JSON Lines files under a directory.
pub struct JsonlSink {
    root: PathBuf,
    max_file_bytes: u64,
    collections: Mutex<HashMap<String, Arc<Mutex<Collection>>>>,
}

fn io(e: impl std::fmt::Display) -> SinkError {
    // Disk trouble (full, permissions) may pass: retry rather than DLQ.
    SinkError::Unavailable(format!("jsonl sink: {e}"))
}

fn file_name(no: u32) -> String {
    format!("{no:08}.jsonl")
}

impl JsonlSink {
    /// A sink under `root`, rotating files at `max_file_bytes`.
    ///
    /// # Errors
    /// When `root` cannot be created.
    pub fn open(root: &Path, max_file_bytes: u64) -> anyhow::Result<Self> {
        std::fs::create_dir_all(root)
            .map_err(|e| anyhow::anyhow!("sink.path: cannot create {}: {e}", root.display()))?;
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

fn open_append(path: &Path) -> Result<File, SinkError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io)
}

fn index_line(index: &mut BTreeMap<Uuid, Indexed>, line: Line, file_no: u32, offset: u64) {
    if line.purged {
        index.remove(&line.id);
        return;
    }
    let mut point = stored_point(line, false);
    point.payload = None;
    index.insert(
        point.id,
        Indexed {
            point,
            file_no,
            offset,
        },
    );
}

/// A line as a [`StoredPoint`], with its mapped payload when `with_payload`.
fn stored_point(line: Line, with_payload: bool) -> StoredPoint {
    let text_hash = line
        .payload
        .get(crate::mapping::TEXT_HASH_FIELD)
        .and_then(|h| h.as_str())
        .map(str::to_owned);
    let payload = with_payload.then(|| {
        line.payload
            .into_iter()
            .filter(|(k, _)| !k.starts_with(RESERVED_PREFIX))
            .collect()
    });
    StoredPoint {
        id: line.id,
        key: line.key,
        version: line.version,
        hash: line.hash,
        deleted: line.deleted,
        text_hash,
        payload,
    }
}

/// The line at `offset` of file `file_no` of the collection in `dir`.
fn read_line_at(dir: &Path, file_no: u32, offset: u64) -> Result<Line, SinkError> {
    let mut file = File::open(dir.join(file_name(file_no))).map_err(io)?;
    file.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut text = String::new();
    BufReader::new(file).read_line(&mut text).map_err(io)?;
    serde_json::from_str(&text).map_err(|e| {
        SinkError::Internal(format!(
            "jsonl sink: line at {}:{offset} does not parse: {e}",
            file_name(file_no)
        ))
    })
}

/// Rebuild a collection's index from its files, in order.
fn load(dir: &Path) -> Result<Collection, SinkError> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".jsonl"))
        .collect();
    names.sort();
    let mut index = BTreeMap::new();
    for name in &names {
        let Ok(file_no) = name.trim_end_matches(".jsonl").parse::<u32>() else {
            continue;
        };
        let mut reader = BufReader::new(File::open(dir.join(name)).map_err(io)?);
        let (mut offset, mut text) = (0u64, Vec::new());
        loop {
            text.clear();
            let read = reader.read_until(b'\n', &mut text).map_err(io)?;
            if read == 0 {
                break;
            }
            // A line cut short by a crash was never acknowledged: skip it.
            if let Ok(parsed) = serde_json::from_slice::<Line>(&text) {
                index_line(&mut index, parsed, file_no, offset);
            }
            offset += read as u64;
        }
    }
    let file_no = names
        .last()
        .and_then(|n| n.trim_end_matches(".jsonl").parse().ok())
        .unwrap_or(0);
    let path = dir.join(file_name(file_no));
    let size = std::fs::metadata(&path).map_or(0, |m| m.len());
    Ok(Collection {
        dir: dir.to_owned(),
        file: open_append(&path)?,
        file_no,
        size,
        index,
    })
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
