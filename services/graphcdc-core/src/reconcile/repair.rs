//! Repairing drift: straight into the sink through the version-fenced write path, or as
//! corrective events (source = repair) on the change topic so every sink heals alike.
//!
//! Missing, stale and mismatched points get the state's upsert; confirmed orphans get a
//! tombstone at their own version (an orphan seen once is deferred); tombstones that kept
//! their vector are written again at their version. Points "ahead" of the state are never
//! written backwards. Repairs may rewrite the *same* version (fence `NewerOrEqual`), never
//! a newer one. Before anything is written, the deletes and same-version rewrites of each
//! collection are checked against the budget ([`super::guard`]); a dry run reports the
//! plan and what the guard would refuse.

use super::classify::{DriftClass, DriftReport};
use super::expected::{repair_source, ExpectedState};
pub use super::guard::SafetyRefusal;
use super::guard::{validate_ratio, Budget, Spend};
use crate::codec::{Codec, Format};
use crate::config::Config;
use crate::embed::Embeddings;
use crate::event::{ChangeEvent, EntityKind, Op, RelationshipEnds};
use crate::kafka::ChangePublisher;
use crate::mapping::MappingConfig;
use crate::mapping::{Mapper, PointWrite};
use crate::sink::{Fence, VectorSink};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;
use uuid::Uuid;

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
    /// Lift the budget of deletes and same-version rewrites.
    pub force: bool,
    /// Largest share of a collection's live points that repairs may delete per window.
    pub max_delete_ratio: f64,
    /// Largest share of a collection's live points that repairs may rewrite at the same
    /// version (content mismatches) per window.
    pub max_rewrite_ratio: f64,
    /// The window of both budgets; a continuous run counts every check in it.
    pub budget_window: Duration,
    /// Repairs per second at most.
    pub rate_per_s: u32,
    /// Also delete the points the pipeline did not write ([`DriftReport::foreign`]),
    /// under the same delete budget. Sink mode only: they have no key to publish.
    pub delete_foreign: bool,
}

impl RepairOptions {
    /// The defaults of the command line for `mode`: 10 % per collection and 24 h, 1,000
    /// repairs/s.
    pub fn new(mode: RepairMode) -> Self {
        RepairOptions {
            mode,
            dry_run: false,
            force: false,
            max_delete_ratio: 0.1,
            max_rewrite_ratio: 0.1,
            budget_window: Duration::from_secs(24 * 3600),
            rate_per_s: 1_000,
            delete_foreign: false,
        }
    }

    /// Refuse ratios that are NaN, negative or above 1, naming the option.
    ///
    /// # Errors
    /// The first invalid option.
    pub fn validate(&self) -> crate::error::Result<()> {
        validate_ratio("--max-delete-ratio", self.max_delete_ratio)?;
        validate_ratio("--max-rewrite-ratio", self.max_rewrite_ratio)?;
        crate::error::ensure!(
            !self.delete_foreign || self.mode == RepairMode::Sink,
            Invalid,
            "--delete-foreign needs --repair sink: points another tool wrote have no entity \
             key to publish a delete for"
        );
        Ok(())
    }
}

/// What a repair run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairOutcome {
    /// Points with a planned fix (upsert, tombstone or vector strip).
    pub planned: usize,
    /// Of those, orphans to delete.
    pub deletes: usize,
    /// Of those, live points rewritten at the same version (content mismatches).
    pub rewrites: usize,
    /// Fixes written (sink) or published (log).
    pub repaired: usize,
    /// Points drifted "ahead", left alone.
    pub left_ahead: usize,
    /// Orphans seen once, left for a second sighting.
    pub deferred_orphans: usize,
    /// In a dry run: why the guard would refuse this plan.
    pub refused: Option<String>,
}

/// What a repair reads and writes.
pub struct Context<'a> {
    pub config: &'a Config,
    pub sink: &'a dyn VectorSink,
    pub expected: &'a ExpectedState,
    pub codec: &'a Arc<Codec>,
    pub mapper: &'a Mapper,
    pub embeddings: &'a Embeddings,
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

/// Plan and carry out the repair of `report`; of its orphans only those in `confirmed`
/// are deleted.
///
/// # Errors
/// [`SafetyRefusal`] when the plan exceeds the budget without `force` (in a dry run the
/// outcome holds it instead); sink, broker or topic errors otherwise.
pub async fn repair(
    ctx: &Context<'_>,
    report: &DriftReport,
    confirmed: &HashSet<Uuid>,
    budget: &mut Budget,
    options: &RepairOptions,
) -> crate::error::Result<RepairOutcome> {
    let Context {
        config,
        sink,
        expected,
        codec,
        mapper,
        embeddings,
    } = *ctx;
    let upserts: HashSet<_> = report
        .drifts
        .iter()
        .filter(|d| {
            matches!(d.class, DriftClass::Missing | DriftClass::Stale)
                || d.class.is_rewritten_in_place()
        })
        .map(|d| d.id)
        .collect();
    let (orphans, deferred): (Vec<_>, Vec<_>) = report
        .drifts
        .iter()
        .filter(|d| d.class == DriftClass::Orphan)
        .partition(|d| confirmed.contains(&d.id));
    // Written again at their own version: the sink strips the vector of a tombstone.
    let tombstones: Vec<_> = report
        .drifts
        .iter()
        .filter(|d| d.class == DriftClass::TombstoneVector)
        .collect();
    let mut spends: BTreeMap<(&str, Spend), u64> = BTreeMap::new();
    for d in &orphans {
        *spends.entry((&d.collection, Spend::Delete)).or_default() += 1;
    }
    let foreign: Vec<(&String, &Vec<String>)> = match options.delete_foreign {
        true => report.foreign.iter().collect(),
        false => Vec::new(),
    };
    let foreign_deletes: usize = foreign.iter().map(|(_, ids)| ids.len()).sum();
    for (collection, ids) in &foreign {
        *spends.entry((collection, Spend::Delete)).or_default() += ids.len() as u64;
    }
    // Rewritten at their own version (the text is embedded again on the way).
    for d in report
        .drifts
        .iter()
        .filter(|d| d.class.is_rewritten_in_place())
    {
        *spends.entry((&d.collection, Spend::Rewrite)).or_default() += 1;
    }
    let mut outcome = RepairOutcome {
        planned: upserts.len() + orphans.len() + tombstones.len() + foreign_deletes,
        deletes: orphans.len() + foreign_deletes,
        rewrites: spends
            .iter()
            .filter(|((_, s), _)| *s == Spend::Rewrite)
            .map(|(_, n)| *n as usize)
            .sum(),
        left_ahead: report
            .drifts
            .iter()
            .filter(|d| d.class == DriftClass::Ahead)
            .count(),
        deferred_orphans: deferred.len(),
        ..RepairOutcome::default()
    };
    let now = Instant::now();
    if !options.force {
        for ((collection, spend), planned) in &spends {
            let live = report
                .live_by_collection
                .get(*collection)
                .copied()
                .unwrap_or(report.sink_live_points);
            let ratio = match spend {
                Spend::Delete => options.max_delete_ratio,
                Spend::Rewrite => options.max_rewrite_ratio,
            };
            let window = options.budget_window;
            if let Err(refusal) =
                budget.check(collection, *spend, *planned, live, ratio, window, now)
            {
                if options.dry_run {
                    outcome.refused = Some(refusal.to_string());
                    return Ok(outcome);
                }
                return Err(refusal.into());
            }
        }
    }
    if options.dry_run || outcome.planned == 0 {
        return Ok(outcome);
    }
    for ((collection, spend), n) in &spends {
        budget.record(collection, *spend, *n, now);
    }
    for (collection, ids) in &foreign {
        sink.delete_foreign(collection, ids).await?;
        outcome.repaired += ids.len();
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
            (*codec).clone(),
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
            None => write_to_sink(sink, mapper, embeddings, chunk).await?,
        }
        outcome.repaired += chunk.len();
    }
    Ok(outcome)
}

/// Map repair events, write each point to its own collection with the repair fence and
/// sync the sink.
async fn write_to_sink(
    sink: &dyn VectorSink,
    mapper: &Mapper,
    embeddings: &Embeddings,
    events: &[(String, ChangeEvent)],
) -> crate::error::Result<()> {
    let mut by_collection: BTreeMap<&str, Vec<PointWrite>> = BTreeMap::new();
    for (collection, event) in events {
        let writes = mapper.map(event)?;
        by_collection
            .entry(collection)
            .or_default()
            .extend(writes.into_iter().filter(|w| &w.collection == collection));
    }
    for (collection, mut writes) in by_collection {
        // A text the model refuses stays unrepaired (reported again by the next check).
        let mut refused = embeddings.complete(sink, collection, &mut writes).await?;
        refused.sort_by_key(|(i, _)| std::cmp::Reverse(*i));
        for (i, poison) in refused {
            tracing::warn!(%collection, key = %writes[i].key, error = %poison, "repair skipped: the model refused the text");
            writes.remove(i);
        }
        sink.write(collection, &writes, Fence::NewerOrEqual).await?;
    }
    // Counted as repaired once durable (the embedded sink flushes here).
    sink.sync().await?;
    Ok(())
}

/// Keeps repairs under a rate by sleeping between chunks (also the audit's).
pub(crate) struct Pacer {
    rate_per_s: u32,
    started: Instant,
    done: usize,
}

impl Pacer {
    pub(crate) fn new(rate_per_s: u32) -> Self {
        Pacer {
            rate_per_s: rate_per_s.max(1),
            started: Instant::now(),
            done: 0,
        }
    }

    /// Chunk size: about a tenth of a second of repairs.
    pub(crate) fn chunk(&self) -> usize {
        (self.rate_per_s as usize / 10).clamp(1, 500)
    }

    pub(crate) async fn wait(&mut self, next: usize) {
        let due = Duration::from_secs_f64(self.done as f64 / self.rate_per_s as f64);
        let elapsed = self.started.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
        self.done += next;
    }
}
