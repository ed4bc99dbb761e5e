//! Repairing drift: straight into the sink through the version-fenced write path, or as
//! corrective events (source = repair) on the change topic so every sink heals alike.
//!
//! Missing, stale and mismatched points get the state's upsert; orphans get a tombstone
//! at their own version. Points "ahead" of the state are never written backwards.
//! Repairs may rewrite the *same* version (fence `NewerOrEqual`), never a newer one.

use super::classify::{DriftClass, DriftReport};
use super::expected::{repair_source, ExpectedState};
use crate::codec::{Codec, Format};
use crate::config::{Config, MappingConfig};
use crate::event::{ChangeEvent, EntityKind, Op, RelationshipEnds};
use crate::kafka::ChangePublisher;
use crate::mapping::{Mapper, PointWrite};
use crate::sink::{Fence, VectorSink};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Where repairs go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairMode {
    /// Write the fixes to the sink directly.
    Sink,
    /// Publish corrective events to the change topic.
    Log,
}

/// Limits of a repair run.
#[derive(Debug, Clone)]
pub struct RepairOptions {
    pub mode: RepairMode,
    /// Print the plan, change nothing.
    pub dry_run: bool,
    /// Allow deleting more than `max_delete_ratio` of the sink.
    pub force: bool,
    /// Largest share of the sink's live points a repair may delete (0.1 = 10 %).
    pub max_delete_ratio: f64,
    /// Repairs per second at most.
    pub rate_per_s: u32,
}

/// What a repair run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairOutcome {
    /// Points with a planned fix (upsert or tombstone).
    pub planned: usize,
    /// Fixes written (sink) or published (log).
    pub repaired: usize,
    /// Points drifted "ahead", left alone.
    pub left_ahead: usize,
}

/// Why a repair was refused.
#[derive(Debug, thiserror::Error)]
#[error("repair refused: it would delete {deletes} of {live} live points ({percent:.1} % > {limit:.1} %); check the state topic, or pass --force")]
pub struct SafetyRefusal {
    pub deletes: usize,
    pub live: u64,
    pub percent: f64,
    pub limit: f64,
}

/// The corrective event for an orphan: a delete at its own version, labelled so the
/// mapping of its collection routes it.
fn orphan_delete(mapping: &MappingConfig, key: &str, version: i64) -> ChangeEvent {
    let labels: Vec<&str> = mapping.label.as_deref().into_iter().collect();
    let mut event = ChangeEvent::node(key, &labels, Op::Delete, version, crate::unix_ms());
    event.source = repair_source();
    if let Some(rel_type) = &mapping.relationship_type {
        event.kind = EntityKind::Relationship;
        event.relationship = Some(RelationshipEnds {
            rel_type: rel_type.clone(),
            start_key: String::new(),
            end_key: String::new(),
        });
    }
    event
}

/// Plan and carry out the repair of `report`.
///
/// # Errors
/// [`SafetyRefusal`] when too many deletes are planned without `force`; sink, broker or
/// topic errors otherwise.
pub async fn repair(
    config: &Config,
    sink: &dyn VectorSink,
    expected: &ExpectedState,
    codec: &Arc<Codec>,
    mapper: &Mapper,
    report: &DriftReport,
    options: &RepairOptions,
) -> anyhow::Result<RepairOutcome> {
    let upserts: HashSet<_> = report
        .drifts
        .iter()
        .filter(|d| {
            matches!(
                d.class,
                DriftClass::Missing | DriftClass::Stale | DriftClass::ContentMismatch
            )
        })
        .map(|d| d.id)
        .collect();
    let orphans: Vec<_> = report
        .drifts
        .iter()
        .filter(|d| d.class == DriftClass::Orphan)
        .collect();
    // Written again at their own version: the sink strips the vector of a tombstone.
    let tombstones: Vec<_> = report
        .drifts
        .iter()
        .filter(|d| d.class == DriftClass::TombstoneVector)
        .collect();
    let mut outcome = RepairOutcome {
        planned: upserts.len() + orphans.len() + tombstones.len(),
        left_ahead: report
            .drifts
            .iter()
            .filter(|d| d.class == DriftClass::Ahead)
            .count(),
        repaired: 0,
    };
    let live = report.sink_live_points.max(1);
    let percent = 100.0 * orphans.len() as f64 / live as f64;
    if !options.force && orphans.len() as f64 > options.max_delete_ratio * live as f64 {
        return Err(SafetyRefusal {
            deletes: orphans.len(),
            live: report.sink_live_points,
            percent,
            limit: options.max_delete_ratio * 100.0,
        }
        .into());
    }
    if options.dry_run || outcome.planned == 0 {
        return Ok(outcome);
    }

    let states = expected
        .fetch_states(&config.kafka, codec, mapper, &upserts)
        .await?;
    let mut events: Vec<(String, ChangeEvent)> = Vec::with_capacity(outcome.planned);
    for drift in &report.drifts {
        if upserts.contains(&drift.id) {
            if let Some(state) = states.get(&drift.id) {
                let event = state.to_event(uuid::Uuid::new_v4().to_string(), repair_source());
                events.push((drift.collection.clone(), event));
            }
        }
    }
    for orphan in orphans.iter().chain(&tombstones) {
        if let Some(mapping) = mapper
            .mappings()
            .iter()
            .find(|m| m.collection == orphan.collection)
        {
            let version = orphan.sink_version.unwrap_or(0);
            events.push((
                orphan.collection.clone(),
                orphan_delete(mapping, &orphan.key, version),
            ));
        }
    }

    let mut pacer = Pacer::new(options.rate_per_s);
    let publisher = match options.mode {
        RepairMode::Log => Some(ChangePublisher::new(
            &config.kafka,
            codec.clone(),
            Format::Avro,
        )?),
        RepairMode::Sink => None,
    };
    for chunk in events.chunks(pacer.chunk()) {
        pacer.wait(chunk.len()).await;
        match &publisher {
            Some(publisher) => {
                let chunk: Vec<ChangeEvent> = chunk.iter().map(|(_, e)| e.clone()).collect();
                let span = tracing::info_span!(
                    "reconcile.repair",
                    otel.kind = "producer",
                    events = chunk.len()
                );
                publisher.publish_changes(&chunk).instrument(span).await?;
            }
            None => write_to_sink(sink, mapper, chunk).await?,
        }
        outcome.repaired += chunk.len();
    }
    Ok(outcome)
}

/// Map repair events and write each point to its own collection with the repair fence.
async fn write_to_sink(
    sink: &dyn VectorSink,
    mapper: &Mapper,
    events: &[(String, ChangeEvent)],
) -> anyhow::Result<()> {
    let mut by_collection: BTreeMap<&str, Vec<PointWrite>> = BTreeMap::new();
    for (collection, event) in events {
        let writes = mapper.map(event)?;
        by_collection
            .entry(collection)
            .or_default()
            .extend(writes.into_iter().filter(|w| &w.collection == collection));
    }
    for (collection, writes) in by_collection {
        sink.write(collection, &writes, Fence::NewerOrEqual).await?;
    }
    Ok(())
}

/// Keeps repairs under a rate by sleeping between chunks.
struct Pacer {
    rate_per_s: u32,
    started: Instant,
    done: usize,
}

impl Pacer {
    fn new(rate_per_s: u32) -> Self {
        Pacer {
            rate_per_s: rate_per_s.max(1),
            started: Instant::now(),
            done: 0,
        }
    }

    /// Chunk size: about a tenth of a second of repairs.
    fn chunk(&self) -> usize {
        (self.rate_per_s as usize / 10).clamp(1, 500)
    }

    async fn wait(&mut self, next: usize) {
        let due = Duration::from_secs_f64(self.done as f64 / self.rate_per_s as f64);
        let elapsed = self.started.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
        self.done += next;
    }
}
