//! `graphcdc audit`: the three-way audit, Neo4j ↔ graph.state ↔ sink, with the graph as
//! the source of truth.
//!
//! The reconciler ([`crate::reconcile`]) proves that a sink holds what graph.state says;
//! it cannot see what never reached the log: nodes lost without a delete event (a volume
//! lost, a bulk load with triggers paused), outbox entries marked failed, a Neo4j restored
//! from a backup. The audit pages every mapped label and relationship type over Bolt
//! ([`graph`], keyset pages as the backfill's, read only), computes each entity's key,
//! version and content hash in the capture's canonical form ([`entity_hash`] of the event
//! the backfill would publish), and compares them with graph.state ([`state`]):
//!
//! - `uncaptured`: in Neo4j, not live in graph.state (never captured, or its outbox entry
//!   failed);
//! - `lost`: live in graph.state, not in Neo4j (lost without a delete);
//! - `differs`: the same version, other content;
//! - `stale`: graph.state holds an older version than Neo4j, with other content (a change
//!   that never reached the log; a counter bumped without a change is no drift);
//! - `behind`: Neo4j's version is below graph.state's: a **restored Neo4j** whose version
//!   counters went back (runbook: docs/runbooks.md, GraphcdcStaleSkipsHigh);
//!
//! and runs the reconciler's own check for the sink classes. Every candidate gets a second
//! look before it is reported ([`graph::second_look`]): graph.state is read to its new end,
//! the entity is read again, and a key with an outbox entry the relay has not published is
//! in flight, not drift. A repair goes through the log ([`repair`]): upserts and tombstones
//! (source mode `repair`) written as outbox entries that the relay publishes to the change
//! and state topics (the relay must run), so every sink heals alike, under the
//! reconciler's delete guard and a rate limit.

pub mod epoch;
pub mod findings;
pub mod graph;
pub mod keyed;
pub mod repair;
pub mod report;
pub mod state;
pub mod targets;

use crate::capture::backfill::page::Target;
use crate::capture::CaptureSetting;
use crate::codec::{Codec, SchemaRegistry};
use crate::config::Config;
use crate::error::Context as _;
use crate::reconcile::guard::Budget;
use crate::reconcile::Reconciler;
use crate::sink::VectorSink;
use crate::stats::DriftGauges;
use state::LogState;
use std::sync::Arc;
use std::time::{Duration, Instant};
use targets::Targets;

pub use findings::{classify, entity_hash, AuditClass, AuditReport, Finding, TargetCounts};

/// Where the runbook of a restored Neo4j lives.
pub const RESTORE_RUNBOOK: &str = "docs/runbooks.md#graphcdcstaleskipshigh";

const OUTBOX_UNPUBLISHED: &str =
    include_str!("../../../../deploy/neo4j/queries/audit-outbox-unpublished.cypher");

/// How an audit runs.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// Entities per Neo4j page.
    pub page_size: usize,
    /// Wait before the second look at what differs (and the reconciler's grace for the
    /// sink check).
    pub grace: Duration,
    /// Repair through the log, or only report.
    pub repair: Option<repair::AuditRepairOptions>,
    /// After a repair: how long to wait for graph.state and the sink to converge.
    pub settle_timeout: Duration,
    /// Findings held (and so repaired) per run; more are counted only.
    pub max_findings: usize,
}

/// Default of [`AuditOptions::max_findings`]: about 200 MB of findings.
pub const MAX_FINDINGS: usize = 1_000_000;

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            page_size: 1_000,
            grace: Duration::from_secs(5),
            repair: None,
            settle_timeout: Duration::from_secs(60),
            max_findings: MAX_FINDINGS,
        }
    }
}

/// The outcome of one audit run.
#[derive(Debug, Clone)]
pub struct AuditResult {
    pub found: AuditReport,
    pub repair: Option<repair::AuditRepairOutcome>,
    /// The audit after the repair (the same as `found` without a repair, in a dry run, or
    /// when the guard refused).
    pub remaining: AuditReport,
    /// The epoch bump that ran before the audit (`--bump-epoch`).
    pub epoch: Option<epoch::EpochOutcome>,
}

impl AuditResult {
    /// The guard refused the repair (not a dry run): nothing was published.
    pub fn refused(&self) -> bool {
        self.repair
            .as_ref()
            .is_some_and(|r| r.refused.is_some() && !r.dry_run)
    }

    /// Neo4j, graph.state and the sink agree, and the relay published every outbox entry
    /// the repair wrote.
    pub fn is_clean(&self) -> bool {
        self.remaining.is_clean() && self.repair.as_ref().is_none_or(|r| r.unpublished == 0)
    }
}

/// Audits Neo4j against graph.state (and, with a sink, the sink against graph.state).
pub struct Auditor {
    config: Config,
    graph: neo4rs::Graph,
    codec: Arc<Codec>,
    targets: Targets,
    state: LogState,
    reconciler: Option<Reconciler>,
    budget: Budget,
    db: String,
}

impl Auditor {
    /// An auditor of the graph of `config`; with `sink`, the reconciler's check of that
    /// sink is part of every audit.
    ///
    /// # Errors
    /// `capture.mode = "direct"` (no graph.state), a bad Neo4j or registry config, or a
    /// state topic that cannot be opened.
    pub fn new(config: Config, sink: Option<Arc<dyn VectorSink>>) -> crate::error::Result<Self> {
        crate::error::ensure!(
            config.capture.mode != CaptureSetting::Direct,
            Invalid,
            "{}",
            crate::reconcile::DIRECT_MODE_REFUSAL
        );
        let graph = crate::capture::connect(&config.neo4j)?;
        let codec = Arc::new(Codec::new(SchemaRegistry::from_config(&config.registry)?));
        let targets = Targets::of(&config.mappings)?;
        let state = LogState::open(&config.kafka)?;
        let reconciler = match sink {
            Some(sink) => Some(Reconciler::new(
                config.clone(),
                sink,
                Arc::new(DriftGauges::default()),
            )?),
            None => None,
        };
        let db = config
            .neo4j
            .database
            .clone()
            .unwrap_or_else(|| "neo4j".into());
        Ok(Auditor {
            config,
            graph,
            codec,
            targets,
            state,
            reconciler,
            budget: Budget::default(),
            db,
        })
    }

    /// Run the sink check even when the state topic is not verified to keep every key.
    pub fn allow_non_compacted_state(&mut self, allow: bool) {
        if let Some(r) = &mut self.reconciler {
            r.allow_non_compacted_state(allow);
        }
    }

    /// Keep graph.state's entries, and the keys a pass meets in Neo4j, in files in `dir`
    /// instead of memory (and the sink check's expected state too): memory then stays
    /// flat whatever the size of the graph. Before the first audit.
    ///
    /// # Errors
    /// When the files cannot be created.
    pub fn state_dir(&mut self, dir: &std::path::Path) -> crate::error::Result<()> {
        self.state.keep_on_disk(dir)?;
        if let Some(r) = &mut self.reconciler {
            r.state_dir(dir)?;
        }
        Ok(())
    }

    /// The audited targets.
    pub fn targets(&self) -> &[Target] {
        self.targets.list()
    }

    /// Page Neo4j, compare with graph.state, look again at what differs; then the sink.
    ///
    /// # Errors
    /// When Neo4j, the broker or the sink cannot be read.
    pub async fn check(&mut self, options: &AuditOptions) -> crate::error::Result<AuditReport> {
        let started = Instant::now();
        self.state.catch_up(&self.codec, &self.targets).await?;
        let ctx = self.graph_context();
        let mut report = graph::pass(&ctx, &self.state, options).await?;
        if !report.findings.is_empty() {
            tokio::time::sleep(options.grace).await;
            self.state.catch_up(&self.codec, &self.targets).await?;
            let ctx = self.graph_context();
            graph::second_look(&ctx, &self.state, &mut report, options.page_size).await?;
        }
        if let Some(reconciler) = &mut self.reconciler {
            report.sink = Some(reconciler.check(options.grace).await?);
        }
        report.duration = started.elapsed();
        Ok(report)
    }

    fn graph_context(&self) -> graph::Context<'_> {
        graph::Context {
            graph: &self.graph,
            config: &self.config,
            targets: &self.targets,
            db: &self.db,
        }
    }

    /// Move every version counter into the epoch above graph.state ([`epoch`]): the way out
    /// of a restored Neo4j. Stop the relay first.
    ///
    /// # Errors
    /// When the broker or Neo4j fail (run it again: it is idempotent).
    pub async fn bump_epoch(
        &mut self,
        page_size: usize,
    ) -> crate::error::Result<epoch::EpochOutcome> {
        self.state.catch_up(&self.codec, &self.targets).await?;
        let ctx = self.graph_context();
        epoch::bump(&ctx, &self.state, page_size).await
    }

    /// Repair what `report` found through the log, within the delete guard.
    ///
    /// # Errors
    /// Invalid options, Neo4j or broker errors. A plan the guard refuses is not an error:
    /// the outcome holds the refusal and nothing is published.
    pub async fn repair(
        &mut self,
        report: &AuditReport,
        options: &repair::AuditRepairOptions,
        page_size: usize,
    ) -> crate::error::Result<repair::AuditRepairOutcome> {
        let ctx = graph::Context {
            graph: &self.graph,
            config: &self.config,
            targets: &self.targets,
            db: &self.db,
        };
        repair::repair(&ctx, report, &mut self.budget, options, page_size).await
    }

    /// Of the outbox entries `ids`: how many are still there, and how many of those the
    /// relay may still publish (not marked failed).
    async fn unpublished(&self, ids: &[String]) -> crate::error::Result<(usize, usize)> {
        let (mut unpublished, mut waiting) = (0, 0);
        for chunk in ids.chunks(1_000) {
            let q = neo4rs::query(OUTBOX_UNPUBLISHED).param("ids", chunk.to_vec());
            let mut rows = self.graph.execute(q).await.context("reading the outbox")?;
            if let Some(row) = rows.next().await? {
                unpublished += row.get::<i64>("unpublished").unwrap_or(0) as usize;
                waiting += row.get::<i64>("waiting").unwrap_or(0) as usize;
            }
        }
        Ok((unpublished, waiting))
    }

    /// Audit, repair when asked, and audit again until graph.state and the sink agree
    /// with Neo4j or `settle_timeout` passed.
    ///
    /// # Errors
    /// As [`Auditor::check`] and [`Auditor::repair`].
    pub async fn run_once(&mut self, options: &AuditOptions) -> crate::error::Result<AuditResult> {
        if let Some(r) = &options.repair {
            r.validate()?;
        }
        let found = self.check(options).await?;
        let Some(repair_options) = options.repair.as_ref().filter(|_| !found.is_clean()) else {
            return Ok(AuditResult {
                remaining: found.clone(),
                found,
                repair: None,
                epoch: None,
            });
        };
        let outcome = self
            .repair(&found, repair_options, options.page_size)
            .await?;
        if outcome.dry_run || outcome.refused.is_some() {
            return Ok(AuditResult {
                remaining: found.clone(),
                found,
                repair: Some(outcome),
                epoch: None,
            });
        }
        let until = Instant::now() + options.settle_timeout;
        // The relay publishes the repair's entries; judge again once it did.
        let mut outcome = outcome;
        loop {
            let (unpublished, waiting) = self.unpublished(&outcome.entries).await?;
            outcome.unpublished = unpublished;
            if waiting == 0 || Instant::now() >= until {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if outcome.unpublished > 0 {
            tracing::warn!(
                unpublished = outcome.unpublished,
                "the relay has not published every outbox entry of the repair: is `graphcdc relay` running?"
            );
        }
        let remaining = loop {
            let again = self.check(options).await?;
            if again.is_clean() || Instant::now() >= until {
                break again;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        Ok(AuditResult {
            found,
            repair: Some(outcome),
            remaining,
            epoch: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EntityKind, PropertyValue};
    use state::LogEntry;
    use std::collections::BTreeMap;

    fn live(version: i64, hash: u128) -> LogEntry {
        LogEntry {
            version,
            hash: Some(hash),
            targets: 1,
        }
    }

    #[test]
    fn each_side_against_the_other() {
        use AuditClass::*;
        let deleted = LogEntry {
            version: 5,
            hash: None,
            targets: 1,
        };
        let cases = [
            (Some((1, 7)), None, Some(Uncaptured)),
            (Some((6, 7)), Some(deleted), Some(Uncaptured)),
            (Some((5, 7)), Some(deleted), Some(Uncaptured)),
            (Some((4, 7)), Some(deleted), Some(Behind)),
            (None, Some(live(3, 7)), Some(Lost)),
            (None, Some(deleted), None),
            (None, None, None),
            (Some((3, 7)), Some(live(3, 7)), None),
            (Some((3, 8)), Some(live(3, 7)), Some(Differs)),
            (Some((4, 8)), Some(live(3, 7)), Some(Stale)),
            (Some((4, 7)), Some(live(3, 7)), None),
            (Some((2, 7)), Some(live(3, 7)), Some(Behind)),
        ];
        for (neo4j, log, class) in cases {
            assert_eq!(classify(neo4j, log.as_ref()), class, "{neo4j:?} {log:?}");
        }
    }

    /// Beyond the cap findings are counted, not held, and still make the audit unclean.
    #[test]
    fn findings_beyond_the_cap_are_counted() {
        let mut report = AuditReport {
            targets: vec![TargetCounts::default(), TargetCounts::default()],
            ..AuditReport::default()
        };
        let finding = |target, class, key: &str| Finding {
            class,
            target,
            key: key.into(),
            neo4j_version: None,
            neo4j_hash: None,
            state_version: None,
            bits: 0,
            page_after: None,
        };
        for (i, (target, class)) in [
            (0, AuditClass::Lost),
            (1, AuditClass::Uncaptured),
            (0, AuditClass::Lost),
            (1, AuditClass::Lost),
            (1, AuditClass::Uncaptured),
        ]
        .into_iter()
        .enumerate()
        {
            report.add(finding(target, class, &i.to_string()), 2);
        }
        assert_eq!(report.findings.len(), 2);
        assert_eq!(report.unheld_total(), 3);
        assert_eq!(report.count(AuditClass::Lost), 3);
        assert_eq!(report.count(AuditClass::Uncaptured), 2);
        let counts = report.counts();
        assert_eq!(counts[0][&AuditClass::Lost], 2);
        assert_eq!(counts[1][&AuditClass::Lost], 1);
        assert_eq!(counts[1][&AuditClass::Uncaptured], 2);
        report.findings.clear();
        assert!(!report.is_clean(), "counted findings are drift too");
    }

    #[test]
    fn the_hash_ignores_label_order_and_sees_every_property() {
        let props = |text: &str| {
            BTreeMap::from([("text".to_owned(), PropertyValue::String(text.to_owned()))])
        };
        let a = entity_hash(
            EntityKind::Node,
            &["A".into(), "B".into()],
            None,
            &props("x"),
        );
        let b = entity_hash(
            EntityKind::Node,
            &["B".into(), "A".into()],
            None,
            &props("x"),
        );
        assert_eq!(a, b);
        assert_ne!(
            a,
            entity_hash(EntityKind::Node, &["A".into()], None, &props("x"))
        );
        assert_ne!(
            a,
            entity_hash(
                EntityKind::Node,
                &["A".into(), "B".into()],
                None,
                &props("y")
            )
        );
        assert_ne!(a, 0);
    }
}
