//! Opening an embedded shard that the last process may not have closed.
//!
//! qdrant-edge 0.7.2 flushes a segment part by part (id mapping, vectors, payload indexes,
//! payload storage, point versions) and, unlike a Qdrant server, replays no WAL when it
//! loads a shard: a process killed between two parts leaves them disagreeing. The payload
//! indexes may then hold a version the payloads never reached, and the version fence (a
//! filter those indexes answer) silently refuses the very writes that would bring the point
//! there, although their offsets were never committed and they come again.
//!
//! So a marker file says a process has the shard open; it is removed after the last flush
//! of a clean close. Found when loading, the payload indexes are rebuilt from the payloads.
//! Whatever else a half flush leaves (a vector newer than its payload, a point mapping
//! without a version, which the load drops) is older than the uncommitted events that
//! come again, and those pass the fence.

use super::errors::{classify, rejected};
use super::request::path;
use crate::mapping::{BUCKET_FIELD, DELETED_FIELD, KEY_FIELD, VERSION_FIELD};
use crate::sink::error::SinkError;
use qdrant_edge::{
    CreateIndex, EdgeShard, FieldIndexOperations, PayloadFieldSchema, PayloadSchemaType,
    UpdateOperation,
};
use std::path::Path;

/// In a collection directory while a process has its shard open.
pub(super) const OPEN_MARKER: &str = "graphcdc-open";

/// The payload fields graphcdc indexes, with their index type.
const INDEXED_FIELDS: [(&str, PayloadSchemaType); 4] = [
    (VERSION_FIELD, PayloadSchemaType::Integer),
    (KEY_FIELD, PayloadSchemaType::Keyword),
    (DELETED_FIELD, PayloadSchemaType::Bool),
    (BUCKET_FIELD, PayloadSchemaType::Integer),
];

/// Load the shard in `dir` and mark it open; when the last process left it open, rebuild
/// its payload indexes from the payloads first.
pub(super) fn load(dir: &Path) -> Result<EdgeShard, SinkError> {
    let marker = dir.join(OPEN_MARKER);
    let left_open = marker.exists();
    std::fs::File::create(&marker)
        .map_err(|e| SinkError::Unavailable(format!("cannot create {}: {e}", marker.display())))?;
    let shard = EdgeShard::load(dir, None).map_err(classify)?;
    if left_open {
        tracing::warn!(collection = %dir.display(), "the last process did not close the embedded shard: rebuilding its payload indexes");
        for (field, _) in INDEXED_FIELDS {
            shard
                .update(UpdateOperation::FieldIndexOperation(
                    FieldIndexOperations::DeleteIndex(path(field)),
                ))
                .map_err(classify)?;
        }
    }
    create_indexes(&shard)?;
    Ok(shard)
}

/// Note that the shard in `dir` was closed after a successful flush.
pub(super) fn closed_cleanly(dir: &Path) {
    let marker = dir.join(OPEN_MARKER);
    if let Err(e) = std::fs::remove_file(&marker) {
        tracing::warn!(marker = %marker.display(), error = %e, "cannot remove the open marker: the next start rebuilds the payload indexes");
    }
}

/// Create the payload indexes graphcdc needs (an existing one is left as it is).
pub(super) fn create_indexes(shard: &EdgeShard) -> Result<(), SinkError> {
    for (field, schema) in INDEXED_FIELDS {
        shard
            .update(UpdateOperation::FieldIndexOperation(
                FieldIndexOperations::CreateIndex(CreateIndex {
                    field_name: path(field),
                    field_schema: Some(PayloadFieldSchema::FieldType(schema)),
                }),
            ))
            .map_err(rejected)?;
    }
    Ok(())
}
