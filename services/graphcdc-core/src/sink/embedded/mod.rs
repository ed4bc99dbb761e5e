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
//!
//! One role per file: this one holds the sink and its [`VectorSink`] calls; `shards`
//! opens the shard of each collection and runs calls on it (plus the test tools that
//! drive a shard into a server's states), `shard` is one shard's lock, flush and
//! updates, `request` builds filters, points and conversions, and `recovery` rebuilds a
//! shard the last process did not close.

use super::{
    latest_per_point, tombstones, BucketCounts, CollectionSpec, Fence, ScanCursor, ScanPage,
    StoredEmbedding, StoredPoint, VectorSink,
};
use crate::mapping::{PointWrite, DELETED_FIELD, TEXT_HASH_FIELD, VERSION_FIELD};
use crate::sink::error::SinkError;
use async_trait::async_trait;
use errors::{classify, rejected};
use qdrant_edge::{
    Condition, ConditionalInsertOperation, CountRequest, EdgeConfig, EdgeShard, EdgeVectorParams,
    FieldCondition, Filter, HasVectorCondition, Match, NamedQuery, PointId, PointIdsList,
    PointInsertOperations, PointOperations, PointStructPersisted, QueryEnum, SearchRequest,
    UpdateOperation, VectorInternal, VectorOperations, VectorStructInternal, WalOptions,
    WithPayloadInterface, WithVector,
};
use request::{
    deleted_is, edge_distance, facet_buckets, fence_filter, our_distance, path, point_id,
    point_uuid, to_point, tombstones_to_strip, unbucketed,
};
use shard::Shard;
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

mod errors;
mod recovery;
mod request;
mod shard;
mod shards;
#[cfg(test)]
mod tests;

/// Embedded Qdrant sink rooted at a local directory.
pub struct EmbeddedSink {
    root: PathBuf,
    shards: Mutex<HashMap<String, Arc<Shard>>>,
}

#[async_trait]
impl VectorSink for EmbeddedSink {
    fn name(&self) -> &'static str {
        "embedded"
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
