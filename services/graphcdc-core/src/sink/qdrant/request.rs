//! Building requests: the version-fence and tombstone filters, point ids and cursors,
//! payloads and distances, in Qdrant's types and back.

use crate::mapping::Distance;
use crate::mapping::{DELETED_FIELD, VERSION_FIELD};
use crate::sink::{Fence, ScanCursor};
use qdrant_client::qdrant::{point_id::PointIdOptions, Condition, Filter, PointId, Range};
use std::collections::HashMap;
use uuid::Uuid;

pub(super) fn version_range(fence: Fence, version: i64) -> Condition {
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
pub(super) fn tombstone_filter(points: &[(Uuid, i64)]) -> Filter {
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
pub(super) fn fence_filter(points: impl Iterator<Item = (Uuid, i64)>, fence: Fence) -> Filter {
    Filter::should(points.map(|(id, version)| {
        Filter::must([
            Condition::has_id([id.to_string()]),
            version_range(fence, version),
        ])
        .into()
    }))
}

/// A point id as a scan cursor (`None` for an id that is neither a number nor a UUID).
pub(super) fn cursor(id: Option<PointId>) -> Option<ScanCursor> {
    match id?.point_id_options? {
        PointIdOptions::Uuid(s) => Uuid::parse_str(&s).ok().map(ScanCursor::Uuid),
        PointIdOptions::Num(n) => Some(ScanCursor::Num(n)),
    }
}

/// The UUID of a point the pipeline wrote (`None` for a numeric id).
pub(super) fn point_uuid(id: Option<PointId>) -> Option<Uuid> {
    match cursor(id)? {
        ScanCursor::Uuid(id) => Some(id),
        ScanCursor::Num(_) => None,
    }
}

pub(super) fn point_id(cursor: ScanCursor) -> PointId {
    match cursor {
        ScanCursor::Num(n) => PointId::from(n),
        ScanCursor::Uuid(id) => PointId::from(id.to_string()),
    }
}

pub(super) fn json_payload(
    payload: HashMap<String, qdrant_client::qdrant::Value>,
) -> serde_json::Map<String, serde_json::Value> {
    payload
        .into_iter()
        .map(|(k, v)| (k, v.into_json()))
        .collect()
}

pub(super) fn qdrant_distance(distance: Distance) -> qdrant_client::qdrant::Distance {
    match distance {
        Distance::Cosine => qdrant_client::qdrant::Distance::Cosine,
        Distance::Dot => qdrant_client::qdrant::Distance::Dot,
        Distance::Euclid => qdrant_client::qdrant::Distance::Euclid,
        Distance::Manhattan => qdrant_client::qdrant::Distance::Manhattan,
    }
}

pub(super) fn our_distance(distance: i32) -> Distance {
    use qdrant_client::qdrant::Distance as Q;
    match Q::try_from(distance) {
        Ok(Q::Dot) => Distance::Dot,
        Ok(Q::Euclid) => Distance::Euclid,
        Ok(Q::Manhattan) => Distance::Manhattan,
        _ => Distance::Cosine,
    }
}
