//! The audit's repair, through the log: outbox entries with source `repair`, written in
//! the transaction that bumps each entity's counter and published by **the relay** (which
//! must run), so graph.state and every sink heal alike, and a live change committed after
//! a repair is always published after it (graph.state never goes backwards).
//!
//! - **Upserts** (`uncaptured`, `stale`, `differs`, `behind`): each counter is first
//!   raised to at least the version graph.state holds (`audit-raise.cypher`), then the
//!   backfill's page transaction bumps it, reads the entity after that lock and writes its
//!   entry ([`page::write_locked`]): the version is above anything graph.state holds and
//!   paired with the content of that version, and a concurrent commit gets a higher one.
//! - **Tombstones** (`lost`): in one transaction, the counter is raised above
//!   graph.state's version (created when missing, so a later create of the key goes
//!   higher still), the entity is looked up, and a delete entry is written unless it
//!   exists: a create that committed before is seen (no tombstone), one that commits
//!   later waited for the counter's lock and has a higher version than the tombstone.
//!
//! Before anything is written the deletes of each label or type are checked against
//! the reconciler's delete budget ([`crate::reconcile::guard`]): a plan over
//! `max_delete_ratio` of the entities graph.state holds live for it is refused whole
//! unless forced. Writing is paced to `rate_per_s` entities per second.

use super::graph::{self, Context};
use super::{AuditClass, AuditReport, Finding};
use crate::capture::backfill::page::{self, Target};
use crate::capture::outbox;
use crate::error::Context as _;
use crate::event::{CaptureMode, ChangeEvent, EntityKind, Op, RelationshipEnds, Source};
use crate::reconcile::guard::{validate_ratio, Budget, Spend};
use crate::reconcile::repair::Pacer;
use neo4rs::{query, BoltType};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

const RAISE: &str = include_str!("../../../../deploy/neo4j/queries/audit-raise.cypher");

/// Limits of an audit repair.
#[derive(Debug, Clone)]
pub struct AuditRepairOptions {
    /// Print the plan, write nothing.
    pub dry_run: bool,
    /// Lift the delete budget.
    pub force: bool,
    /// Largest share of a label's (or type's) entities live in graph.state that one
    /// window's repairs may delete.
    pub max_delete_ratio: f64,
    /// The budget's window.
    pub budget_window: Duration,
    /// Entities written per second at most.
    pub rate_per_s: u32,
}

impl Default for AuditRepairOptions {
    /// As the command line: 10 % per label and 24 h, 1,000 entities/s.
    fn default() -> Self {
        AuditRepairOptions {
            dry_run: false,
            force: false,
            max_delete_ratio: 0.1,
            budget_window: Duration::from_secs(24 * 3600),
            rate_per_s: 1_000,
        }
    }
}

impl AuditRepairOptions {
    /// Refuse a ratio that is NaN, negative or above 1, naming the option.
    ///
    /// # Errors
    /// The invalid option.
    pub fn validate(&self) -> crate::error::Result<()> {
        validate_ratio("--max-delete-ratio", self.max_delete_ratio)
    }
}

/// What a repair planned and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditRepairOutcome {
    pub dry_run: bool,
    /// Entities to write again (upserts).
    pub upserts_planned: usize,
    /// Entities to delete (tombstones), per label or type.
    pub deletes_planned: BTreeMap<String, u64>,
    /// Upserts written to the outbox (the relay publishes them).
    pub upserts: usize,
    /// Tombstones written to the outbox (the relay publishes them).
    pub tombstones: usize,
    /// Entities left alone at repair time: gone before their upsert, or back before their
    /// tombstone (the next audit judges them).
    pub skipped: usize,
    /// Why the guard refuses the plan; nothing was written then.
    pub refused: Option<String>,
    /// Event ids of the outbox entries written.
    pub entries: Vec<String>,
    /// Of those, the entries the relay had not published when the audit stopped waiting
    /// (is the relay running?). Set by [`super::Auditor::run_once`].
    pub unpublished: usize,
}

impl AuditRepairOutcome {
    /// Deletes planned, all targets.
    pub fn deletes(&self) -> u64 {
        self.deletes_planned.values().sum()
    }
}

/// Plan the repair of `report`, check it against the budget, and write it to the outbox.
///
/// # Errors
/// Neo4j errors (what was written before stays written: it is correct).
pub async fn repair(
    ctx: &Context<'_>,
    report: &AuditReport,
    budget: &mut Budget,
    options: &AuditRepairOptions,
    page_size: usize,
) -> crate::error::Result<AuditRepairOutcome> {
    let targets = ctx.targets.list();
    let (lost, upserts): (Vec<&Finding>, Vec<&Finding>) = report
        .findings
        .iter()
        .partition(|f| f.class == AuditClass::Lost);
    let mut outcome = AuditRepairOutcome {
        dry_run: options.dry_run,
        upserts_planned: upserts.len(),
        ..AuditRepairOutcome::default()
    };
    let mut deletes: BTreeMap<usize, Vec<&Finding>> = BTreeMap::new();
    for f in lost {
        deletes.entry(f.target).or_default().push(f);
    }
    for (index, found) in &deletes {
        outcome
            .deletes_planned
            .insert(targets[*index].name(), found.len() as u64);
    }
    let now = Instant::now();
    // The guard judges the whole loss found, held or only counted.
    let counts = report.counts();
    if !options.force {
        for index in deletes.keys() {
            let name = targets[*index].name();
            let live = report.targets[*index].state_live;
            let (ratio, window) = (options.max_delete_ratio, options.budget_window);
            let planned = counts[*index][&AuditClass::Lost];
            if let Err(refusal) =
                budget.check(&name, Spend::Delete, planned, live, ratio, window, now)
            {
                // The guard speaks of points of a collection; here they are entities of a
                // label or type that graph.state holds live.
                let text = refusal.to_string().replace(
                    "live points of collection",
                    "entities live in graph.state of",
                );
                outcome.refused = Some(text);
                return Ok(outcome);
            }
        }
    }
    if options.dry_run {
        return Ok(outcome);
    }
    for (index, found) in &deletes {
        budget.record(
            &targets[*index].name(),
            Spend::Delete,
            found.len() as u64,
            now,
        );
    }
    let mut pacer = Pacer::new(options.rate_per_s);
    // Upserts, per target; relationships by the page they were found in.
    let mut groups: BTreeMap<(usize, String), Vec<&Finding>> = BTreeMap::new();
    for f in upserts {
        let page = match &targets[f.target] {
            Target::Label { .. } => String::new(),
            Target::Type { .. } => f
                .page_after
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
        };
        groups.entry((f.target, page)).or_default().push(f);
    }
    // In key order within each group, as the trigger takes counter locks (no deadlock).
    for found in groups.values_mut().chain(deletes.values_mut()) {
        found.sort_by(|a, b| a.key.cmp(&b.key));
    }
    for ((index, _), found) in &groups {
        let target = &targets[*index];
        for chunk in found.chunks(pacer.chunk()) {
            pacer.wait(chunk.len()).await;
            let written = upsert(ctx, target, chunk, page_size, &mut outcome.entries).await?;
            outcome.upserts += written;
            outcome.skipped += chunk.len() - written;
        }
    }
    for (index, found) in &deletes {
        let target = &targets[*index];
        for chunk in found.chunks(pacer.chunk()) {
            pacer.wait(chunk.len()).await;
            let written = tombstone(ctx, target, chunk, &mut outcome.entries).await?;
            outcome.tombstones += written;
            outcome.skipped += chunk.len() - written;
        }
    }
    Ok(outcome)
}

/// Counter keys of `target` for `found`, raised to `floor` + `step`.
fn raise_rows(target: &Target, found: &[&Finding], step: i64) -> Vec<HashMap<String, BoltType>> {
    found
        .iter()
        .map(|f| {
            HashMap::from([
                (
                    "key".to_owned(),
                    BoltType::from(format!("{}:{}", target.kind(), f.key)),
                ),
                ("floor".to_owned(), f.state_version.unwrap_or(0).into()),
                ("step".to_owned(), step.into()),
            ])
        })
        .collect()
}

/// A key as graph.state spells it, as page keys: text, and an integer when it reads as
/// one (integer keys are published as their decimal text).
fn page_keys(found: &[&Finding]) -> Vec<serde_json::Value> {
    found
        .iter()
        .flat_map(|f| {
            let int = f.key.parse::<i64>().ok().map(serde_json::Value::from);
            std::iter::once(serde_json::Value::from(f.key.as_str())).chain(int)
        })
        .collect()
}

/// Write `found` again above graph.state's versions; returns how many entries were
/// written (their event ids go to `entries`).
async fn upsert(
    ctx: &Context<'_>,
    target: &Target,
    found: &[&Finding],
    page_size: usize,
    entries: &mut Vec<String>,
) -> crate::error::Result<usize> {
    ctx.graph
        .run(query(RAISE).param("rows", raise_rows(target, found, 0)))
        .await
        .context("raising version counters for the audit's upserts")?;
    let capture = &ctx.config.capture;
    let after = found.first().and_then(|f| f.page_after.clone());
    let keys = page_keys(found);
    let written = page::write_locked(
        ctx.graph,
        target,
        capture,
        after.as_ref(),
        page_size,
        &keys,
        ctx.db,
        CaptureMode::Repair,
    )
    .await?;
    for f in &written.failed {
        tracing::warn!(key = %f.key, error = %f.error, "entity cannot become an event; not repaired");
    }
    entries.extend(written.ids);
    Ok(written.entries)
}

/// Write tombstones for `found` above graph.state's versions, except for those that
/// exist again, in the transaction that raises their counters; returns how many were
/// written (their event ids go to `entries`).
async fn tombstone(
    ctx: &Context<'_>,
    target: &Target,
    found: &[&Finding],
    entries: &mut Vec<String>,
) -> crate::error::Result<usize> {
    let mut txn = ctx
        .graph
        .start_txn()
        .await
        .context("starting a tombstone transaction")?;
    let work = async {
        let mut versions: HashMap<String, i64> = HashMap::new();
        let rows = raise_rows(target, found, 1);
        let mut stream = txn.execute(query(RAISE).param("rows", rows)).await?;
        while let Some(row) = stream.next(txn.handle()).await? {
            let counter: String = row.get("key")?;
            let key = counter.split_once(':').map_or(counter.as_str(), |(_, k)| k);
            versions.insert(key.to_owned(), row.get::<i64>("version")?);
        }
        drop(stream);
        // Looked up after the counters' locks: a create that committed before is seen
        // here, and one that commits later has a higher version than these tombstones.
        let keys: Vec<String> = found.iter().map(|f| f.key.clone()).collect();
        let back = graph::existing_in(&mut txn, ctx, target, &keys).await?;
        let events: Vec<ChangeEvent> = found
            .iter()
            .filter(|f| !back.contains(&f.key))
            .filter_map(|f| Some(delete_event(ctx, target, f, *versions.get(&f.key)?)))
            .collect();
        outbox::write(&mut txn, &events).await?;
        Ok::<_, crate::error::Error>(events)
    };
    let events =
        crate::capture::commit_or_roll_back(work.await, txn, "committing a tombstone transaction")
            .await?;
    entries.extend(events.iter().map(|e| e.event_id.clone()));
    Ok(events.len())
}

/// The tombstone of `f` at `version`, labelled with every mapped label graph.state had for
/// it, so the processor deletes it from every collection.
fn delete_event(ctx: &Context<'_>, target: &Target, f: &Finding, version: i64) -> ChangeEvent {
    let labels = ctx.targets.labels(f.bits);
    let mut event = ChangeEvent::node(&f.key, &labels, Op::Delete, version, crate::unix_ms());
    event.source = Source {
        db: ctx.db.to_owned(),
        mode: CaptureMode::Repair,
    };
    if let Target::Type { rel_type, .. } = target {
        event.kind = EntityKind::Relationship;
        event.labels.clear();
        event.relationship = Some(RelationshipEnds {
            rel_type: rel_type.clone(),
            start_key: String::new(),
            end_key: String::new(),
        });
    }
    event
}
