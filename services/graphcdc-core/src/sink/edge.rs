//! Embedded Qdrant (`qdrant-edge`): one shard directory per collection.
//!
//! For the demo, tests and small setups: qdrant-edge 0.7.2 never truncates its WAL, so
//! the directory grows with every write. The server sink is the production path.
//! Shard calls block, so they run on the blocking pool; every write is flushed before it
//! is acknowledged, and writes and flushes of a shard are serialised (a flush racing an
//! update panics inside qdrant-edge).

use super::{CollectionSpec, Fence, ScanPage, StoredPoint, VectorSink, SCAN_FIELDS};
use crate::config::Distance;
use crate::error::SinkError;
use crate::mapping::{PointWrite, DELETED_FIELD, KEY_FIELD, VERSION_FIELD};
use async_trait::async_trait;
use qdrant_edge::external::ordered_float::OrderedFloat;
use qdrant_edge::{
    Condition, ConditionalInsertOperation, CountRequest, CreateIndex, EdgeConfig, EdgeShard,
    EdgeVectorParams, FieldCondition, FieldIndexOperations, Filter, HasIdCondition, JsonPath,
    Match, OperationError, Payload, PayloadFieldSchema, PayloadSchemaType, PointId,
    PointInsertOperations, PointOperations, PointStructPersisted, Range, ScrollRequest,
    UpdateOperation, VectorPersisted, VectorStructPersisted, WalOptions, WithPayloadInterface,
    WithVector,
};
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// One embedded shard and the lock that keeps its writes and flushes apart.
struct Shard {
    shard: EdgeShard,
    write_lock: Mutex<()>,
}

/// Embedded Qdrant sink rooted at a local directory.
pub struct EdgeSink {
    root: PathBuf,
    shards: Mutex<HashMap<String, Arc<Shard>>>,
}

impl EdgeSink {
    /// A sink storing collections under `root` (created when missing).
    ///
    /// # Errors
    /// When `root` cannot be created.
    pub fn open(root: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(root)
            .map_err(|e| anyhow::anyhow!("sink.path: cannot create {}: {e}", root.display()))?;
        Ok(EdgeSink {
            root: root.to_owned(),
            shards: Mutex::new(HashMap::new()),
        })
    }

    fn shard(&self, collection: &str) -> Result<Arc<Shard>, SinkError> {
        if let Some(shard) = self.shards.lock().unwrap().get(collection) {
            return Ok(shard.clone());
        }
        let dir = self.root.join(collection);
        if !dir.join("edge_config.json").exists() {
            return Err(SinkError::Rejected(format!(
                "collection {collection:?} does not exist"
            )));
        }
        let shard = EdgeShard::load(&dir, None).map_err(classify)?;
        create_indexes(&shard)?;
        let shard = Arc::new(Shard {
            shard,
            write_lock: Mutex::new(()),
        });
        self.shards
            .lock()
            .unwrap()
            .insert(collection.to_owned(), shard.clone());
        Ok(shard)
    }

    /// Run `f` on the blocking pool with the shard of `collection`.
    async fn with_shard<T: Send + 'static>(
        &self,
        collection: &str,
        f: impl FnOnce(&Shard) -> Result<T, SinkError> + Send + 'static,
    ) -> Result<T, SinkError> {
        let shard = self.shard(collection)?;
        tokio::task::spawn_blocking(move || f(&shard))
            .await
            .map_err(|e| SinkError::Unavailable(format!("embedded shard task failed: {e}")))?
    }
}

impl Shard {
    /// Apply `op` and flush, so the write survives a crash once this returns.
    fn update_durably(&self, op: UpdateOperation) -> Result<(), SinkError> {
        // A panic inside qdrant-edge's flush must not poison every later write.
        let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        self.shard.update(op).map_err(classify)?;
        self.shard.flush();
        Ok(())
    }
}

fn rejected(e: impl std::fmt::Display) -> SinkError {
    SinkError::Rejected(e.to_string())
}

/// Storage trouble (I/O, memory, timeouts) is retriable; bad input is rejected.
fn classify(e: OperationError) -> SinkError {
    match e {
        OperationError::ServiceError { .. }
        | OperationError::InconsistentStorage { .. }
        | OperationError::OutOfMemory { .. }
        | OperationError::Cancelled { .. }
        | OperationError::Timeout { .. } => SinkError::Unavailable(e.to_string()),
        other => SinkError::Rejected(other.to_string()),
    }
}

fn path(field: &str) -> JsonPath {
    field.parse().expect("valid payload field name")
}

fn create_indexes(shard: &EdgeShard) -> Result<(), SinkError> {
    for (field, schema) in [
        (VERSION_FIELD, PayloadSchemaType::Integer),
        (KEY_FIELD, PayloadSchemaType::Keyword),
        (DELETED_FIELD, PayloadSchemaType::Bool),
    ] {
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

fn has_id(id: Uuid) -> Condition {
    Condition::HasId(HasIdCondition::from_iter([PointId::Uuid(id)]))
}

fn version_range(fence: Fence, version: i64) -> Condition {
    let bound = Some(OrderedFloat(version as f64));
    let range = match fence {
        Fence::Newer => Range {
            lt: bound,
            ..Default::default()
        },
        Fence::NewerOrEqual => Range {
            lte: bound,
            ..Default::default()
        },
    };
    Condition::Field(FieldCondition::new_range(path(VERSION_FIELD), range))
}

/// `should[ must[has_id(id), version (<|<=) v] … ]`: per-point version fence.
fn fence_filter(points: impl Iterator<Item = (Uuid, i64)>, fence: Fence) -> Filter {
    Filter {
        should: Some(
            points
                .map(|(id, version)| {
                    Condition::Filter(Filter {
                        must: Some(vec![has_id(id), version_range(fence, version)]),
                        ..Default::default()
                    })
                })
                .collect(),
        ),
        ..Default::default()
    }
}

fn to_point(write: &PointWrite) -> PointStructPersisted {
    let mut vectors = HashMap::new();
    if let Some(vector) = &write.vector {
        vectors.insert(
            write.vector_name.clone(),
            VectorPersisted::Dense(vector.clone()),
        );
    }
    PointStructPersisted {
        id: PointId::Uuid(write.id),
        vector: VectorStructPersisted::Named(vectors),
        payload: Some(Payload(write.payload.clone())),
    }
}

fn point_uuid(id: PointId) -> Option<Uuid> {
    match id {
        PointId::Uuid(u) => Some(u),
        PointId::NumId(_) => None,
    }
}

fn edge_distance(distance: Distance) -> qdrant_edge::Distance {
    match distance {
        Distance::Cosine => qdrant_edge::Distance::Cosine,
        Distance::Dot => qdrant_edge::Distance::Dot,
        Distance::Euclid => qdrant_edge::Distance::Euclid,
        Distance::Manhattan => qdrant_edge::Distance::Manhattan,
    }
}

#[async_trait]
impl VectorSink for EdgeSink {
    fn name(&self) -> &'static str {
        "qdrant-edge"
    }

    async fn ensure_collection(&self, spec: &CollectionSpec) -> Result<(), SinkError> {
        let dir = self.root.join(&spec.name);
        if !dir.join("edge_config.json").exists() {
            std::fs::create_dir_all(&dir).map_err(rejected)?;
            let config = EdgeConfig::builder()
                .vector(
                    &spec.vector_name,
                    EdgeVectorParams::builder(spec.dimension, edge_distance(spec.distance)).build(),
                )
                .wal_options(WalOptions {
                    segment_capacity: 4 << 20,
                    segment_queue_len: 0,
                    retain_closed: NonZeroUsize::new(1).unwrap(),
                })
                .build();
            let shard = EdgeShard::new(&dir, config).map_err(classify)?;
            create_indexes(&shard)?;
            shard.flush();
        }
        self.shard(&spec.name).map(|_| ())
    }

    async fn versions(
        &self,
        collection: &str,
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, i64>, SinkError> {
        let ids: Vec<PointId> = ids.iter().map(|id| PointId::Uuid(*id)).collect();
        self.with_shard(collection, move |s| {
            let records = s
                .shard
                .retrieve(
                    &ids,
                    Some(WithPayloadInterface::Fields(vec![path(VERSION_FIELD)])),
                    Some(WithVector::Bool(false)),
                )
                .map_err(classify)?;
            Ok(records
                .into_iter()
                .filter_map(|r| {
                    let version = r.payload.as_ref()?.0.get(VERSION_FIELD)?.as_i64()?;
                    Some((point_uuid(r.id)?, version))
                })
                .collect())
        })
        .await
    }

    async fn write(
        &self,
        collection: &str,
        points: &[PointWrite],
        fence: Fence,
    ) -> Result<(), SinkError> {
        if points.is_empty() {
            return Ok(());
        }
        let condition = fence_filter(points.iter().map(|p| (p.id, p.version)), fence);
        let points: Vec<PointStructPersisted> = points.iter().map(to_point).collect();
        self.with_shard(collection, move |s| {
            let op = ConditionalInsertOperation {
                points_op: PointInsertOperations::PointsList(points),
                condition,
                update_mode: None,
            };
            s.update_durably(UpdateOperation::PointOperation(
                PointOperations::UpsertPointsConditional(op),
            ))
        })
        .await
    }

    async fn purge(&self, collection: &str, points: &[(Uuid, i64)]) -> Result<(), SinkError> {
        if points.is_empty() {
            return Ok(());
        }
        let filter = fence_filter(points.iter().copied(), Fence::NewerOrEqual);
        self.with_shard(collection, move |s| {
            s.update_durably(UpdateOperation::PointOperation(
                PointOperations::DeletePointsByFilter(filter),
            ))
        })
        .await
    }

    async fn scan(
        &self,
        collection: &str,
        from: Option<Uuid>,
        limit: usize,
    ) -> Result<ScanPage, SinkError> {
        self.with_shard(collection, move |s| {
            let (records, next) = s
                .shard
                .scroll(ScrollRequest {
                    offset: from.map(PointId::Uuid),
                    limit: Some(limit),
                    filter: None,
                    with_payload: Some(WithPayloadInterface::Fields(
                        SCAN_FIELDS.iter().map(|f| path(f)).collect(),
                    )),
                    with_vector: WithVector::Bool(false),
                    order_by: None,
                })
                .map_err(classify)?;
            Ok(ScanPage {
                points: records
                    .into_iter()
                    .filter_map(|r| super::stored_point(point_uuid(r.id)?, &r.payload?.0, false))
                    .collect(),
                next: next.and_then(point_uuid),
            })
        })
        .await
    }

    async fn get(&self, collection: &str, id: Uuid) -> Result<Option<StoredPoint>, SinkError> {
        self.with_shard(collection, move |s| {
            let records = s
                .shard
                .retrieve(
                    &[PointId::Uuid(id)],
                    Some(WithPayloadInterface::Bool(true)),
                    Some(WithVector::Bool(false)),
                )
                .map_err(classify)?;
            Ok(records
                .into_iter()
                .next()
                .and_then(|r| super::stored_point(id, &r.payload?.0, true)))
        })
        .await
    }

    async fn count_live(&self, collection: &str) -> Result<u64, SinkError> {
        self.with_shard(collection, |s| {
            let live = Filter {
                must: Some(vec![Condition::Field(FieldCondition::new_match(
                    path(DELETED_FIELD),
                    Match::from(false),
                ))]),
                ..Default::default()
            };
            s.shard
                .count(CountRequest {
                    filter: Some(live),
                    exact: true,
                })
                .map(|n| n as u64)
                .map_err(classify)
        })
        .await
    }
}
