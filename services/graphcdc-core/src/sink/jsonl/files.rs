//! The files of a collection: one JSON line per accepted write, the index of the latest
//! line per point rebuilt from them, and reading a line back.

use crate::mapping::RESERVED_PREFIX;
use crate::sink::error::SinkError;
use crate::sink::StoredPoint;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// One line of a file.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Line {
    pub(super) id: Uuid,
    pub(super) key: String,
    pub(super) version: i64,
    pub(super) hash: String,
    /// A tombstone (delete).
    pub(super) deleted: bool,
    /// Removed for good by a purge.
    #[serde(default)]
    pub(super) purged: bool,
    pub(super) commit_time_ms: i64,
    pub(super) written_at_ms: i64,
    #[serde(default)]
    pub(super) vector: Option<Vec<f32>>,
    #[serde(default)]
    pub(super) payload: serde_json::Map<String, serde_json::Value>,
}

/// The latest record of a point: its reserved fields (no payload) and where its line is.
pub(super) struct Indexed {
    pub(super) point: StoredPoint,
    pub(super) file_no: u32,
    pub(super) offset: u64,
}

/// One collection: its open file and the latest point per id.
pub(super) struct Collection {
    pub(super) dir: PathBuf,
    pub(super) file: File,
    pub(super) file_no: u32,
    pub(super) size: u64,
    pub(super) index: BTreeMap<Uuid, Indexed>,
}

pub(super) fn io(e: impl std::fmt::Display) -> SinkError {
    // Disk trouble (full, permissions) may pass: retry rather than DLQ.
    SinkError::Unavailable(format!("jsonl sink: {e}"))
}

pub(super) fn file_name(no: u32) -> String {
    format!("{no:08}.jsonl")
}

pub(super) fn open_append(path: &Path) -> Result<File, SinkError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io)
}

pub(super) fn index_line(
    index: &mut BTreeMap<Uuid, Indexed>,
    line: Line,
    file_no: u32,
    offset: u64,
) {
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
pub(super) fn stored_point(line: Line, with_payload: bool) -> StoredPoint {
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
pub(super) fn read_line_at(dir: &Path, file_no: u32, offset: u64) -> Result<Line, SinkError> {
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
pub(super) fn load(dir: &Path) -> Result<Collection, SinkError> {
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
