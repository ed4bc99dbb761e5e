//! Qdrant server over gRPC (`qdrant-client`): the production sink.
//!
//! Every write uses `wait=true`, so it returns only after Qdrant applied it; the version
//! fence is the `update_filter` of `UpsertPoints` (existing points are replaced only when
//! they match it; new points are always inserted). Needs a Qdrant server that knows
//! conditional upserts (1.16 or newer): an older one ignores the filter.

use super::{
    latest_per_point, tombstones, BucketCounts, CollectionSpec, Fence, ScanCursor, ScanPage,
    StoredEmbedding, StoredPoint, VectorSink, SCAN_FIELDS,
};
use crate::config::{Distance, SinkConfig};
use crate::error::SinkError;
use crate::mapping::{
    PointWrite, BUCKETS, BUCKET_FIELD, DELETED_FIELD, KEY_FIELD, TEXT_HASH_FIELD, VERSION_FIELD,
};
use async_trait::async_trait;
use qdrant_client::qdrant::{
    facet_value, point_id::PointIdOptions, vector_output, vectors_config, with_payload_selector,
    with_vectors_selector, Condition, CountPointsBuilder, CreateCollectionBuilder,
    CreateFieldIndexCollectionBuilder, DeletePointVectorsBuilder, DeletePointsBuilder,
    FacetCountsBuilder, FieldType, Filter, GetPointsBuilder, PayloadIncludeSelector, PointId,
    PointStruct, PointsIdsList, PointsOperationResponse, Query, QueryPointsBuilder, Range,
    RetrievedPoint, ScrollPointsBuilder, UpdateStatus, UpsertPointsBuilder, VectorParamsBuilder,
    VectorsConfigBuilder, VectorsSelector,
};
use qdrant_client::{Payload, Qdrant, QdrantError};
use std::collections::HashMap;
use std::time::Duration;
use uuid::Uuid;

/// Sink writing to a Qdrant server.
pub struct QdrantSink {
    client: Qdrant,
    /// Set once the server was found to apply the version fence (checked once).
    fence_checked: tokio::sync::OnceCell<()>,
}

impl QdrantSink {
    /// A client for the `[sink]` section, which must be `kind = "qdrant"`.
    ///
    /// # Errors
    /// When the section is another kind or the URL is invalid.
    pub fn from_config(sink: &SinkConfig) -> anyhow::Result<Self> {
        match sink {
            SinkConfig::Qdrant {
                url,
                api_key,
                timeout_ms,
            } => Self::connect(
                url,
                api_key.as_ref().map(|k| k.expose().to_owned()),
                *timeout_ms,
            ),
            _ => anyhow::bail!("sink.kind: a Qdrant server is needed here"),
        }
    }

    /// A client for `url`; no connection is made until the first call.
    ///
    /// # Errors
    /// When `url` is not a valid URI.
    pub fn connect(url: &str, api_key: Option<String>, timeout_ms: u64) -> anyhow::Result<Self> {
        let client = Qdrant::from_url(url)
            .api_key(api_key)
            .timeout(Duration::from_millis(timeout_ms))
            .skip_compatibility_check()
            .build()
            .map_err(|e| anyhow::anyhow!("sink.url: {e}"))?;
        Ok(QdrantSink {
            client,
            fence_checked: tokio::sync::OnceCell::new(),
        })
    }

    /// Server version, for the start-up log.
    ///
    /// # Errors
    /// When the server cannot be reached.
    pub async fn server_version(&self) -> Result<String, SinkError> {
        Ok(self.client.health_check().await.map_err(classify)?.version)
    }

    /// Every alias of the server and the collection it points at.
    ///
    /// # Errors
    /// When the server cannot be reached or refuses.
    pub async fn aliases(&self) -> Result<HashMap<String, String>, SinkError> {
        let response = self.client.list_aliases().await.map_err(classify)?;
        Ok(response
            .aliases
            .into_iter()
            .map(|a| (a.alias_name, a.collection_name))
            .collect())
    }

    /// Names of the collections (aliases not included).
    ///
    /// # Errors
    /// When the server cannot be reached or refuses.
    pub async fn collection_names(&self) -> Result<Vec<String>, SinkError> {
        let response = self.client.list_collections().await.map_err(classify)?;
        Ok(response.collections.into_iter().map(|c| c.name).collect())
    }

    /// Point each `(alias, collection)` alias at its collection in one `UpdateAliases`
    /// request (a `DeleteAlias` for each alias that exists, then a `CreateAlias` for each),
    /// which Qdrant applies atomically: a reader sees all old or all new targets, never a
    /// missing alias. Returns the collection each alias pointed at before.
    ///
    /// `qdrant-client` sends one alias action per request only, so this talks to the
    /// generated gRPC client on a channel of its own (same URL, API key and timeouts).
    ///
    /// # Errors
    /// When the server cannot be reached or refuses (e.g. a collection is missing, or an
    /// alias has the name of a collection).
    pub async fn swap_aliases(
        &self,
        swaps: &[(String, String)],
    ) -> Result<Vec<Option<String>>, SinkError> {
        use qdrant_client::qdrant::alias_operations::Action;
        use qdrant_client::qdrant::collections_client::CollectionsClient;
        use qdrant_client::qdrant::{AliasOperations, ChangeAliases, CreateAlias, DeleteAlias};
        use tonic::transport::{Channel, ClientTlsConfig};

        let before = self.aliases().await?;
        let previous: Vec<Option<String>> = swaps
            .iter()
            .map(|(alias, _)| before.get(alias).cloned())
            .collect();
        let mut actions = Vec::with_capacity(swaps.len() * 2);
        for ((alias, _), previous) in swaps.iter().zip(&previous) {
            if previous.is_some() {
                actions.push(AliasOperations {
                    action: Some(Action::DeleteAlias(DeleteAlias {
                        alias_name: alias.clone(),
                    })),
                });
            }
        }
        for (alias, collection) in swaps {
            actions.push(AliasOperations {
                action: Some(Action::CreateAlias(CreateAlias {
                    collection_name: collection.clone(),
                    alias_name: alias.clone(),
                })),
            });
        }

        let config = &self.client.config;
        let mut endpoint = Channel::from_shared(config.uri.clone())
            .map_err(|e| SinkError::Rejected(format!("sink.url: {e}")))?
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout);
        if config.uri.starts_with("https:") {
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().with_native_roots())
                .map_err(|e| SinkError::Rejected(format!("sink.url: TLS: {e}")))?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| SinkError::Unavailable(format!("connecting to {}: {e}", config.uri)))?;
        let api_key = config.api_key.clone();
        let mut api = CollectionsClient::with_interceptor(
            channel,
            move |mut request: tonic::Request<()>| -> Result<tonic::Request<()>, tonic::Status> {
                if let Some(key) = &api_key {
                    request.metadata_mut().insert(
                        "api-key",
                        key.parse()
                            .map_err(|_| tonic::Status::invalid_argument("malformed API key"))?,
                    );
                }
                Ok(request)
            },
        );
        let response = api
            .update_aliases(ChangeAliases {
                actions,
                timeout: None,
            })
            .await
            .map_err(|status| classify(QdrantError::ResponseError { status }))?
            .into_inner();
        if !response.result {
            return Err(SinkError::Rejected(
                "the server did not apply the alias change".to_owned(),
            ));
        }
        Ok(previous)
    }

    /// Have the server index every segment of `collection` now (indexing threshold of
    /// 1 kB) and wait until its optimizer is done: the points then sit in indexed,
    /// non-appendable segments, as in any collection of real size. For tests.
    ///
    /// # Errors
    /// When the server cannot be reached or refuses.
    pub async fn index_now(&self, collection: &str) -> Result<(), SinkError> {
        use qdrant_client::qdrant::{
            CollectionStatus, OptimizersConfigDiffBuilder, UpdateCollectionBuilder,
        };
        self.client
            .update_collection(
                UpdateCollectionBuilder::new(collection).optimizers_config(
                    OptimizersConfigDiffBuilder::default().indexing_threshold(1),
                ),
            )
            .await
            .map_err(classify)?;
        for _ in 0..600 {
            let info = self
                .client
                .collection_info(collection)
                .await
                .map_err(classify)?
                .result;
            let done = info.as_ref().is_some_and(|i| {
                i.status() == CollectionStatus::Green && i.indexed_vectors_count.unwrap_or(0) > 0
            });
            if done {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(SinkError::Unavailable(format!(
            "{collection} was not indexed within 60 s"
        )))
    }

    /// The points of `collection` among `ids` (those that exist), with the payload and
    /// vectors the selectors ask for.
    async fn get_by_ids(
        &self,
        collection: &str,
        ids: &[Uuid],
        payload: impl Into<with_payload_selector::SelectorOptions>,
        vectors: impl Into<with_vectors_selector::SelectorOptions>,
    ) -> Result<Vec<RetrievedPoint>, SinkError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<PointId> = ids.iter().map(|id| PointId::from(id.to_string())).collect();
        let response = self
            .client
            .get_points(
                GetPointsBuilder::new(collection, ids)
                    .with_payload(payload)
                    .with_vectors(vectors),
            )
            .await
            .map_err(classify)?;
        Ok(response.result)
    }

    /// Every point of `collection` matching `filter`, with the fields a scan reads.
    async fn scroll_all(
        &self,
        collection: &str,
        filter: Filter,
    ) -> Result<Vec<StoredPoint>, SinkError> {
        let mut found = Vec::new();
        let mut offset: Option<PointId> = None;
        loop {
            let page = self
                .scroll_page(collection, Some(filter.clone()), offset.take(), 1_000)
                .await?;
            found.extend(page.points);
            match page.next {
                Some(next) => offset = Some(point_id(next)),
                None => return Ok(found),
            }
        }
    }

    /// One page of the points of `collection` matching `filter` (all when `None`) from
    /// `offset`, with the reserved fields a scan reads, and where the next page starts.
    async fn scroll_page(
        &self,
        collection: &str,
        filter: Option<Filter>,
        offset: Option<PointId>,
        limit: usize,
    ) -> Result<ScanPage, SinkError> {
        let mut request = ScrollPointsBuilder::new(collection)
            .limit(limit as u32)
            .with_payload(PayloadIncludeSelector::new(
                SCAN_FIELDS
                    .iter()
                    .map(|f| f.to_string())
                    .collect::<Vec<_>>(),
            ))
            .with_vectors(false);
        if let Some(filter) = filter {
            request = request.filter(filter);
        }
        if let Some(offset) = offset {
            request = request.offset(offset);
        }
        let response = self.client.scroll(request).await.map_err(classify)?;
        let scanned: Vec<_> = response
            .result
            .into_iter()
            .filter_map(|p| Some((cursor(p.id)?, json_payload(p.payload))))
            .collect();
        Ok(ScanPage::from_scanned(
            scanned.iter().map(|(id, payload)| (*id, Some(payload))),
            response
                .next_page_offset
                .and_then(|next| cursor(Some(next))),
        ))
    }

    /// Points per value of [`BUCKET_FIELD`] among those matching `filter` (exact counts).
    async fn facet_buckets(
        &self,
        collection: &str,
        filter: Option<Filter>,
    ) -> Result<HashMap<u16, u64>, SinkError> {
        let mut request = FacetCountsBuilder::new(collection, BUCKET_FIELD)
            .limit(BUCKETS as u64)
            .exact(true);
        if let Some(filter) = filter {
            request = request.filter(filter);
        }
        let response = self.client.facet(request).await.map_err(classify)?;
        Ok(response
            .hits
            .into_iter()
            .filter_map(|hit| match hit.value?.variant? {
                facet_value::Variant::IntegerValue(b) => Some((u16::try_from(b).ok()?, hit.count)),
                _ => None,
            })
            .collect())
    }

    /// Delete `collection` and its points for good.
    ///
    /// # Errors
    /// When the server cannot be reached or refuses.
    pub async fn delete_collection(&self, collection: &str) -> Result<(), SinkError> {
        self.client
            .delete_collection(collection)
            .await
            .map_err(classify)?;
        Ok(())
    }
}

/// Whether a Qdrant server of `version` ("1.16.0") applies the `update_filter` of an
/// upsert, which the version fence relies on (1.16 or newer). Unparsable: assume yes.
fn fences_writes(version: &str) -> bool {
    let mut parts = version.trim_start_matches('v').split('.');
    let number = |p: Option<&str>| p.and_then(|p| p.parse::<u32>().ok());
    match (number(parts.next()), number(parts.next())) {
        (Some(major), Some(minor)) => (major, minor) >= (1, 16),
        _ => true,
    }
}

/// What retrying and splitting can do about a failure.
/// - Sink-wide, retried, never sent to the DLQ: unreachable, timeouts, rate limits, a
///   wrong API key, missing permissions, a deleted collection (`Unavailable`), and a
///   write-locked collection, a failed precondition or a strict-mode capacity limit
///   (`Misconfigured`).
/// - `Internal`/`Unknown`: retried, then narrowed down by splitting (one event may cause
///   them).
/// - Anything else is about the request: split, and what still fails goes to the DLQ.
fn classify(e: QdrantError) -> SinkError {
    use tonic::Code;
    let message = e.to_string();
    match &e {
        QdrantError::ResourceExhaustedError { .. } | QdrantError::Io(_) => {
            SinkError::Unavailable(message)
        }
        QdrantError::ResponseError { status } => match status.code() {
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Unauthenticated
            | Code::PermissionDenied
            | Code::NotFound => SinkError::Unavailable(message),
            Code::FailedPrecondition => SinkError::Misconfigured(message),
            Code::InvalidArgument if is_capacity_limit(status.message()) => {
                SinkError::Misconfigured(message)
            }
            Code::Unknown | Code::Internal => SinkError::Internal(message),
            _ => SinkError::Rejected(message),
        },
        _ => SinkError::Rejected(message),
    }
}

/// Whether a refusal is a strict-mode limit of the whole collection (points count,
/// vector or payload storage size), which no event of its own can pass. Qdrant words
/// them "Max points count limit of 1000 reached!", "Max vectors storage size limit of …
/// reached!", "Max payload storage size limit of … reached!".
fn is_capacity_limit(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("reached")
        && ["points count limit", "storage size limit"]
            .iter()
            .any(|limit| message.contains(limit))
}

fn check_completed(response: PointsOperationResponse) -> Result<(), SinkError> {
    match response.result.map(|r| r.status()) {
        Some(UpdateStatus::Completed) => Ok(()),
        other => Err(SinkError::Unavailable(format!(
            "write not confirmed by the server (status {other:?})"
        ))),
    }
}

fn version_range(fence: Fence, version: i64) -> Condition {
    let bound = Some(version as f64);
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
    Condition::range(VERSION_FIELD, range)
}

/// `should[ must[has_id(id), cdc_version = v, cdc_deleted] … ]`: exactly these
/// tombstones, never a later revival of the same point.
fn tombstone_filter(points: &[(Uuid, i64)]) -> Filter {
    Filter::should(points.iter().map(|&(id, version)| {
        Filter::must([
            Condition::has_id([id.to_string()]),
            Condition::range(
                VERSION_FIELD,
                Range {
                    gte: Some(version as f64),
                    lte: Some(version as f64),
                    ..Default::default()
                },
            ),
            Condition::matches(DELETED_FIELD, true),
        ])
        .into()
    }))
}

/// `should[ must[has_id(id), version (<|<=) v] … ]`: per-point version fence.
fn fence_filter(points: impl Iterator<Item = (Uuid, i64)>, fence: Fence) -> Filter {
    Filter::should(points.map(|(id, version)| {
        Filter::must([
            Condition::has_id([id.to_string()]),
            version_range(fence, version),
        ])
        .into()
    }))
}

/// A point id as a scan cursor (`None` for an id that is neither a number nor a UUID).
fn cursor(id: Option<PointId>) -> Option<ScanCursor> {
    match id?.point_id_options? {
        PointIdOptions::Uuid(s) => Uuid::parse_str(&s).ok().map(ScanCursor::Uuid),
        PointIdOptions::Num(n) => Some(ScanCursor::Num(n)),
    }
}

/// The UUID of a point the pipeline wrote (`None` for a numeric id).
fn point_uuid(id: Option<PointId>) -> Option<Uuid> {
    match cursor(id)? {
        ScanCursor::Uuid(id) => Some(id),
        ScanCursor::Num(_) => None,
    }
}

fn point_id(cursor: ScanCursor) -> PointId {
    match cursor {
        ScanCursor::Num(n) => PointId::from(n),
        ScanCursor::Uuid(id) => PointId::from(id.to_string()),
    }
}

fn json_payload(
    payload: HashMap<String, qdrant_client::qdrant::Value>,
) -> serde_json::Map<String, serde_json::Value> {
    payload
        .into_iter()
        .map(|(k, v)| (k, v.into_json()))
        .collect()
}

fn qdrant_distance(distance: Distance) -> qdrant_client::qdrant::Distance {
    match distance {
        Distance::Cosine => qdrant_client::qdrant::Distance::Cosine,
        Distance::Dot => qdrant_client::qdrant::Distance::Dot,
        Distance::Euclid => qdrant_client::qdrant::Distance::Euclid,
        Distance::Manhattan => qdrant_client::qdrant::Distance::Manhattan,
    }
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

fn our_distance(distance: i32) -> Distance {
    use qdrant_client::qdrant::Distance as Q;
    match Q::try_from(distance) {
        Ok(Q::Dot) => Distance::Dot,
        Ok(Q::Euclid) => Distance::Euclid,
        Ok(Q::Manhattan) => Distance::Manhattan,
        _ => Distance::Cosine,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: tonic::Code) -> QdrantError {
        QdrantError::ResponseError {
            status: tonic::Status::new(code, "test"),
        }
    }

    #[test]
    fn only_servers_that_fence_writes_are_accepted() {
        for (version, ok) in [
            ("1.16.0", true),
            ("v1.17.2", true),
            ("2.0.0", true),
            ("1.15.5", false),
            ("1.9.0", false),
            ("dev", true),
        ] {
            assert_eq!(fences_writes(version), ok, "{version}");
        }
    }

    #[test]
    fn sink_wide_failures_are_retried_and_bad_points_rejected() {
        use tonic::Code;
        for code in [
            Code::Unavailable,
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::NotFound,
        ] {
            assert!(classify(status(code)).is_retriable(), "{code:?}");
        }
        for code in [Code::InvalidArgument, Code::OutOfRange] {
            assert!(!classify(status(code)).is_retriable(), "{code:?}");
        }
        assert!(matches!(
            classify(status(Code::FailedPrecondition)),
            SinkError::Misconfigured(_)
        ));
        for code in [Code::Internal, Code::Unknown] {
            assert!(
                matches!(classify(status(code)), SinkError::Internal(_)),
                "{code:?}"
            );
        }
        for message in [
            "Bad request: Max points count limit of 1000 reached!",
            "Bad request: Max vectors storage size limit of 1048576 bytes reached!",
            "Max payload storage size limit of 1024 reached!",
        ] {
            let limit = QdrantError::ResponseError {
                status: tonic::Status::invalid_argument(message),
            };
            assert!(
                matches!(classify(limit), SinkError::Misconfigured(_)),
                "{message}"
            );
        }
        let point_limit = QdrantError::ResponseError {
            status: tonic::Status::invalid_argument("Payload too large for one point"),
        };
        assert!(matches!(classify(point_limit), SinkError::Rejected(_)));
    }
}
