//! Building requests for a shard: conditions and the version-fence filter, points from
//! writes, ids and cursors, distances, bucket counts, and which tombstones to strip.

use super::errors::classify;
use crate::mapping::Distance;
use crate::mapping::{PointWrite, BUCKETS, BUCKET_FIELD, DELETED_FIELD, VERSION_FIELD};
use crate::sink::error::SinkError;
use crate::sink::{Fence, ScanCursor};
use qdrant_edge::external::ordered_float::OrderedFloat;
use qdrant_edge::{
    Condition, EdgeShard, FacetRequest, FacetValue, FieldCondition, Filter, HasIdCondition,
    IsEmptyCondition, JsonPath, Match, Payload, PointId, PointStructPersisted, Range,
    VectorPersisted, VectorStructPersisted, WithPayloadInterface, WithVector,
};
use std::collections::HashMap;
use uuid::Uuid;

pub(super) fn path(field: &str) -> JsonPath {
    field.parse().expect("valid payload field name")
}

/// Points per value of [`BUCKET_FIELD`] among those matching `filter`.
pub(super) fn facet_buckets(
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

pub(super) fn unbucketed() -> Condition {
    Condition::IsEmpty(IsEmptyCondition::from(path(BUCKET_FIELD)))
}

pub(super) fn has_id(id: Uuid) -> Condition {
    Condition::HasId(HasIdCondition::from_iter([PointId::Uuid(id)]))
}

pub(super) fn version_range(fence: Fence, version: i64) -> Condition {
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
pub(super) fn deleted_is(deleted: bool) -> Condition {
    Condition::Field(FieldCondition::new_match(
        path(DELETED_FIELD),
        Match::from(deleted),
    ))
}

/// Which of `tombstones` (id, version) will be a tombstone at that version once the
/// fenced upsert ran: the fence lets it through, or it is stored so already (its vector
/// may have survived an earlier attempt). A newer point of the same id is left alone.
pub(super) fn tombstones_to_strip(
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
pub(super) fn fence_filter(points: impl Iterator<Item = (Uuid, i64)>, fence: Fence) -> Filter {
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

pub(super) fn to_point(write: &PointWrite) -> PointStructPersisted {
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

pub(super) fn point_uuid(id: PointId) -> Option<Uuid> {
    match id {
        PointId::Uuid(u) => Some(u),
        PointId::NumId(_) => None,
    }
}

pub(super) fn cursor(id: PointId) -> ScanCursor {
    match id {
        PointId::Uuid(u) => ScanCursor::Uuid(u),
        PointId::NumId(n) => ScanCursor::Num(n),
    }
}

pub(super) fn point_id(cursor: ScanCursor) -> PointId {
    match cursor {
        ScanCursor::Uuid(u) => PointId::Uuid(u),
        ScanCursor::Num(n) => PointId::NumId(n),
    }
}

pub(super) fn our_distance(distance: qdrant_edge::Distance) -> Distance {
    match distance {
        qdrant_edge::Distance::Cosine => Distance::Cosine,
        qdrant_edge::Distance::Dot => Distance::Dot,
        qdrant_edge::Distance::Euclid => Distance::Euclid,
        qdrant_edge::Distance::Manhattan => Distance::Manhattan,
    }
}

pub(super) fn edge_distance(distance: Distance) -> qdrant_edge::Distance {
    match distance {
        Distance::Cosine => qdrant_edge::Distance::Cosine,
        Distance::Dot => qdrant_edge::Distance::Dot,
        Distance::Euclid => qdrant_edge::Distance::Euclid,
        Distance::Manhattan => qdrant_edge::Distance::Manhattan,
    }
}
