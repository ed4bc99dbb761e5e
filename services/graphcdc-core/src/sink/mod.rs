//! The one sink contract, [`VectorSink`], and its implementations.
//!
//! Every write is fenced by version, atomically per point inside the sink: a point is
//! written only when it does not exist yet or its stored `cdc_version` is older (or, for
//! repairs, not newer). Both Qdrant implementations use one conditional upsert per batch
//! with the filter `should[ must[has_id(id_i), cdc_version < v_i] … ]`.
//!
//! The contract is safe on its own, whatever the caller does:
//! - duplicate ids in one `write` are collapsed to the highest version first
//!   ([`latest_per_point`]): the fence ORs the bounds of duplicates and Qdrant keeps the
//!   last one, so `[v5, v3]` over a stored v4 would otherwise end at v3;
//! - a tombstone carries no vector on any segment type: Qdrant copies the old vectors
//!   when it moves a point out of an optimized (non-appendable) or proxied segment, so the
//!   write strips them. The server sink sends a delete-vectors whose filter
//!   `should[ must[has_id, cdc_version = v, cdc_deleted] … ]` can never touch a later
//!   revival; the embedded sink, the only writer of its shard, decides under the shard's
//!   write lock which tombstones the fence lets through and strips exactly those by id.

pub mod config;
#[cfg(feature = "embedded")]
pub mod embedded;
pub mod error;
pub mod jsonl;
pub mod qdrant;

pub use config::SinkConfig;
pub use error::SinkError;

use crate::error::Context;
use crate::mapping::PointWrite;
use crate::mapping::{Distance, MappingConfig};
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

impl CollectionSpec {
    /// The spec of the `vector_name` vector among `vectors` (name, dimension, distance)
    /// of `collection`; of the first by name when there is no such vector, so that a
    /// mismatch names what is there.
    pub fn pick(
        collection: &str,
        vector_name: &str,
        vectors: impl IntoIterator<Item = (String, (usize, Distance))>,
    ) -> CollectionSpec {
        let mut vectors: Vec<_> = vectors.into_iter().collect();
        vectors.sort_by(|a, b| (a.0 != vector_name, &a.0).cmp(&(b.0 != vector_name, &b.0)));
        let (vector_name, (dimension, distance)) = vectors
            .into_iter()
            .next()
            .unwrap_or((String::new(), (0, Distance::Cosine)));
        CollectionSpec {
            name: collection.to_owned(),
            vector_name,
            dimension,
            distance,
        }
    }

    /// How `actual` (what the sink holds) differs from this spec, named field by field;
    /// `None` when they match.
    pub fn mismatch(&self, actual: &CollectionSpec) -> Option<String> {
        let mut differences = Vec::new();
        if actual.vector_name != self.vector_name {
            differences.push(format!(
                "vector name: expected {:?}, found {:?}",
                self.vector_name, actual.vector_name
            ));
        } else {
            if actual.dimension != self.dimension {
                differences.push(format!(
                    "dimension of {:?}: expected {}, found {}",
                    self.vector_name, self.dimension, actual.dimension
                ));
            }
            if actual.distance != self.distance {
                differences.push(format!(
                    "distance of {:?}: expected {:?}, found {:?}",
                    self.vector_name, self.distance, actual.distance
                ));
            }
        }
        (!differences.is_empty()).then(|| {
            format!(
                "collection {:?} does not match its mapping: {}",
                self.name,
                differences.join("; ")
            )
        })
    }
}

/// Whether `sink` holds `spec`'s collection as the mapping describes it.
///
/// # Errors
/// [`SinkError::Misconfigured`] naming the collection, the expected and the actual value;
/// the sink's own error when it cannot be asked.
pub async fn check_collection(
    sink: &dyn VectorSink,
    spec: &CollectionSpec,
) -> Result<(), SinkError> {
    match sink.describe(&spec.name, &spec.vector_name).await? {
        Some(actual) => match spec.mismatch(&actual) {
            Some(mismatch) => Err(SinkError::Misconfigured(mismatch)),
            None => Ok(()),
        },
        None => Ok(()),
    }
}

/// Create the collections of `mappings` that `sink` does not have yet, and check that
/// the existing ones have the mapping's vector name, dimension and distance.
///
/// # Errors
/// The first collection that cannot be created or does not match, named with the
/// expected and the actual value.
pub async fn ensure_collections(
    sink: &dyn VectorSink,
    mappings: &[MappingConfig],
) -> crate::error::Result<()> {
    for m in mappings {
        let spec = CollectionSpec::from(m);
        sink.ensure_collection(&spec).await.with_context(|| {
            format!("creating collection {:?} in {}", m.collection, sink.name())
        })?;
        check_collection(sink, &spec).await.with_context(|| {
            format!("checking collection {:?} in {}", m.collection, sink.name())
        })?;
    }
    Ok(())
}

/// One write per point id, in first-seen order: the highest version, the later one on
/// a tie.
pub fn latest_per_point(points: &[PointWrite]) -> Vec<&PointWrite> {
    let mut index: HashMap<Uuid, usize> = HashMap::with_capacity(points.len());
    let mut kept: Vec<&PointWrite> = Vec::with_capacity(points.len());
    for point in points {
        match index.get(&point.id) {
            Some(&i) if kept[i].version > point.version => {}
            Some(&i) => kept[i] = point,
            None => {
                index.insert(point.id, kept.len());
                kept.push(point);
            }
        }
    }
    kept
}

/// `(id, version)` of the tombstones among `points`.
pub fn tombstones(points: &[&PointWrite]) -> Vec<(Uuid, i64)> {
    points
        .iter()
        .filter(|p| p.is_tombstone())
        .map(|p| (p.id, p.version))
        .collect()
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
    /// The hash of the text its vector was embedded from (`[mappings.embedding]` only).
    pub text_hash: Option<String>,
    /// Mapped payload fields (only from [`VectorSink::get`]).
    pub payload: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A stored vector and the hash of the text it was embedded from.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredEmbedding {
    pub text_hash: String,
    pub vector: Vec<f32>,
}

/// Where a scan resumes. Qdrant orders numeric point ids before UUIDs, and a collection
/// that existed before graphcdc may hold both kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanCursor {
    Num(u64),
    Uuid(Uuid),
}

/// A point the pipeline did not write: a numeric id, or no `cdc_key`/`cdc_version`
/// fields (typically written before graphcdc was adopted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignPoint {
    /// The id as Qdrant shows it: a number or a UUID.
    pub id: String,
}

/// One page of a scan, in point-id order.
#[derive(Debug, Clone, Default)]
pub struct ScanPage {
    pub points: Vec<StoredPoint>,
    /// Points on this page the pipeline did not write.
    pub foreign: Vec<ForeignPoint>,
    /// Where the next page starts; `None` after the last page.
    pub next: Option<ScanCursor>,
}

impl ScanCursor {
    /// The id of a [`ForeignPoint`]: a number or a UUID.
    pub fn parse(id: &str) -> Option<Self> {
        id.parse::<u64>()
            .map(ScanCursor::Num)
            .ok()
            .or_else(|| Uuid::parse_str(id).ok().map(ScanCursor::Uuid))
    }
}

/// The ids of [`ForeignPoint`]s as cursors; an id that is neither is refused.
pub(crate) fn foreign_cursors(ids: &[String]) -> Result<Vec<ScanCursor>, SinkError> {
    ids.iter()
        .map(|id| {
            ScanCursor::parse(id)
                .ok_or_else(|| SinkError::Rejected(format!("{id:?} is not a point id")))
        })
        .collect()
}

impl ScanPage {
    /// Sort scanned points into ours (a UUID id and the reserved fields) and foreign ones.
    pub(crate) fn from_scanned<'a>(
        scanned: impl IntoIterator<
            Item = (
                ScanCursor,
                Option<&'a serde_json::Map<String, serde_json::Value>>,
            ),
        >,
        next: Option<ScanCursor>,
    ) -> Self {
        let mut page = ScanPage {
            next,
            ..ScanPage::default()
        };
        for (id, payload) in scanned {
            let ours = match (id, payload) {
                (ScanCursor::Uuid(uuid), Some(payload)) => stored_point(uuid, payload, false),
                _ => None,
            };
            match ours {
                Some(point) => page.points.push(point),
                None => page.foreign.push(ForeignPoint {
                    id: match id {
                        ScanCursor::Num(n) => n.to_string(),
                        ScanCursor::Uuid(u) => u.to_string(),
                    },
                }),
            }
        }
        page
    }
}

/// Points of one collection per reconcile bucket ([`crate::mapping::BUCKET_FIELD`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BucketCounts {
    /// Points that are not tombstones (foreign points that carry the field included), by
    /// bucket; buckets without such points are absent.
    pub live: HashMap<u16, u64>,
    /// Points without the field: written before graphcdc had it, or by another tool.
    pub unbucketed: u64,
}

/// A vector store that applies version-fenced point writes.
#[async_trait]
pub trait VectorSink: Send + Sync {
    /// Short name for logs, e.g. `embedded`.
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
    /// write is applied and visible to reads and searches. It is durable once a later
    /// [`VectorSink::sync`] returned (at once for the server with `wait=true` and for
    /// JSON Lines; the embedded sink flushes in `sync`).
    async fn write(
        &self,
        collection: &str,
        points: &[PointWrite],
        fence: Fence,
    ) -> Result<(), SinkError>;

    /// Make every write acknowledged before this call durable: it survives a crash of
    /// this process once this returns. The processor commits offsets only after it.
    ///
    /// Required, not defaulted: a sink that wraps another must pass it on, or the
    /// processor would commit offsets past writes that are only in memory.
    ///
    /// # Errors
    /// [`SinkError::Unavailable`] when the sink cannot make them durable now (nothing may
    /// be committed; a later call tries again).
    async fn sync(&self) -> Result<(), SinkError>;

    /// Remove points for good (no tombstone) when their stored version is at most the
    /// given one.
    async fn purge(&self, collection: &str, points: &[(Uuid, i64)]) -> Result<(), SinkError>;

    /// One page of all points (tombstones and points the pipeline did not write
    /// included), starting at `from`.
    async fn scan(
        &self,
        collection: &str,
        from: Option<ScanCursor>,
        limit: usize,
    ) -> Result<ScanPage, SinkError>;

    /// Points per reconcile bucket, counted by the sink (Qdrant's facet on the indexed
    /// [`crate::mapping::BUCKET_FIELD`]); `None` when the sink cannot count them (the
    /// reconciler then scans everything).
    async fn bucket_counts(&self, _collection: &str) -> Result<Option<BucketCounts>, SinkError> {
        Ok(None)
    }

    /// One page of the points without [`crate::mapping::BUCKET_FIELD`], in point-id order
    /// from `from` (as [`VectorSink::scan`]).
    ///
    /// # Errors
    /// A sink without [`VectorSink::bucket_counts`] refuses.
    async fn scan_unbucketed(
        &self,
        _collection: &str,
        _from: Option<ScanCursor>,
        _limit: usize,
    ) -> Result<ScanPage, SinkError> {
        Err(SinkError::Misconfigured(format!(
            "the {} sink does not count points per bucket",
            self.name()
        )))
    }

    /// Delete points the pipeline did not write ([`ScanPage::foreign`]), by the id a
    /// scan reported (a number or a UUID), whatever their payload.
    ///
    /// # Errors
    /// A sink that cannot hold such points refuses (the reconciler never asks it).
    async fn delete_foreign(&self, _collection: &str, ids: &[String]) -> Result<(), SinkError> {
        if ids.is_empty() {
            return Ok(());
        }
        Err(SinkError::Misconfigured(format!(
            "the {} sink holds no points written by another tool",
            self.name()
        )))
    }

    /// The stored text hash and `vector_name` vector of those `ids` that have both: the
    /// embedding cache. A write whose text hash equals the stored one keeps the stored
    /// vector instead of calling the model. A sink that cannot read vectors back (JSON
    /// Lines) has no cache: every text is embedded.
    async fn stored_embeddings(
        &self,
        collection: &str,
        vector_name: &str,
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, StoredEmbedding>, SinkError> {
        let _ = (collection, vector_name, ids);
        Ok(HashMap::new())
    }

    /// Live points of `collection` without their `vector_name` vector (drift: an entity
    /// that should have a vector and has none, so vector search never finds it).
    async fn live_without_vector(
        &self,
        collection: &str,
        vector_name: &str,
    ) -> Result<Vec<StoredPoint>, SinkError> {
        let _ = (collection, vector_name);
        Ok(Vec::new())
    }

    /// One point with its payload.
    async fn get(&self, collection: &str, id: Uuid) -> Result<Option<StoredPoint>, SinkError>;

    /// Number of live points (tombstones excluded).
    async fn count_live(&self, collection: &str) -> Result<u64, SinkError>;

    /// Dimension and distance of the `vector_name` vector of an existing collection (of
    /// another vector when it has no such one, so a mismatch names what is there);
    /// `None` when the sink has no vector schema to compare (JSON Lines).
    async fn describe(
        &self,
        collection: &str,
        vector_name: &str,
    ) -> Result<Option<CollectionSpec>, SinkError>;

    /// Tombstones of `collection` that still carry their `vector_name` vector (drift: a
    /// deleted entity that vector search can return).
    async fn tombstones_with_vector(
        &self,
        collection: &str,
        vector_name: &str,
    ) -> Result<Vec<StoredPoint>, SinkError> {
        let _ = (collection, vector_name);
        Ok(Vec::new())
    }

    /// Ids of the `limit` points nearest to `vector` (by the collection's distance),
    /// tombstones not filtered out: what an unfiltered vector search returns.
    async fn nearest(
        &self,
        collection: &str,
        vector_name: &str,
        vector: &[f32],
        limit: usize,
    ) -> Result<Vec<Uuid>, SinkError> {
        let _ = (collection, vector_name, vector, limit);
        Err(SinkError::Rejected(format!(
            "{} does not support vector search",
            self.name()
        )))
    }
}

/// Open the sink named by `config`.
///
/// # Errors
/// When the embedded directory cannot be created or the server URL is invalid.
pub fn open(config: &SinkConfig) -> crate::error::Result<Arc<dyn VectorSink>> {
    Ok(match config {
        #[cfg(feature = "embedded")]
        SinkConfig::Embedded { path } => Arc::new(embedded::EmbeddedSink::open(path)?),
        #[cfg(not(feature = "embedded"))]
        SinkConfig::Embedded { .. } => crate::error::bail!(
            Invalid,
            "sink.kind: \"embedded\" needs the embedded Qdrant engine, which this build \
             left out (built without the `embedded` feature); use kind = \"qdrant\""
        ),
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
    use crate::mapping::{
        DELETED_FIELD, HASH_FIELD, KEY_FIELD, RESERVED_PREFIX, TEXT_HASH_FIELD, VERSION_FIELD,
    };
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
        text_hash: payload
            .get(TEXT_HASH_FIELD)
            .and_then(|h| h.as_str())
            .map(str::to_owned),
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
pub const SCAN_FIELDS: [&str; 5] = [
    crate::mapping::KEY_FIELD,
    crate::mapping::VERSION_FIELD,
    crate::mapping::HASH_FIELD,
    crate::mapping::DELETED_FIELD,
    crate::mapping::TEXT_HASH_FIELD,
];

#[cfg(all(test, feature = "embedded"))]
mod contract;
