//! Reading points: by id, every match of a filter, a page of a scan, bucket counts.

use super::errors::classify;
use super::request::{cursor, json_payload, point_id};
use super::QdrantSink;
use crate::mapping::{BUCKETS, BUCKET_FIELD};
use crate::sink::error::SinkError;
use crate::sink::{ScanPage, StoredPoint, SCAN_FIELDS};
use qdrant_client::qdrant::{
    facet_value, with_payload_selector, with_vectors_selector, FacetCountsBuilder, Filter,
    GetPointsBuilder, PayloadIncludeSelector, PointId, RetrievedPoint, ScrollPointsBuilder,
};
use std::collections::HashMap;
use uuid::Uuid;

impl QdrantSink {
    /// The points of `collection` among `ids` (those that exist), with the payload and
    /// vectors the selectors ask for.
    pub(super) async fn get_by_ids(
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
    pub(super) async fn scroll_all(
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
    pub(super) async fn scroll_page(
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
    pub(super) async fn facet_buckets(
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
}
