//! Comparing the sink with the expected state, page by page, into drift classes.
//!
//! The scan judges every point, whatever the age of its state: what it finds is a
//! candidate, looked at again before it is reported ([`super::recheck`]).

use super::expected::{parse_hash, ExpectedPoint, ExpectedState, Lookup};
use crate::sink::SinkError;
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
    /// Same version, but the vector was embedded from another text than the state's:
    /// the text changed and the vector was not recomputed (`[mappings.embedding]`).
    StaleVector,
    /// A live point without its vector: an entity that should have a vector and has
    /// none, so vector search never finds it.
    MissingVector,
}

impl DriftClass {
    /// Every class, in report order.
    pub const ALL: [DriftClass; 8] = [
        DriftClass::Missing,
        DriftClass::Orphan,
        DriftClass::Stale,
        DriftClass::ContentMismatch,
        DriftClass::Ahead,
        DriftClass::TombstoneVector,
        DriftClass::StaleVector,
        DriftClass::MissingVector,
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
            DriftClass::StaleVector => "stale_vector",
            DriftClass::MissingVector => "missing_vector",
        }
    }

    /// Whether the repair rewrites the point from the state at its own version (counted
    /// against the rewrite budget): the payload or the vector is wrong, not the version.
    pub fn is_rewritten_in_place(self) -> bool {
        matches!(
            self,
            DriftClass::ContentMismatch | DriftClass::StaleVector | DriftClass::MissingVector
        )
    }

    /// Whether this class is found by asking the sink which points have or lack their
    /// vector ([`vector_presence`]) rather than by comparing versions and hashes.
    pub fn is_vector_presence(self) -> bool {
        matches!(
            self,
            DriftClass::TombstoneVector | DriftClass::MissingVector
        )
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

/// What a bucketed scan rescanned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanExtent {
    /// Buckets rescanned, over all collections.
    pub buckets: u64,
    /// Points read from the sink.
    pub points: u64,
}

/// Result of one check.
#[derive(Debug, Clone, Default)]
pub struct DriftReport {
    /// Points the state topic expects.
    pub expected_points: u64,
    /// Live points in the sink.
    pub sink_live_points: u64,
    /// Live points in the sink per collection (for the delete guard).
    pub live_by_collection: BTreeMap<String, u64>,
    /// Points the sink lacks a recent state of, not judged in this check: the processor
    /// had not passed that state's position within the grace period, and the state is
    /// younger than it ([`super::recheck`]).
    pub in_grace: u64,
    /// Candidates of the scan looked at again before the report.
    pub rechecked: u64,
    /// Every drifted point.
    pub drifts: Vec<Drift>,
    /// Points the pipeline did not write (a numeric id, or no `cdc_*` fields), per
    /// collection: typically there before graphcdc was adopted. Never repaired
    /// automatically; they count as drift.
    pub foreign: BTreeMap<String, Vec<String>>,
    /// Time the check took.
    pub duration: Duration,
    /// What a bucketed check rescanned ([`super::buckets`]); `None` for a full check.
    pub rescanned: Option<ScanExtent>,
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

    /// Points the pipeline did not write, in every collection.
    pub fn foreign_count(&self) -> u64 {
        self.foreign.values().map(|ids| ids.len() as u64).sum()
    }

    /// Whether nothing drifted (foreign points included).
    pub fn is_clean(&self) -> bool {
        self.drifts.is_empty() && self.foreign.is_empty()
    }
}

/// Classify one stored point against its expected state, or against the version its key
/// was deleted at on the state topic (`deleted_at`) when there is none.
pub fn classify_point(
    stored: &StoredPoint,
    expected: Option<&ExpectedPoint>,
    deleted_at: Option<i64>,
) -> Option<DriftClass> {
    let Some(e) = expected else {
        return match deleted_at {
            _ if stored.deleted => None,
            // Live at a version newer than the delete: the state topic is behind.
            Some(at) if stored.version > at => Some(DriftClass::Ahead),
            _ => Some(DriftClass::Orphan),
        };
    };
    Some(if stored.version < e.version {
        DriftClass::Stale
    } else if stored.version > e.version {
        DriftClass::Ahead
    } else if !stored.deleted && embedded_from_another_text(stored, e) {
        DriftClass::StaleVector
    } else if stored.deleted || parse_hash(&stored.hash) != e.hash {
        DriftClass::ContentMismatch
    } else {
        return None;
    })
}

/// Whether `stored`'s vector was embedded from another text than the one `e` expects: the
/// last 32 bits of an embedded point's content hash are its text hash's first 32
/// ([`crate::mapping::TEXT_HASH_BITS`]), and only embedded points store a text hash.
fn embedded_from_another_text(stored: &StoredPoint, e: &ExpectedPoint) -> bool {
    stored.text_hash.as_deref().is_some_and(|text_hash| {
        crate::mapping::text_hash_prefix(text_hash) != crate::mapping::text_part_of(e.hash)
    })
}

/// The drift of `stored` (or of its absence) in `collection` against what the state
/// says of its id.
pub fn judge(
    collection: &str,
    id: Uuid,
    stored: Option<&StoredPoint>,
    expected: &Lookup,
) -> Option<Drift> {
    let e = expected.point.as_ref();
    let class = match stored {
        Some(stored) => classify_point(stored, e, expected.deleted_version())?,
        None => {
            e?;
            DriftClass::Missing
        }
    };
    let key = match (stored, e) {
        (Some(s), _) => s.key.clone(),
        (None, Some(e)) => e.key.to_string(),
        (None, None) => String::new(),
    };
    Some(Drift {
        class,
        collection: collection.to_owned(),
        id,
        key,
        sink_version: stored.map(|s| s.version),
        // For a point the state deleted: the version of the delete.
        expected_version: e.map(|e| e.version).or_else(|| expected.deleted_version()),
    })
}

/// Points whose vector contradicts what they are: tombstones that kept their vector
/// ([`DriftClass::TombstoneVector`]) and live points without one
/// ([`DriftClass::MissingVector`]); one filtered query each, usually empty.
///
/// # Errors
/// When the sink cannot be asked.
pub async fn vector_presence(
    sink: &dyn VectorSink,
    collection: &str,
    vector_name: &str,
) -> Result<Vec<(DriftClass, StoredPoint)>, SinkError> {
    let mut found: Vec<_> = sink
        .tombstones_with_vector(collection, vector_name)
        .await?
        .into_iter()
        .map(|p| (DriftClass::TombstoneVector, p))
        .collect();
    let without = sink.live_without_vector(collection, vector_name).await?;
    found.extend(without.into_iter().map(|p| (DriftClass::MissingVector, p)));
    Ok(found)
}

/// Add to `report` what [`vector_presence`] finds in `collection`, but for points it
/// already holds a drift of (a full scan and a bucketed check both end with this).
///
/// # Errors
/// When the sink cannot be asked or the expected state cannot be read.
pub async fn add_presence_drifts(
    sink: &dyn VectorSink,
    expected: &ExpectedState,
    collection: &str,
    vector_name: &str,
    report: &mut DriftReport,
) -> crate::error::Result<()> {
    let found = vector_presence(sink, collection, vector_name).await?;
    if found.is_empty() {
        // Usually: the set of points already judged is built only when needed.
        return Ok(());
    }
    let drifted: std::collections::HashSet<Uuid> = report.drifts.iter().map(|d| d.id).collect();
    for (class, stored) in found {
        if drifted.contains(&stored.id) {
            continue;
        }
        let lookup = expected.lookup(&stored.id)?;
        report
            .drifts
            .push(presence_drift(class, collection, &stored, &lookup));
    }
    Ok(())
}

/// The drift of a point whose vector contradicts what it is ([`vector_presence`]).
fn presence_drift(
    class: DriftClass,
    collection: &str,
    stored: &StoredPoint,
    expected: &Lookup,
) -> Drift {
    Drift {
        class,
        collection: collection.to_owned(),
        id: stored.id,
        key: stored.key.clone(),
        sink_version: Some(stored.version),
        expected_version: expected.point.as_ref().map(|e| e.version),
    }
}

/// Scan every collection of `sink` and classify each point against `expected`: the
/// candidates of a check. `vector_names` gives each collection's vector, for tombstones
/// that still carry it. Holds the ids of every expected point the sink has: for a state
/// in memory; a state on disk is checked bucket by bucket ([`super::buckets`]).
///
/// # Errors
/// When the sink or the state cannot be read.
pub async fn scan(
    sink: &dyn VectorSink,
    expected: &ExpectedState,
    vector_names: &BTreeMap<String, String>,
) -> crate::error::Result<DriftReport> {
    let started = Instant::now();
    let mut report = DriftReport {
        expected_points: expected.len(),
        ..DriftReport::default()
    };
    let mut seen: std::collections::HashSet<Uuid> =
        std::collections::HashSet::with_capacity(expected.len() as usize);
    for collection in expected.collections() {
        let mut from = None;
        let mut live = 0;
        loop {
            let page = sink.scan(collection, from, SCAN_PAGE).await?;
            if !page.foreign.is_empty() {
                report
                    .foreign
                    .entry(collection.clone())
                    .or_default()
                    .extend(page.foreign.iter().map(|f| f.id.clone()));
            }
            for stored in &page.points {
                if !stored.deleted {
                    live += 1;
                }
                let lookup = expected.lookup(&stored.id)?;
                if lookup.point.is_some() {
                    seen.insert(stored.id);
                }
                if let Some(drift) = judge(collection, stored.id, Some(stored), &lookup) {
                    report.drifts.push(drift);
                }
            }
            match page.next {
                Some(next) => from = Some(next),
                None => break,
            }
        }
        report.sink_live_points += live;
        report.live_by_collection.insert(collection.clone(), live);
        let Some(vector_name) = vector_names.get(collection) else {
            continue;
        };
        add_presence_drifts(sink, expected, collection, vector_name, &mut report).await?;
    }
    for (c, collection) in expected.collections().iter().enumerate() {
        let mut missing = Vec::new();
        expected
            .store()
            .each_live(c as u16, 0..=u16::MAX, |id, e| {
                if !seen.contains(&id) {
                    let lookup = Lookup {
                        point: Some(e.clone()),
                        deleted: None,
                    };
                    missing.extend(judge(collection, id, None, &lookup));
                }
            })?;
        report.drifts.extend(missing);
    }
    report.sort();
    report.duration = started.elapsed();
    Ok(report)
}

impl DriftReport {
    /// Order drifts by class, then key.
    pub fn sort(&mut self) {
        self.drifts
            .sort_by(|a, b| (a.class, &a.key).cmp(&(b.class, &b.key)));
    }
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
            text_hash: None,
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
        assert_eq!(classify_point(&stored(5, h, false), Some(&e), None), None);
        assert_eq!(
            classify_point(&stored(4, h, false), Some(&e), None),
            Some(DriftClass::Stale)
        );
        assert_eq!(
            classify_point(&stored(6, h, false), Some(&e), None),
            Some(DriftClass::Ahead)
        );
        assert_eq!(
            classify_point(&stored(5, "ff", false), Some(&e), None),
            Some(DriftClass::ContentMismatch)
        );
        assert_eq!(
            classify_point(&stored(4, "", true), Some(&e), None),
            Some(DriftClass::Stale)
        );
        assert_eq!(
            classify_point(&stored(7, "", true), Some(&e), None),
            Some(DriftClass::Ahead)
        );
        assert_eq!(
            classify_point(&stored(5, h, false), None, None),
            Some(DriftClass::Orphan)
        );
        assert_eq!(
            classify_point(&stored(5, "", true), None, None),
            None,
            "a tombstone is no orphan"
        );
        assert_eq!(
            classify_point(&stored(5, h, false), None, Some(5)),
            Some(DriftClass::Orphan),
            "live at the version the state deleted"
        );
        assert_eq!(
            classify_point(&stored(7, h, false), None, Some(6)),
            Some(DriftClass::Ahead),
            "live after the state's delete: the state is behind, never deleted"
        );
    }

    #[test]
    fn an_embedded_point_of_another_text_is_a_stale_vector() {
        // An embedded point's content hash ends with its text hash's first 32 bits.
        let e = expected(5, 0xabcd_0000_0000_0000_0000_0000_1122_3344);
        let h = format!("{:032x}", e.hash);
        let with_text = |hash: &str, text_hash: &str| StoredPoint {
            text_hash: Some(text_hash.into()),
            ..stored(5, hash, false)
        };
        let same_text = "11223344aaaaaaaaaaaaaaaaaaaaaaaa";
        let other_text = "99887766aaaaaaaaaaaaaaaaaaaaaaaa";
        assert_eq!(
            classify_point(&with_text(&h, same_text), Some(&e), None),
            None
        );
        assert_eq!(
            classify_point(&with_text(&h, other_text), Some(&e), None),
            Some(DriftClass::StaleVector)
        );
        assert_eq!(
            classify_point(&with_text("ff", same_text), Some(&e), None),
            Some(DriftClass::ContentMismatch),
            "the same text, another payload"
        );
        assert_eq!(
            classify_point(
                &StoredPoint {
                    version: 4,
                    ..with_text(&h, other_text)
                },
                Some(&e),
                None
            ),
            Some(DriftClass::Stale),
            "an older version is stale whatever its text"
        );
    }
}
