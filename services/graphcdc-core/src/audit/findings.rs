//! What an audit finds: how Neo4j and graph.state differ for one entity
//! ([`AuditClass`], [`classify`]), the content hash both sides are compared by, and the
//! report that counts the findings per target.

use super::state::LogEntry;
use crate::event::{EntityKind, PropertyValue, RelationshipEnds};
use crate::mapping::content_hash;
use crate::reconcile::classify::DriftReport;
use crate::reconcile::expected::parse_hash;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// How Neo4j and graph.state differ for one entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditClass {
    /// In Neo4j, not live in graph.state.
    Uncaptured,
    /// Live in graph.state, not in Neo4j.
    Lost,
    /// The same version, other content.
    Differs,
    /// graph.state holds an older version than Neo4j, with other content.
    Stale,
    /// Neo4j's version is below graph.state's: a restored Neo4j.
    Behind,
}

impl AuditClass {
    /// Every class, in report order.
    pub const ALL: [AuditClass; 5] = [
        AuditClass::Uncaptured,
        AuditClass::Lost,
        AuditClass::Differs,
        AuditClass::Stale,
        AuditClass::Behind,
    ];

    /// Name in reports.
    pub fn name(self) -> &'static str {
        match self {
            AuditClass::Uncaptured => "uncaptured",
            AuditClass::Lost => "lost",
            AuditClass::Differs => "differs",
            AuditClass::Stale => "stale",
            AuditClass::Behind => "behind",
        }
    }
}

/// Classify one entity: what Neo4j has (version, hash) against what graph.state holds.
pub fn classify(neo4j: Option<(i64, u128)>, log: Option<&LogEntry>) -> Option<AuditClass> {
    match (neo4j, log) {
        (None, Some(LogEntry { hash: Some(_), .. })) => Some(AuditClass::Lost),
        (None, _) => None,
        (Some(_), None) => Some(AuditClass::Uncaptured),
        (Some((version, _)), Some(held)) if version < held.version => Some(AuditClass::Behind),
        (Some(_), Some(LogEntry { hash: None, .. })) => Some(AuditClass::Uncaptured),
        (Some((_, hash)), Some(held)) if Some(hash) == held.hash => None,
        (Some((version, _)), Some(held)) if version > held.version => Some(AuditClass::Stale),
        (Some(_), Some(_)) => Some(AuditClass::Differs),
    }
}

/// Content hash of an entity as the capture publishes it: kind, labels (sorted), the
/// relationship's type and ends, and the properties. The vector outside the properties is
/// not part of it (Neo4j has none: the embedding is a property).
pub fn entity_hash(
    kind: EntityKind,
    labels: &[String],
    relationship: Option<&RelationshipEnds>,
    properties: &BTreeMap<String, PropertyValue>,
) -> u128 {
    let mut labels = labels.to_vec();
    labels.sort();
    let fields: BTreeMap<String, serde_json::Value> = [
        ("kind", serde_json::json!(kind)),
        ("labels", serde_json::json!(labels)),
        ("relationship", serde_json::json!(relationship)),
        ("properties", serde_json::json!(properties)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    parse_hash(&content_hash(&fields, &[]))
}

/// One entity that differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub class: AuditClass,
    /// Index of its target in [`Targets`].
    #[serde(skip)]
    pub target: usize,
    pub key: String,
    pub neo4j_version: Option<i64>,
    #[serde(skip)]
    pub neo4j_hash: Option<u128>,
    pub state_version: Option<i64>,
    /// The targets graph.state holds the entity under (bits of [`Targets`]).
    #[serde(skip)]
    pub bits: u64,
    /// Where the page it was found in starts (relationships are read again by page).
    #[serde(skip)]
    pub page_after: Option<serde_json::Value>,
}

/// Counts of one label or relationship type.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TargetCounts {
    /// The label, or `[:TYPE]`.
    pub name: String,
    /// Entities found in Neo4j.
    pub neo4j: u64,
    /// Entities live in graph.state.
    pub state_live: u64,
    /// Entities equal on both sides.
    pub in_sync: u64,
    /// Entities that differ but have an outbox entry not published yet: not judged.
    pub in_flight: u64,
    /// Entities of Neo4j that cannot become an event (a point property): not judged.
    pub unreadable: u64,
}

/// What one audit found.
#[derive(Debug, Clone, Default)]
pub struct AuditReport {
    /// Per target, in config order.
    pub targets: Vec<TargetCounts>,
    /// The entities that differ, after the second look: at most
    /// [`AuditOptions::max_findings`] of them.
    pub findings: Vec<Finding>,
    /// Entities that differ beyond [`AuditOptions::max_findings`], per (target, class):
    /// counted, not held (memory stays bounded when most of a graph differs, as after a
    /// restore); a run after the repair finds them.
    pub unheld: BTreeMap<(usize, AuditClass), u64>,
    /// The reconciler's check of the sink against graph.state (`None`: not checked).
    pub sink: Option<DriftReport>,
    pub duration: Duration,
}

impl AuditReport {
    /// Findings per target and class (every class present).
    pub fn counts(&self) -> Vec<BTreeMap<AuditClass, u64>> {
        let mut counts: Vec<BTreeMap<AuditClass, u64>> = self
            .targets
            .iter()
            .map(|_| AuditClass::ALL.iter().map(|c| (*c, 0)).collect())
            .collect();
        let held = self.findings.iter().map(|f| ((f.target, f.class), 1));
        let unheld = self.unheld.iter().map(|(at, n)| (*at, *n));
        for ((target, class), n) in held.chain(unheld) {
            if let Some(c) = counts.get_mut(target) {
                *c.entry(class).or_default() += n;
            }
        }
        counts
    }

    /// Findings of `class`, all targets (held or not).
    pub fn count(&self, class: AuditClass) -> u64 {
        let held = self.findings.iter().filter(|f| f.class == class).count() as u64;
        let unheld: u64 = self
            .unheld
            .iter()
            .filter(|((_, c), _)| *c == class)
            .map(|(_, n)| n)
            .sum();
        held + unheld
    }

    /// Findings counted beyond the ones held.
    pub fn unheld_total(&self) -> u64 {
        self.unheld.values().sum()
    }

    /// Hold `finding`, or only count it once `max` are held.
    pub fn add(&mut self, finding: Finding, max: usize) {
        if self.findings.len() < max {
            self.findings.push(finding);
        } else {
            *self
                .unheld
                .entry((finding.target, finding.class))
                .or_default() += 1;
        }
    }

    /// Neither Neo4j against graph.state nor the sink against graph.state differ.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
            && self.unheld.is_empty()
            && self.sink.as_ref().is_none_or(DriftReport::is_clean)
    }
}
