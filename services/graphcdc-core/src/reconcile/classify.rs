//! Comparing the sink with the expected state, page by page, into drift classes.

use super::expected::{parse_hash, ExpectedPoint, ExpectedState};
use crate::sink::{StoredPoint, VectorSink};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Page size of sink scans.
const SCAN_PAGE: usize = 1_000;

/// How the sink differs from the state topic for one point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftClass {
    /// In the state, not in the sink (or only as an older tombstone).
    Missing,
    /// Live in the sink, not in the state (never existed, or deleted).
    Orphan,
    /// Sink version older than the state's.
    Stale,
    /// Same version, different content hash.
    ContentMismatch,
    /// Sink version newer than the state's: reported, never repaired backwards.
    Ahead,
    /// A tombstone that still carries its vector, so vector search returns the deleted
    /// entity (Qdrant copies the vectors of a point moved out of an optimized segment).
    TombstoneVector,
}

impl DriftClass {
    /// Every class, in report order.
    pub const ALL: [DriftClass; 6] = [
        DriftClass::Missing,
        DriftClass::Orphan,
        DriftClass::Stale,
        DriftClass::ContentMismatch,
        DriftClass::Ahead,
        DriftClass::TombstoneVector,
    ];

    /// Name used in reports and metrics.
    pub fn name(self) -> &'static str {
        match self {
            DriftClass::Missing => "missing",
            DriftClass::Orphan => "orphan",
            DriftClass::Stale => "stale",
            DriftClass::ContentMismatch => "content_mismatch",
            DriftClass::Ahead => "ahead",
            DriftClass::TombstoneVector => "tombstone_vector",
        }
    }
}

/// One drifted point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    pub class: DriftClass,
    pub collection: String,
    pub id: Uuid,
    pub key: String,
    pub sink_version: Option<i64>,
    pub expected_version: Option<i64>,
}

/// Result of one check.
#[derive(Debug, Clone, Default)]
pub struct DriftReport {
    /// Points the state topic expects.
    pub expected_points: u64,
    /// Live points in the sink.
    pub sink_live_points: u64,
    /// Points left out of this check because their state is younger than the grace
    /// period (the processor may not have applied it yet).
    pub in_grace: u64,
    /// Every drifted point.
    pub drifts: Vec<Drift>,
    /// Time the check took.
    pub duration: Duration,
}

impl DriftReport {
    /// Drift count per class (all classes present).
    pub fn counts(&self) -> BTreeMap<DriftClass, u64> {
        let mut counts: BTreeMap<DriftClass, u64> =
            DriftClass::ALL.iter().map(|c| (*c, 0)).collect();
        for d in &self.drifts {
            *counts.entry(d.class).or_default() += 1;
        }
        counts
    }

    /// Drifted points as a percentage of the larger of the two sides.
    pub fn drift_percent(&self) -> f64 {
        let base = self.expected_points.max(self.sink_live_points).max(1);
        100.0 * self.drifts.len() as f64 / base as f64
    }

    /// Whether nothing drifted.
    pub fn is_clean(&self) -> bool {
        self.drifts.is_empty()
    }
}

/// Classify one stored point against its expected state.
fn classify_point(stored: &StoredPoint, expected: Option<&ExpectedPoint>) -> Option<DriftClass> {
    let Some(e) = expected else {
        return (!stored.deleted).then_some(DriftClass::Orphan);
    };
    Some(if stored.version < e.version {
        DriftClass::Stale
    } else if stored.version > e.version {
        DriftClass::Ahead
    } else if stored.deleted || parse_hash(&stored.hash) != e.hash {
        DriftClass::ContentMismatch
    } else {
        return None;
    })
}

/// Scan every collection of `sink` and classify each point against `expected`.
/// States younger than `grace` (by Kafka timestamp) are left out. `vector_names` gives
/// each collection's vector, for tombstones that still carry it.
///
/// # Errors
/// When the sink cannot be scanned.
pub async fn check(
    sink: &dyn VectorSink,
    expected: &ExpectedState,
    grace: Duration,
    vector_names: &BTreeMap<String, String>,
) -> anyhow::Result<DriftReport> {
    let started = Instant::now();
    let now_ms = crate::unix_ms();
    let young = |e: &ExpectedPoint| now_ms - e.timestamp_ms < grace.as_millis() as i64;
    let mut report = DriftReport {
        expected_points: expected.points.len() as u64,
        ..DriftReport::default()
    };
    let mut seen: std::collections::HashSet<Uuid> =
        std::collections::HashSet::with_capacity(expected.points.len());
    for collection in expected.collections() {
        let mut from = None;
        loop {
            let page = sink.scan(collection, from, SCAN_PAGE).await?;
            for stored in &page.points {
                if !stored.deleted {
                    report.sink_live_points += 1;
                }
                let e = expected.points.get(&stored.id);
                if e.is_some() {
                    seen.insert(stored.id);
                }
                if e.is_some_and(young) {
                    report.in_grace += 1;
                    continue;
                }
                if let Some(class) = classify_point(stored, e) {
                    report.drifts.push(Drift {
                        class,
                        collection: collection.clone(),
                        id: stored.id,
                        key: stored.key.clone(),
                        sink_version: Some(stored.version),
                        expected_version: e.map(|e| e.version),
                    });
                }
            }
            match page.next {
                Some(next) => from = Some(next),
                None => break,
            }
        }
        let Some(vector_name) = vector_names.get(collection) else {
            continue;
        };
        // Usually none: the set of points already judged is built only when needed.
        let with_vector = sink.tombstones_with_vector(collection, vector_name).await?;
        if with_vector.is_empty() {
            continue;
        }
        let drifted: std::collections::HashSet<Uuid> = report.drifts.iter().map(|d| d.id).collect();
        for stored in with_vector {
            if drifted.contains(&stored.id) {
                continue;
            }
            report.drifts.push(Drift {
                class: DriftClass::TombstoneVector,
                collection: collection.clone(),
                id: stored.id,
                key: stored.key.clone(),
                sink_version: Some(stored.version),
                expected_version: expected.points.get(&stored.id).map(|e| e.version),
            });
        }
    }
    for (id, e) in &expected.points {
        if seen.contains(id) {
            continue;
        }
        if young(e) {
            report.in_grace += 1;
            continue;
        }
        report.drifts.push(Drift {
            class: DriftClass::Missing,
            collection: expected.collections()[e.collection as usize].clone(),
            id: *id,
            key: e.key.to_string(),
            sink_version: None,
            expected_version: Some(e.version),
        });
    }
    report
        .drifts
        .sort_by(|a, b| (a.class, &a.key).cmp(&(b.class, &b.key)));
    report.duration = started.elapsed();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(version: i64, hash: &str, deleted: bool) -> StoredPoint {
        StoredPoint {
            id: Uuid::nil(),
            key: "k".into(),
            version,
            hash: hash.into(),
            deleted,
            payload: None,
        }
    }

    fn expected(version: i64, hash: u128) -> ExpectedPoint {
        ExpectedPoint {
            collection: 0,
            key: "k".into(),
            version,
            hash,
            partition: 0,
            offset: 0,
            timestamp_ms: 0,
        }
    }

    #[test]
    fn classes() {
        let h = "000000000000000000000000000000ab";
        let e = expected(5, 0xab);
        assert_eq!(classify_point(&stored(5, h, false), Some(&e)), None);
        assert_eq!(
            classify_point(&stored(4, h, false), Some(&e)),
            Some(DriftClass::Stale)
        );
        assert_eq!(
            classify_point(&stored(6, h, false), Some(&e)),
            Some(DriftClass::Ahead)
        );
        assert_eq!(
            classify_point(&stored(5, "ff", false), Some(&e)),
            Some(DriftClass::ContentMismatch)
        );
        assert_eq!(
            classify_point(&stored(4, "", true), Some(&e)),
            Some(DriftClass::Stale)
        );
        assert_eq!(
            classify_point(&stored(7, "", true), Some(&e)),
            Some(DriftClass::Ahead)
        );
        assert_eq!(
            classify_point(&stored(5, h, false), None),
            Some(DriftClass::Orphan)
        );
        assert_eq!(
            classify_point(&stored(5, "", true), None),
            None,
            "a tombstone is no orphan"
        );
    }
}
