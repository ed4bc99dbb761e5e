//! Qdrant server over gRPC (`qdrant-client`): the production sink.
//!
//! Every write uses `wait=true`, so it returns only after Qdrant applied it; the version
//! fence is the `update_filter` of `UpsertPoints` (existing points are replaced only when
//! they match it; new points are always inserted). Needs a Qdrant server that knows
//! conditional upserts (1.16 or newer): an older one ignores the filter.
//!
//! One role per file: this one holds the sink and its [`VectorSink`] calls; [`client`]
//! sets up the connection and checks the server's version (and administers aliases and
//! collections), `request` builds filters, ids and payloads, `read` fetches points,
//! and `errors` classifies what the server returns.

pub mod client;
mod errors;
mod read;
mod request;

use super::{
    latest_per_point, tombstones, BucketCounts, CollectionSpec, Fence, ScanCursor, ScanPage,
    StoredEmbedding, StoredPoint, VectorSink,
};
use crate::mapping::Distance;
use crate::mapping::{
    PointWrite, BUCKET_FIELD, DELETED_FIELD, KEY_FIELD, TEXT_HASH_FIELD, VERSION_FIELD,
};
use crate::sink::error::SinkError;
use async_trait::async_trait;
use client::fences_writes;
use errors::{check_completed, classify};
use qdrant_client::qdrant::{
    vector_output, vectors_config, Condition, CountPointsBuilder, CreateCollectionBuilder,
    CreateFieldIndexCollectionBuilder, DeletePointVectorsBuilder, DeletePointsBuilder, FieldType,
    Filter, PayloadIncludeSelector, PointId, PointStruct, PointsIdsList, Query, QueryPointsBuilder,
    UpsertPointsBuilder, VectorParamsBuilder, VectorsConfigBuilder, VectorsSelector,
};
use qdrant_client::{Payload, Qdrant};
use request::{
    fence_filter, json_payload, our_distance, point_id, point_uuid, qdrant_distance,
    tombstone_filter,
};
use std::collections::HashMap;
use uuid::Uuid;

/// Sink writing to a Qdrant server.
pub struct QdrantSink {
    client: Qdrant,
    /// Set once the server was found to apply the version fence (checked once).
    fence_checked: tokio::sync::OnceCell<()>,
}

#[async_trait]
impl VectorSink for QdrantSink {
    fn name(&self) -> &'static str {
        "qdrant"
    }

    async fn ensure_collection(&self, spec: &CollectionSpec) -> Result<(), SinkError> {
        // Refuse at start rather than write without the version fence.
        self.fence_checked
            .get_or_try_init(|| async {
                let version = self.server_version().await?;
                if fences_writes(&version) {
                    Ok(())
                } else {
                    Err(SinkError::Rejected(format!(
                        "Qdrant {version} ignores conditional upserts (the version fence): 1.16 or newer is needed"
                    )))
                }
            })
            .await?;
        if !self
            .client
            .collection_exists(&spec.name)
            .await
            .map_err(classify)?
        {
            let mut vectors = VectorsConfigBuilder::default();
            vectors.add_named_vector_params(
                &spec.vector_name,
                VectorParamsBuilder::new(spec.dimension as u64, qdrant_distance(spec.distance)),
            );
            let created = self
                .client
                .create_collection(CreateCollectionBuilder::new(&spec.name).vectors_config(vectors))
                .await;
            if let Err(e) = created {
                // Another process may have created it meanwhile.
                if !self
                    .client
                    .collection_exists(&spec.name)
                    .await
                    .map_err(classify)?
                {
                    return Err(classify(e));
                }
            }
        }
        for (field, field_type) in [
            (VERSION_FIELD, FieldType::Integer),
            (KEY_FIELD, FieldType::Keyword),
            (DELETED_FIELD, FieldType::Bool),
            (BUCKET_FIELD, FieldType::Integer),
        ] {
            self.client
                .create_field_index(
                    CreateFieldIndexCollectionBuilder::new(&spec.name, field, field_type)
                        .wait(true),
                )
                .await
                .map_err(classify)?;
        }
        Ok(())
    }

    async fn versions(
        &self,
        collection: &str,
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, i64>, SinkError> {
        let fields = PayloadIncludeSelector::new(vec![VERSION_FIELD.to_owned()]);
        let points = self.get_by_ids(collection, ids, fields, false).await?;
        Ok(points
            .into_iter()
            .filter_map(|p| {
                let version = p.get(VERSION_FIELD).as_integer()?;
                Some((point_uuid(p.id)?, version))
            })
            .collect())
    }

    async fn stored_embeddings(
        &self,
        collection: &str,
        vector_name: &str,
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, StoredEmbedding>, SinkError> {
        let fields = PayloadIncludeSelector::new(vec![TEXT_HASH_FIELD.to_owned()]);
        let vectors = VectorsSelector::from(vec![vector_name.to_owned()]);
        let points = self.get_by_ids(collection, ids, fields, vectors).await?;
        Ok(points
            .into_iter()
            .filter_map(|p| {
                let text_hash = p.get(TEXT_HASH_FIELD).as_str()?.to_owned();
                let vector = match p.vectors.as_ref()?.get_vector_by_name(vector_name)? {
                    vector_output::Vector::Dense(dense) => dense.data,
                    _ => return None,
                };
                Some((point_uuid(p.id)?, StoredEmbedding { text_hash, vector }))
            })
            .collect())
    }

    /// Every write uses `wait=true`: the server has it in its WAL when it is
    /// acknowledged.
    async fn sync(&self) -> Result<(), SinkError> {
        Ok(())
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
        let filter = fence_filter(points.iter().map(|p| (p.id, p.version)), fence);
        let tombstones = tombstones(&points);
        let structs: Vec<PointStruct> = points
            .iter()
            .map(|p| {
                let mut vectors: HashMap<String, Vec<f32>> = HashMap::new();
                if let Some(v) = &p.vector {
                    vectors.insert(p.vector_name.clone(), v.clone());
                }
                PointStruct::new(p.id.to_string(), vectors, Payload::from(p.payload.clone()))
            })
            .collect();
        let response = self
            .client
            .upsert_points(
                UpsertPointsBuilder::new(collection, structs)
                    .update_filter(filter)
                    .wait(true),
            )
            .await
            .map_err(classify)?;
        check_completed(response)?;
        if tombstones.is_empty() {
            return Ok(());
        }
        // A point moved out of an optimized or proxied segment keeps its old vectors.
        let response = self
            .client
            .delete_vectors(
                DeletePointVectorsBuilder::new(collection)
                    .points_selector(tombstone_filter(&tombstones))
                    .vectors(VectorsSelector::from(vec![vector_name]))
                    .wait(true),
            )
            .await
            .map_err(classify)?;
        check_completed(response)
    }

    async fn purge(&self, collection: &str, points: &[(Uuid, i64)]) -> Result<(), SinkError> {
        if points.is_empty() {
            return Ok(());
        }
        let filter = fence_filter(points.iter().copied(), Fence::NewerOrEqual);
        let response = self
            .client
            .delete_points(
                DeletePointsBuilder::new(collection)
                    .points(filter)
                    .wait(true),
            )
            .await
            .map_err(classify)?;
        check_completed(response)
    }

    async fn delete_foreign(&self, collection: &str, ids: &[String]) -> Result<(), SinkError> {
        let ids: Vec<PointId> = super::foreign_cursors(ids)?
            .into_iter()
            .map(point_id)
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let response = self
            .client
            .delete_points(
                DeletePointsBuilder::new(collection)
                    .points(PointsIdsList { ids })
                    .wait(true),
            )
            .await
            .map_err(classify)?;
        check_completed(response)
    }

    async fn scan(
        &self,
        collection: &str,
        from: Option<ScanCursor>,
        limit: usize,
    ) -> Result<ScanPage, SinkError> {
        self.scroll_page(collection, None, from.map(point_id), limit)
            .await
    }

    async fn bucket_counts(&self, collection: &str) -> Result<Option<BucketCounts>, SinkError> {
        let mut live = self.facet_buckets(collection, None).await?;
        let deleted = Filter::must([Condition::matches(DELETED_FIELD, true)]);
        for (bucket, n) in self.facet_buckets(collection, Some(deleted)).await? {
            let total = live.entry(bucket).or_default();
            *total = total.saturating_sub(n);
        }
        live.retain(|_, n| *n > 0);
        let response = self
            .client
            .count(
                CountPointsBuilder::new(collection)
                    .filter(Filter::must([Condition::is_empty(BUCKET_FIELD)]))
                    .exact(true),
            )
            .await
            .map_err(classify)?;
        let unbucketed = response.result.map_or(0, |r| r.count);
        Ok(Some(BucketCounts { live, unbucketed }))
    }

    async fn scan_unbucketed(
        &self,
        collection: &str,
        from: Option<ScanCursor>,
        limit: usize,
    ) -> Result<ScanPage, SinkError> {
        let filter = Filter::must([Condition::is_empty(BUCKET_FIELD)]);
        self.scroll_page(collection, Some(filter), from.map(point_id), limit)
            .await
    }

    async fn get(&self, collection: &str, id: Uuid) -> Result<Option<StoredPoint>, SinkError> {
        let points = self.get_by_ids(collection, &[id], true, false).await?;
        Ok(points
            .into_iter()
            .next()
            .and_then(|p| super::stored_point(id, &json_payload(p.payload), true)))
    }

    async fn count_live(&self, collection: &str) -> Result<u64, SinkError> {
        let response = self
            .client
            .count(
                CountPointsBuilder::new(collection)
                    .filter(Filter::must([Condition::matches(DELETED_FIELD, false)]))
                    .exact(true),
            )
            .await
            .map_err(classify)?;
        Ok(response.result.map_or(0, |r| r.count))
    }

    async fn describe(
        &self,
        collection: &str,
        vector_name: &str,
    ) -> Result<Option<CollectionSpec>, SinkError> {
        let info = self
            .client
            .collection_info(collection)
            .await
            .map_err(classify)?;
        let config = info
            .result
            .and_then(|i| i.config)
            .and_then(|c| c.params)
            .and_then(|p| p.vectors_config)
            .and_then(|v| v.config);
        let vectors: Vec<(String, (usize, Distance))> = match config {
            Some(vectors_config::Config::ParamsMap(map)) => map
                .map
                .into_iter()
                .map(|(name, p)| (name, (p.size as usize, our_distance(p.distance))))
                .collect(),
            // The unnamed default vector: its name is "".
            Some(vectors_config::Config::Params(p)) => {
                vec![(String::new(), (p.size as usize, our_distance(p.distance)))]
            }
            None => Vec::new(),
        };
        Ok(Some(CollectionSpec::pick(collection, vector_name, vectors)))
    }

    async fn tombstones_with_vector(
        &self,
        collection: &str,
        vector_name: &str,
    ) -> Result<Vec<StoredPoint>, SinkError> {
        let filter = Filter::must([
            Condition::matches(DELETED_FIELD, true),
            Condition::has_vector(vector_name),
        ]);
        self.scroll_all(collection, filter).await
    }

    async fn live_without_vector(
        &self,
        collection: &str,
        vector_name: &str,
    ) -> Result<Vec<StoredPoint>, SinkError> {
        let filter = Filter {
            must: vec![Condition::matches(DELETED_FIELD, false)],
            must_not: vec![Condition::has_vector(vector_name)],
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
        let response = self
            .client
            .query(
                QueryPointsBuilder::new(collection)
                    .query(Query::new_nearest(vector.to_vec()))
                    .using(vector_name)
                    .limit(limit as u64),
            )
            .await
            .map_err(classify)?;
        Ok(response
            .result
            .into_iter()
            .filter_map(|p| point_uuid(p.id))
            .collect())
    }
}
