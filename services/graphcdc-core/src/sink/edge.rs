//! Embedded Qdrant (`qdrant-edge`): one shard directory per collection.
//!
//! For the demo, tests and small setups: qdrant-edge 0.7.2 never truncates its WAL, so
//! the directory grows with every write. The server sink is the production path.
//! Shard calls block, so they run on the blocking pool. A pipeline write is acknowledged
//! once the shard applied it (visible to reads and searches) and made durable by the next
//! [`VectorSink::sync`], which flushes every shard updated since its last flush: one
//! flush took most of a small batch's write time (docs/benchmarks.md), so with
//! `processor.commit_interval_ms` above 0 the processor syncs once per interval instead of
//! once per batch. Writes and flushes of a shard are
//! serialised (a flush racing an update panics inside qdrant-edge). A shard stays *dirty*
//! from an update until a flush succeeds, so a sync after a failed flush flushes again;
//! reads (the version pre-read included) answer from the shard's in-memory state, which
//! is what a fenced write compares against. Repairs outside the pipeline (purge, foreign
//! points, optimize) flush before they return. qdrant-edge replays no WAL: what was not
//! flushed is lost with the process, and a shard the last process did not close has its
//! payload indexes rebuilt when it is loaded (`recovery`).

use super::{
    latest_per_point, tombstones, BucketCounts, CollectionSpec, Fence, ScanCursor, ScanPage,
    StoredEmbedding, StoredPoint, VectorSink, SCAN_FIELDS,
};
use crate::config::Distance;
use crate::error::SinkError;
use crate::mapping::{
    PointWrite, BUCKETS, BUCKET_FIELD, DELETED_FIELD, TEXT_HASH_FIELD, VERSION_FIELD,
};
use async_trait::async_trait;
use qdrant_edge::external::ordered_float::OrderedFloat;
use qdrant_edge::{
    Condition, ConditionalInsertOperation, CountRequest, EdgeConfig, EdgeOptimizersConfig,
    EdgeShard, EdgeVectorParams, FacetRequest, FacetValue, FieldCondition, Filter, HasIdCondition,
    HasVectorCondition, IsEmptyCondition, JsonPath, Match, NamedQuery, OperationError, Payload,
    PointId, PointIdsList, PointInsertOperations, PointOperations, PointStructPersisted, QueryEnum,
    Range, ScrollRequest, SearchRequest, UpdateOperation, VectorInternal, VectorOperations,
    VectorPersisted, VectorStructInternal, VectorStructPersisted, WalOptions, WithPayloadInterface,
    WithVector,
};
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use uuid::Uuid;

/// One embedded shard, the lock that keeps its writes and flushes apart, and whether it
/// holds updates not flushed yet.
struct Shard {
    shard: EdgeShard,
    /// The collection directory.
    dir: PathBuf,
    write_lock: Mutex<()>,
    dirty: AtomicBool,
    /// Flushes still to fail (tests inject I/O failures with it).
    #[cfg(test)]
    failing_flushes: std::sync::atomic::AtomicUsize,
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
        // Held through the load: two first uses at once would both open the shard, and
        // the second fails on the WAL's file lock.
        let mut shards = self.shards.lock().unwrap();
        if let Some(shard) = shards.get(collection) {
            return Ok(shard.clone());
        }
        let dir = self.root.join(collection);
        if !dir.join("edge_config.json").exists() {
            return Err(SinkError::Misconfigured(format!(
                "collection {collection:?} does not exist"
            )));
        }
        let shard = recovery::load(&dir)?;
        let shard = Arc::new(Shard {
            shard,
            dir,
            write_lock: Mutex::new(()),
            // The load's own updates (indexes) are flushed before the first use.
            dirty: AtomicBool::new(true),
            #[cfg(test)]
            failing_flushes: Default::default(),
        });
        shards.insert(collection.to_owned(), shard.clone());
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

    /// Optimize `collection` as a Qdrant server's optimizer would (merge, index, vacuum),
    /// with segments above `indexing_threshold_kb` indexed: afterwards its points sit in
    /// non-appendable segments, the state of any real collection on a server.
    ///
    /// # Errors
    /// When the collection does not exist or the optimizer fails.
    pub async fn optimize(
        &self,
        collection: &str,
        indexing_threshold_kb: usize,
    ) -> Result<bool, SinkError> {
        self.with_shard(collection, move |s| {
            let _guard = s.lock();
            s.shard
                .set_optimizers_config(EdgeOptimizersConfig {
                    indexing_threshold: Some(indexing_threshold_kb),
                    ..Default::default()
                })
                .map_err(classify)?;
            let optimized = s.shard.optimize().map_err(classify)?;
            s.dirty.store(true, Ordering::SeqCst);
            s.flush()?;
            Ok(optimized)
        })
        .await
    }

    /// Write a point as another tool would (any id kind, any payload, no version fence):
    /// what a collection holds when it existed before graphcdc. For tests and
    /// migrations; the pipeline never calls it.
    ///
    /// # Errors
    /// When the collection does not exist or the write fails.
    pub async fn put_foreign(
        &self,
        collection: &str,
        id: ScanCursor,
        vector_name: &str,
        vector: Vec<f32>,
        payload: serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), SinkError> {
        let point = PointStructPersisted {
            id: point_id(id),
            vector: VectorStructPersisted::Named(HashMap::from([(
                vector_name.to_owned(),
                VectorPersisted::Dense(vector),
            )])),
            payload: Some(Payload(payload)),
        };
        self.with_shard(collection, move |s| {
            s.update_durably(vec![UpdateOperation::PointOperation(
                PointOperations::UpsertPoints(PointInsertOperations::PointsList(vec![point])),
            )])
        })
        .await
    }

    /// Every point of `collection` matching `filter`, with the fields a scan reads.
    async fn scroll_all(
        &self,
        collection: &str,
        filter: Filter,
    ) -> Result<Vec<StoredPoint>, SinkError> {
        self.with_shard(collection, move |s| {
            let mut found = Vec::new();
            let mut offset = None;
            loop {
                let page = s.scroll_page(Some(filter.clone()), offset, 1_000)?;
                found.extend(page.points);
                match page.next {
                    Some(next) => offset = Some(point_id(next)),
                    None => return Ok(found),
                }
            }
        })
        .await
    }

    /// Make the next `n` flushes of `collection` fail as an I/O error inside qdrant-edge
    /// does (a panic).
    #[cfg(test)]
    pub(crate) fn fail_flushes(&self, collection: &str, n: usize) {
        let shard = self.shard(collection).unwrap();
        shard.failing_flushes.store(n, Ordering::SeqCst);
    }
}

impl Shard {
    /// The write lock; a panic inside qdrant-edge's flush must not poison every later
    /// write.
    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.write_lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Flush WAL and segments (caller holds the write lock); the shard is clean after.
    /// qdrant-edge panics on an I/O error: that is caught and reported as unavailable,
    /// and the shard stays dirty.
    fn flush(&self) -> Result<(), SinkError> {
        let flushed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            #[cfg(test)]
            if self
                .failing_flushes
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                panic!("injected flush failure");
            }
            self.shard.flush();
        }));
        match flushed {
            Ok(()) => {
                self.dirty.store(false, Ordering::SeqCst);
                Ok(())
            }
            Err(panic) => {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(SinkError::Unavailable(format!(
                    "embedded flush failed: {why}"
                )))
            }
        }
    }

    /// One page of the points matching `filter` (all when `None`) from `offset`, with the
    /// reserved fields a scan reads, and where the next page starts.
    fn scroll_page(
        &self,
        filter: Option<Filter>,
        offset: Option<PointId>,
        limit: usize,
    ) -> Result<ScanPage, SinkError> {
        let (records, next) = self
            .shard
            .scroll(ScrollRequest {
                offset,
                limit: Some(limit),
                filter,
                with_payload: Some(WithPayloadInterface::Fields(
                    SCAN_FIELDS.iter().map(|f| path(f)).collect(),
                )),
                with_vector: WithVector::Bool(false),
                order_by: None,
            })
            .map_err(classify)?;
        Ok(ScanPage::from_scanned(
            records
                .iter()
                .map(|r| (cursor(r.id), r.payload.as_ref().map(|p| &p.0))),
            next.map(cursor),
        ))
    }

    /// Flush when an earlier update is not durable yet.
    fn flush_if_dirty(&self) -> Result<(), SinkError> {
        if !self.dirty.load(Ordering::SeqCst) {
            return Ok(());
        }
        let _guard = self.lock();
        if self.dirty.load(Ordering::SeqCst) {
            self.flush()?;
        }
        Ok(())
    }

    /// Apply `ops` in order and flush, so the writes survive a crash once this returns.
    fn update_durably(&self, ops: Vec<UpdateOperation>) -> Result<(), SinkError> {
        self.update_with(true, |_| Ok(ops))
    }

    /// Apply the operations `plan` returns, planned under the write lock (so what `plan`
    /// reads cannot change before they are applied), and flush when `durably`.
    fn update_with(
        &self,
        durably: bool,
        plan: impl FnOnce(&EdgeShard) -> Result<Vec<UpdateOperation>, SinkError>,
    ) -> Result<(), SinkError> {
        let _guard = self.lock();
        for op in plan(&self.shard)? {
            // Marked before the update: a failure after a partial apply leaves it dirty.
            self.dirty.store(true, Ordering::SeqCst);
            self.shard.update(op).map_err(classify)?;
        }
        if durably {
            self.flush()
        } else {
            Ok(())
        }
    }
}

impl Drop for Shard {
    /// A clean close: flushed, so the next load need not repair anything.
    fn drop(&mut self) {
        let _guard = self.lock();
        if !self.dirty.load(Ordering::SeqCst) || self.flush().is_ok() {
            recovery::closed_cleanly(&self.dir);
        }
    }
}

fn rejected(e: impl std::fmt::Display) -> SinkError {
    SinkError::Rejected(e.to_string())
}

/// Memory and timeouts are sink-wide and retried; internal errors are retried and may be
/// narrowed down to one event; bad input is rejected.
fn classify(e: OperationError) -> SinkError {
    match e {
        OperationError::OutOfMemory { .. }
        | OperationError::Cancelled { .. }
        | OperationError::Timeout { .. } => SinkError::Unavailable(e.to_string()),
        OperationError::ServiceError { .. } | OperationError::InconsistentStorage { .. } => {
            SinkError::Internal(e.to_string())
        }
        other => SinkError::Rejected(other.to_string()),
    }
}

fn path(field: &str) -> JsonPath {
    field.parse().expect("valid payload field name")
}

/// Points per value of [`BUCKET_FIELD`] among those matching `filter`.
fn facet_buckets(
    shard: &EdgeShard,
    filter: Option<Filter>,
) -> Result<HashMap<u16, u64>, SinkError> {
    let response = shard
        .facet(FacetRequest {
            key: path(BUCKET_FIELD),
            limit: BUCKETS,
            filter,
            exact: true,
        })
        .map_err(classify)?;
    Ok(response
        .hits
        .into_iter()
        .filter_map(|hit| match hit.value {
            FacetValue::Int(b) => Some((u16::try_from(b).ok()?, hit.count as u64)),
            _ => None,
        })
        .collect())
}

fn unbucketed() -> Condition {
    Condition::IsEmpty(IsEmptyCondition::from(path(BUCKET_FIELD)))
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

/// `cdc_deleted == deleted`: tombstones (`true`) or live points (`false`).
fn deleted_is(deleted: bool) -> Condition {
    Condition::Field(FieldCondition::new_match(
        path(DELETED_FIELD),
        Match::from(deleted),
    ))
}

/// Which of `tombstones` (id, version) will be a tombstone at that version once the
/// fenced upsert ran: the fence lets it through, or it is stored so already (its vector
/// may have survived an earlier attempt). A newer point of the same id is left alone.
fn tombstones_to_strip(
    shard: &EdgeShard,
    tombstones: &[(Uuid, i64)],
    fence: Fence,
) -> Result<Vec<PointId>, SinkError> {
    if tombstones.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<PointId> = tombstones
        .iter()
        .map(|(id, _)| PointId::Uuid(*id))
        .collect();
    let stored: HashMap<Uuid, (i64, bool)> = shard
        .retrieve(
            &ids,
            Some(WithPayloadInterface::Fields(vec![
                path(VERSION_FIELD),
                path(DELETED_FIELD),
            ])),
            Some(WithVector::Bool(false)),
        )
        .map_err(classify)?
        .into_iter()
        .filter_map(|r| {
            let payload = r.payload?.0;
            let version = payload.get(VERSION_FIELD)?.as_i64()?;
            let deleted = payload.get(DELETED_FIELD).and_then(|d| d.as_bool()) == Some(true);
            Some((point_uuid(r.id)?, (version, deleted)))
        })
        .collect();
    Ok(tombstones
        .iter()
        .filter(|(id, version)| match stored.get(id) {
            None => false,
            Some(&(stored, deleted)) => match fence {
                Fence::Newer => stored < *version || (stored == *version && deleted),
                Fence::NewerOrEqual => stored <= *version,
            },
        })
        .map(|(id, _)| PointId::Uuid(*id))
        .collect())
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

fn cursor(id: PointId) -> ScanCursor {
    match id {
        PointId::Uuid(u) => ScanCursor::Uuid(u),
        PointId::NumId(n) => ScanCursor::Num(n),
    }
}

fn point_id(cursor: ScanCursor) -> PointId {
    match cursor {
        ScanCursor::Uuid(u) => PointId::Uuid(u),
        ScanCursor::Num(n) => PointId::NumId(n),
    }
}

fn our_distance(distance: qdrant_edge::Distance) -> Distance {
    match distance {
        qdrant_edge::Distance::Cosine => Distance::Cosine,
        qdrant_edge::Distance::Dot => Distance::Dot,
        qdrant_edge::Distance::Euclid => Distance::Euclid,
        qdrant_edge::Distance::Manhattan => Distance::Manhattan,
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
            recovery::create_indexes(&shard)?;
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
            // From memory, not flushed first: a write this read lets the processor skip
            // is acknowledged, and its offset committed only after a sync flushed it.
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

    async fn stored_embeddings(
        &self,
        collection: &str,
        vector_name: &str,
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, StoredEmbedding>, SinkError> {
        let ids: Vec<PointId> = ids.iter().map(|id| PointId::Uuid(*id)).collect();
        let vector_name = vector_name.to_owned();
        self.with_shard(collection, move |s| {
            let records = s
                .shard
                .retrieve(
                    &ids,
                    Some(WithPayloadInterface::Fields(vec![path(TEXT_HASH_FIELD)])),
                    Some(WithVector::Selector(vec![vector_name.clone()])),
                )
                .map_err(classify)?;
            Ok(records
                .into_iter()
                .filter_map(|r| {
                    let text_hash = r.payload.as_ref()?.0.get(TEXT_HASH_FIELD)?.as_str()?;
                    let vector = match r.vector? {
                        VectorStructInternal::Named(mut named) => {
                            match named.remove(&vector_name)? {
                                VectorInternal::Dense(v) => v,
                                _ => return None,
                            }
                        }
                        VectorStructInternal::Single(v) => v,
                        VectorStructInternal::MultiDense(_) => return None,
                    };
                    let embedding = StoredEmbedding {
                        text_hash: text_hash.to_owned(),
                        vector,
                    };
                    Some((point_uuid(r.id)?, embedding))
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
        let points = latest_per_point(points);
        let Some(vector_name) = points.first().map(|p| p.vector_name.clone()) else {
            return Ok(());
        };
        let condition = fence_filter(points.iter().map(|p| (p.id, p.version)), fence);
        let tombstones = tombstones(&points);
        let points: Vec<PointStructPersisted> = points.into_iter().map(to_point).collect();
        self.with_shard(collection, move |s| {
            s.update_with(false, |shard| {
                // Under the write lock nothing else writes this shard: the tombstones the
                // fence lets through (or that are already stored at their version) are
                // known before the upsert, and their vectors are deleted by id after it.
                let strip = tombstones_to_strip(shard, &tombstones, fence)?;
                let op = ConditionalInsertOperation {
                    points_op: PointInsertOperations::PointsList(points),
                    condition,
                    update_mode: None,
                };
                let mut ops = vec![UpdateOperation::PointOperation(
                    PointOperations::UpsertPointsConditional(op),
                )];
                if !strip.is_empty() {
                    ops.push(UpdateOperation::VectorOperation(
                        VectorOperations::DeleteVectors(
                            PointIdsList::from(strip),
                            vec![vector_name],
                        ),
                    ));
                }
                Ok(ops)
            })
        })
        .await
    }

    /// Flush every shard updated since its last flush.
    async fn sync(&self) -> Result<(), SinkError> {
        let dirty: Vec<Arc<Shard>> = self
            .shards
            .lock()
            .unwrap()
            .values()
            .filter(|s| s.dirty.load(Ordering::SeqCst))
            .cloned()
            .collect();
        if dirty.is_empty() {
            return Ok(());
        }
        tokio::task::spawn_blocking(move || dirty.iter().try_for_each(|s| s.flush_if_dirty()))
            .await
            .map_err(|e| SinkError::Unavailable(format!("embedded flush task failed: {e}")))?
    }

    async fn purge(&self, collection: &str, points: &[(Uuid, i64)]) -> Result<(), SinkError> {
        if points.is_empty() {
            return Ok(());
        }
        let filter = fence_filter(points.iter().copied(), Fence::NewerOrEqual);
        self.with_shard(collection, move |s| {
            s.update_durably(vec![UpdateOperation::PointOperation(
                PointOperations::DeletePointsByFilter(filter),
            )])
        })
        .await
    }

    async fn delete_foreign(&self, collection: &str, ids: &[String]) -> Result<(), SinkError> {
        let ids: Vec<PointId> = super::foreign_cursors(ids)?
            .into_iter()
            .map(point_id)
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        self.with_shard(collection, move |s| {
            s.update_durably(vec![UpdateOperation::PointOperation(
                PointOperations::DeletePoints { ids },
            )])
        })
        .await
    }

    async fn scan(
        &self,
        collection: &str,
        from: Option<ScanCursor>,
        limit: usize,
    ) -> Result<ScanPage, SinkError> {
        self.with_shard(collection, move |s| {
            s.scroll_page(None, from.map(point_id), limit)
        })
        .await
    }

    async fn bucket_counts(&self, collection: &str) -> Result<Option<BucketCounts>, SinkError> {
        self.with_shard(collection, |s| {
            s.flush_if_dirty()?;
            let mut live = facet_buckets(&s.shard, None)?;
            let deleted = Filter {
                must: Some(vec![deleted_is(true)]),
                ..Default::default()
            };
            for (bucket, n) in facet_buckets(&s.shard, Some(deleted))? {
                let total = live.entry(bucket).or_default();
                *total = total.saturating_sub(n);
            }
            live.retain(|_, n| *n > 0);
            let unbucketed = s
                .shard
                .count(CountRequest {
                    filter: Some(Filter {
                        must: Some(vec![unbucketed()]),
                        ..Default::default()
                    }),
                    exact: true,
                })
                .map_err(classify)? as u64;
            Ok(Some(BucketCounts { live, unbucketed }))
        })
        .await
    }

    async fn scan_unbucketed(
        &self,
        collection: &str,
        from: Option<ScanCursor>,
        limit: usize,
    ) -> Result<ScanPage, SinkError> {
        let filter = Filter {
            must: Some(vec![unbucketed()]),
            ..Default::default()
        };
        self.with_shard(collection, move |s| {
            s.scroll_page(Some(filter), from.map(point_id), limit)
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

    async fn describe(
        &self,
        collection: &str,
        vector_name: &str,
    ) -> Result<Option<CollectionSpec>, SinkError> {
        let shard = self.shard(collection)?;
        let config = shard.shard.config();
        let vectors = config
            .vectors
            .iter()
            .map(|(name, v)| (name.clone(), (v.size, our_distance(v.distance))));
        Ok(Some(CollectionSpec::pick(collection, vector_name, vectors)))
    }

    async fn tombstones_with_vector(
        &self,
        collection: &str,
        vector_name: &str,
    ) -> Result<Vec<StoredPoint>, SinkError> {
        let has_vector = Condition::HasVector(HasVectorCondition::from(vector_name.to_owned()));
        let filter = Filter {
            must: Some(vec![deleted_is(true), has_vector]),
            ..Default::default()
        };
        self.scroll_all(collection, filter).await
    }

    async fn live_without_vector(
        &self,
        collection: &str,
        vector_name: &str,
    ) -> Result<Vec<StoredPoint>, SinkError> {
        let has_vector = Condition::HasVector(HasVectorCondition::from(vector_name.to_owned()));
        let filter = Filter {
            must: Some(vec![deleted_is(false)]),
            must_not: Some(vec![has_vector]),
            ..Default::default()
        };
        self.scroll_all(collection, filter).await
    }

    async fn nearest(
        &self,
        collection: &str,
        vector_name: &str,
        vector: &[f32],
        limit: usize,
    ) -> Result<Vec<Uuid>, SinkError> {
        let query = QueryEnum::Nearest(NamedQuery::new(
            VectorInternal::Dense(vector.to_vec()),
            vector_name,
        ));
        self.with_shard(collection, move |s| {
            let found = s
                .shard
                .search(SearchRequest {
                    query,
                    filter: None,
                    params: None,
                    limit,
                    offset: 0,
                    with_payload: None,
                    with_vector: None,
                    score_threshold: None,
                })
                .map_err(classify)?;
            Ok(found.into_iter().filter_map(|p| point_uuid(p.id)).collect())
        })
        .await
    }
}

mod recovery;
#[cfg(test)]
mod tests;
