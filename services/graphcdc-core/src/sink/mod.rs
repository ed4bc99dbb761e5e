//! The one sink contract, [`VectorSink`], and its implementations.
//!
//! Every write is fenced by version, atomically per point inside the sink: a point is
//! written only when it does not exist yet or its stored `cdc_version` is older (or, for
//! repairs, not newer). Both implementations use one conditional upsert per batch with
//! the filter `should[ must[has_id(id_i), cdc_version < v_i] … ]`.

pub mod edge;
pub mod jsonl;
pub mod qdrant;

use crate::config::{Distance, MappingConfig, SinkConfig};
use crate::error::SinkError;
use crate::mapping::PointWrite;
use anyhow::Context;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Arc;
use uuid::Uuid;

/// What a collection needs when it is created.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectionSpec {
    pub name: String,
    pub vector_name: String,
    pub dimension: usize,
    pub distance: Distance,
}

impl From<&MappingConfig> for CollectionSpec {
    fn from(m: &MappingConfig) -> Self {
        CollectionSpec {
            name: m.collection.clone(),
            vector_name: m.vector_name.clone(),
            dimension: m.dimension,
            distance: m.distance,
        }
    }
}

/// Create the collections of `mappings` that `sink` does not have yet.
///
/// # Errors
/// The first collection that cannot be created, named.
pub async fn ensure_collections(
    sink: &dyn VectorSink,
    mappings: &[MappingConfig],
) -> anyhow::Result<()> {
    for m in mappings {
        sink.ensure_collection(&CollectionSpec::from(m))
            .await
            .with_context(|| {
                format!("creating collection {:?} in {}", m.collection, sink.name())
            })?;
    }
    Ok(())
}

/// Which stored versions a write may replace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fence {
    /// Only older versions (ordinary events).
    Newer,
    /// Older or equal versions (repairs of a content mismatch).
    NewerOrEqual,
}

/// What the sink holds for one point.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPoint {
    pub id: Uuid,
    pub key: String,
    pub version: i64,
    pub hash: String,
    /// A tombstone: the entity was deleted at `version`.
    pub deleted: bool,
    /// Mapped payload fields (only from [`VectorSink::get`]).
    pub payload: Option<serde_json::Map<String, serde_json::Value>>,
}

/// One page of a scan, in point-id order.
#[derive(Debug, Clone, Default)]
pub struct ScanPage {
    pub points: Vec<StoredPoint>,
    /// Where the next page starts; `None` after the last page.
    pub next: Option<Uuid>,
}

/// A vector store that applies version-fenced point writes.
#[async_trait]
pub trait VectorSink: Send + Sync {
    /// Short name for logs, e.g. `qdrant-edge`.
    fn name(&self) -> &'static str;

    /// Create the collection with a payload index on the version field when missing.
    async fn ensure_collection(&self, spec: &CollectionSpec) -> Result<(), SinkError>;

    /// Stored versions of those `ids` that exist (tombstones included).
    async fn versions(
        &self,
        collection: &str,
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, i64>, SinkError>;

    /// Write `points` (all of `collection`) with the version `fence`; returns once the
    /// write is durable (server: `wait=true`; embedded: flushed).
    async fn write(
        &self,
        collection: &str,
        points: &[PointWrite],
        fence: Fence,
    ) -> Result<(), SinkError>;

    /// Remove points for good (no tombstone) when their stored version is at most the
    /// given one.
    async fn purge(&self, collection: &str, points: &[(Uuid, i64)]) -> Result<(), SinkError>;

    /// One page of all points (tombstones included), starting at `from`.
    async fn scan(
        &self,
        collection: &str,
        from: Option<Uuid>,
        limit: usize,
    ) -> Result<ScanPage, SinkError>;

    /// One point with its payload.
    async fn get(&self, collection: &str, id: Uuid) -> Result<Option<StoredPoint>, SinkError>;

    /// Number of live points (tombstones excluded).
    async fn count_live(&self, collection: &str) -> Result<u64, SinkError>;
}

/// Open the sink named by `config`.
///
/// # Errors
/// When the embedded directory cannot be created or the server URL is invalid.
pub fn open(config: &SinkConfig) -> anyhow::Result<Arc<dyn VectorSink>> {
    Ok(match config {
        SinkConfig::Embedded { path } => Arc::new(edge::EdgeSink::open(path)?),
        SinkConfig::Jsonl {
            path,
            max_file_bytes,
        } => Arc::new(jsonl::JsonlSink::open(path, *max_file_bytes)?),
        SinkConfig::Qdrant { .. } => Arc::new(qdrant::QdrantSink::from_config(config)?),
    })
}

/// Reads a [`StoredPoint`] out of a payload map; `None` when the reserved fields are
/// missing (a point not written by graphcdc).
pub fn stored_point(
    id: Uuid,
    payload: &serde_json::Map<String, serde_json::Value>,
    with_payload: bool,
) -> Option<StoredPoint> {
    use crate::mapping::{DELETED_FIELD, HASH_FIELD, KEY_FIELD, RESERVED_PREFIX, VERSION_FIELD};
    Some(StoredPoint {
        id,
        key: payload.get(KEY_FIELD)?.as_str()?.to_owned(),
        version: payload.get(VERSION_FIELD)?.as_i64()?,
        hash: payload
            .get(HASH_FIELD)
            .and_then(|h| h.as_str())
            .unwrap_or_default()
            .to_owned(),
        deleted: payload
            .get(DELETED_FIELD)
            .and_then(|d| d.as_bool())
            .unwrap_or(false),
        payload: with_payload.then(|| {
            payload
                .iter()
                .filter(|(k, _)| !k.starts_with(RESERVED_PREFIX))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }),
    })
}

/// Payload fields a scan reads.
pub const SCAN_FIELDS: [&str; 4] = [
    crate::mapping::KEY_FIELD,
    crate::mapping::VERSION_FIELD,
    crate::mapping::HASH_FIELD,
    crate::mapping::DELETED_FIELD,
];

#[cfg(test)]
mod contract;
