//! `graphcdc reconcile`: proves, or restores, that the sink holds exactly the latest
//! state of every entity in the compacted state topic.
//!
//! A check reads the state topic (to its current end, then follows it), scans the sink
//! page by page and classifies drift ([`classify::DriftClass`]); every candidate is looked
//! at again before it is reported ([`recheck`]), so a processor applying a live stream
//! causes no false drift. A repair fixes drift in the sink or through corrective events
//! on the change topic ([`repair`]), within the limits of [`guard`]:
//!
//! - the state topic must keep every key (verified at the first check);
//! - an orphan is deleted only once it has been seen in two consecutive checks at the same
//!   version (`--once` with a repair looks again after the grace period instead): a state
//!   record that arrives late is not mistaken for a deletion;
//! - deletes and same-version rewrites stay within a budget per collection and window.

pub mod buckets;
pub mod classify;
pub mod expected;
pub mod fold;
pub mod guard;
pub mod recheck;
pub mod repair;
pub mod report;
pub mod store;

use crate::capture::CaptureSetting;
use crate::codec::{Codec, SchemaRegistry};
use crate::config::Config;
use crate::mapping::Mapper;
use crate::sink::VectorSink;
use crate::stats::DriftGauges;
use classify::{DriftClass, DriftReport};
use expected::ExpectedState;
use guard::Budget;
use recheck::ProcessorPosition;
use repair::{RepairMode, RepairOptions, RepairOutcome};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Why a reconciler refuses `capture.mode = "direct"`.
pub const DIRECT_MODE_REFUSAL: &str = "capture.mode is \"direct\": the direct trigger \
    (deploy/neo4j/direct-trigger.cypher) writes no state topic, so there is nothing to \
    reconcile the sink against (every point would look like an orphan). Direct mode is \
    best effort: at most once, no relationship deletes by default, nothing detects a \
    lost event. Use outbox mode (deploy/neo4j/README.md) to reconcile.";

/// How long reading the state topic to its end may go without a record (the read itself
/// takes as long as the topic needs).
const CATCH_UP_STALL: Duration = Duration::from_secs(60);

/// How a reconcile run behaves.
#[derive(Debug, Clone)]
pub struct ReconcileOptions {
    /// How long a check waits for the processor to apply what the sink lacks, and the
    /// age after which a state the sink lacks is drift whatever the processor's position
    /// ([`recheck`]). `--once` with a repair also waits this long before its second look
    /// at orphans.
    pub grace: Duration,
    /// Repair what is found, or only report.
    pub repair: Option<RepairOptions>,
    /// With log repairs: how long to wait for the processor to apply them before the
    /// final check.
    pub settle_timeout: Duration,
}

/// The outcome of `reconcile --once`.
#[derive(Debug, Clone)]
pub struct OnceResult {
    pub found: DriftReport,
    pub repair: Option<RepairOutcome>,
    /// The check after the repair (the same as `found` without repair or in a dry run).
    pub remaining: DriftReport,
}

/// Compares one sink with the state topic, and repairs it.
pub struct Reconciler {
    config: Config,
    sink: Arc<dyn VectorSink>,
    codec: Arc<Codec>,
    mapper: Mapper,
    /// Vectors for repairs of entities that carry text only, set up at the first repair.
    embeddings: tokio::sync::OnceCell<crate::embed::Embeddings>,
    /// Each mapped collection's vector, for tombstones that still carry it.
    vector_names: BTreeMap<String, String>,
    expected: ExpectedState,
    gauges: Arc<DriftGauges>,
    /// The processor group's position, for the re-check's barrier.
    position: ProcessorPosition,
    /// Orphans of the last check: point → (sink version, consecutive sightings).
    sightings: HashMap<Uuid, (Option<i64>, u32)>,
    /// Deletes and rewrites of the current window, across checks.
    budget: Budget,
    /// Run even when the state topic may drop keys (`--allow-non-compacted-state`).
    allow_non_compacted_state: bool,
    state_topic_verified: bool,
    /// Buckets with candidates at their last rescan ([`buckets`]).
    buckets: buckets::BucketBook,
    /// Every bucket is rescanned at least every this many checks; 1: every check is full.
    rescan_every: u32,
    /// Where the expected state is kept on disk (`None`: in memory).
    state_dir: Option<std::path::PathBuf>,
}

impl Reconciler {
    /// A reconciler of `sink` against the state topic of `config`.
    ///
    /// # Errors
    /// When the registry config is bad or the state topic cannot be opened.
    pub fn new(
        config: Config,
        sink: Arc<dyn VectorSink>,
        gauges: Arc<DriftGauges>,
    ) -> crate::error::Result<Self> {
        crate::error::ensure!(
            config.capture.mode != CaptureSetting::Direct,
            Invalid,
            "{DIRECT_MODE_REFUSAL}"
        );
        let codec = Arc::new(Codec::new(SchemaRegistry::from_config(&config.registry)?));
        let mapper = Mapper::new(config.mappings.clone(), config.processor.max_payload_bytes);
        let expected = ExpectedState::open(&config.kafka, &mapper)?;
        let position = ProcessorPosition::new(&config.kafka)?;
        let vector_names = mapper
            .mappings()
            .iter()
            .map(|m| (m.collection.clone(), m.vector_name.clone()))
            .collect();
        Ok(Reconciler {
            vector_names,
            config,
            sink,
            codec,
            mapper,
            embeddings: tokio::sync::OnceCell::new(),
            expected,
            gauges,
            position,
            sightings: HashMap::new(),
            budget: Budget::default(),
            allow_non_compacted_state: false,
            state_topic_verified: false,
            buckets: buckets::BucketBook::default(),
            rescan_every: 1,
            state_dir: None,
        })
    }

    /// Run without verifying that the state topic keeps every key
    /// ([`guard::verify_state_topic`]), e.g. on a broker that cannot describe topic
    /// configs.
    pub fn allow_non_compacted_state(&mut self, allow: bool) {
        self.allow_non_compacted_state = allow;
    }

    /// Keep the expected state in a file in `dir` ([`store`]) instead of memory: memory
    /// then stays flat whatever the number of entities, and every full check goes bucket
    /// by bucket. Before the first check.
    ///
    /// # Errors
    /// When the file cannot be created.
    pub fn state_dir(&mut self, dir: &std::path::Path) -> crate::error::Result<()> {
        self.expected.keep_on_disk(dir)?;
        self.state_dir = Some(dir.to_owned());
        Ok(())
    }

    /// After a first full check, rescan only the buckets that may have drifted, and every
    /// bucket at least every `checks` checks ([`buckets`]); 1 (the default): every check
    /// scans the whole sink.
    pub fn rescan_every(&mut self, checks: u32) {
        self.rescan_every = checks.max(1);
    }

    /// Read the state topic to its end, scan the sink, look again at what differs,
    /// classify, update the gauges. The first check verifies the state topic first.
    ///
    /// # Errors
    /// When the state topic does not keep every key (unless allowed), or the state topic
    /// or the sink cannot be read.
    pub async fn check(&mut self, grace: Duration) -> crate::error::Result<DriftReport> {
        let started = Instant::now();
        if !self.state_topic_verified {
            if self.allow_non_compacted_state {
                tracing::info!(
                    "state topic configuration not verified (--allow-non-compacted-state)"
                );
            } else {
                guard::verify_state_topic(&self.config.kafka).await?;
            }
            self.state_topic_verified = true;
        }
        self.catch_up().await?;
        let caught_up = started.elapsed();
        let touched = self.expected.take_touched();
        let sink = self.sink.as_ref();
        let pick = match self.rescan_every > 1 && self.buckets.primed() {
            true => buckets::Pick::Changed {
                touched: &touched,
                rescan_every: self.rescan_every,
            },
            false => buckets::Pick::All,
        };
        let on_disk = self.expected.store().path().is_some();
        let mut bucketed = None;
        if on_disk || matches!(pick, buckets::Pick::Changed { .. }) {
            let book = &mut self.buckets;
            bucketed = buckets::scan(sink, &self.expected, &self.vector_names, book, pick).await?;
        }
        if bucketed.is_none() && on_disk {
            let book = &mut self.buckets;
            let all = buckets::Pick::All;
            bucketed = buckets::scan(sink, &self.expected, &self.vector_names, book, all).await?;
        }
        let mut report = match bucketed {
            Some((report, rescanned)) => {
                self.buckets
                    .record(&self.expected, &report, Some(&rescanned));
                report
            }
            None => {
                let report = classify::scan(sink, &self.expected, &self.vector_names).await?;
                self.buckets.record(&self.expected, &report, None);
                report
            }
        };
        let scanned = started.elapsed();
        self.recheck(&mut report, grace).await?;
        tracing::debug!(
            catch_up_ms = caught_up.as_millis() as u64,
            scan_ms = (scanned - caught_up).as_millis() as u64,
            recheck_ms = (started.elapsed() - scanned).as_millis() as u64,
            "check stages"
        );
        self.sight_orphans(&report);
        report.duration = started.elapsed();
        self.record(&report);
        Ok(report)
    }

    /// Remember the orphans of this check: seen again at the same version, one more
    /// sighting; not seen, forgotten.
    fn sight_orphans(&mut self, report: &DriftReport) {
        let previous = std::mem::take(&mut self.sightings);
        for d in report
            .drifts
            .iter()
            .filter(|d| d.class == DriftClass::Orphan)
        {
            let count = match previous.get(&d.id) {
                Some((version, count)) if *version == d.sink_version => count + 1,
                _ => 1,
            };
            self.sightings.insert(d.id, (d.sink_version, count));
        }
    }

    /// Orphans of `report` seen in two consecutive checks (or a check and a second look)
    /// at the same version: the only ones a repair deletes.
    pub fn confirmed_orphans(&self, report: &DriftReport) -> HashSet<Uuid> {
        report
            .drifts
            .iter()
            .filter(|d| d.class == DriftClass::Orphan)
            .filter(|d| {
                self.sightings
                    .get(&d.id)
                    .is_some_and(|(version, count)| *count >= 2 && *version == d.sink_version)
            })
            .map(|d| d.id)
            .collect()
    }

    /// Second look at the orphans of `report` seen once: after `grace`, read the state
    /// topic and those points again; those still orphans at the same version are
    /// confirmed.
    ///
    /// # Errors
    /// When the state topic or the sink cannot be read.
    pub async fn confirm_orphans(
        &mut self,
        report: &DriftReport,
        grace: Duration,
    ) -> crate::error::Result<()> {
        let confirmed = self.confirmed_orphans(report);
        let mut once = report.clone();
        once.drifts
            .retain(|d| d.class == DriftClass::Orphan && !confirmed.contains(&d.id));
        if once.drifts.is_empty() {
            return Ok(());
        }
        tokio::time::sleep(grace).await;
        self.recheck(&mut once, grace).await?;
        for d in once.drifts.iter().filter(|d| d.class == DriftClass::Orphan) {
            if let Some((version, count)) = self.sightings.get_mut(&d.id) {
                if *version == d.sink_version {
                    *count += 1;
                }
            }
        }
        Ok(())
    }

    /// Read the state topic to its end. A failure keeps what was read (the next call
    /// goes on from there); only a reader that lost its place starts over.
    async fn catch_up(&mut self) -> crate::error::Result<()> {
        let result = self
            .expected
            .catch_up(&self.codec, &self.mapper, CATCH_UP_STALL)
            .await;
        if result.is_err() && self.expected.needs_reopen() {
            self.expected = ExpectedState::open(&self.config.kafka, &self.mapper)?;
            if let Some(dir) = &self.state_dir {
                self.expected.keep_on_disk(dir)?;
            }
            self.buckets = buckets::BucketBook::default();
        }
        result
    }

    fn record(&self, report: &DriftReport) {
        let counts = report.counts();
        let g = &self.gauges;
        for (class, points) in &counts {
            g.set_drift(class.name(), *points);
        }
        g.set_drift("foreign", report.foreign_count());
        g.last_check.set(crate::unix_ms() as f64 / 1000.0);
        g.last_check_duration.set(report.duration.as_secs_f64());
        g.checks.add(1);
    }

    /// Repair the drift of `report`: orphans only once confirmed
    /// ([`Reconciler::confirmed_orphans`]), within the budget of [`guard`].
    ///
    /// # Errors
    /// Invalid options, a [`guard::SafetyRefusal`] (not in a dry run: the outcome then
    /// holds it), sink or broker errors.
    pub async fn repair(
        &mut self,
        report: &DriftReport,
        options: &RepairOptions,
    ) -> crate::error::Result<RepairOutcome> {
        options.validate()?;
        let confirmed = self.confirmed_orphans(report);
        let mappings = &self.config.mappings;
        let embeddings = self
            .embeddings
            .get_or_try_init(|| crate::embed::Embeddings::from_mappings(mappings))
            .await?;
        let outcome = repair::repair(
            &repair::Context {
                config: &self.config,
                sink: self.sink.as_ref(),
                expected: &self.expected,
                codec: &self.codec,
                mapper: &self.mapper,
                embeddings,
            },
            report,
            &confirmed,
            &mut self.budget,
            options,
        )
        .await?;
        self.gauges.repaired.add(outcome.repaired as u64);
        Ok(outcome)
    }

    /// Check once, repair when asked, and check again.
    ///
    /// # Errors
    /// As [`Reconciler::check`] and [`Reconciler::repair`].
    pub async fn run_once(
        &mut self,
        options: &ReconcileOptions,
    ) -> crate::error::Result<OnceResult> {
        if let Some(repair_options) = &options.repair {
            repair_options.validate()?;
        }
        let found = self.check(options.grace).await?;
        let Some(repair_options) = options.repair.as_ref().filter(|_| !found.is_clean()) else {
            return Ok(OnceResult {
                remaining: found.clone(),
                found,
                repair: None,
            });
        };
        self.confirm_orphans(&found, options.grace).await?;
        let outcome = self.repair(&found, repair_options).await?;
        if repair_options.dry_run {
            return Ok(OnceResult {
                remaining: found.clone(),
                found,
                repair: Some(outcome),
            });
        }
        let settle_until = Instant::now() + options.settle_timeout;
        let remaining = loop {
            let again = self.check(options.grace).await?;
            let only_ahead = again.drifts.iter().all(|d| d.class == DriftClass::Ahead);
            if only_ahead
                || repair_options.mode == RepairMode::Sink
                || Instant::now() >= settle_until
            {
                break again;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        Ok(OnceResult {
            found,
            repair: Some(outcome),
            remaining,
        })
    }

    /// Check (and repair) every `interval` until `shutdown`. A failing check or repair
    /// (broker or sink unavailable) is counted and retried with backoff; a repair the
    /// delete guard refuses is counted and left for an operator: neither stops the loop.
    /// Orphans are deleted when a check sees them again; the delete budget spans checks.
    ///
    /// # Errors
    /// Invalid repair options, or a state topic that does not keep every key (refused at
    /// the first check, unless allowed).
    pub async fn run_continuous(
        &mut self,
        options: &ReconcileOptions,
        interval: Duration,
        shutdown: CancellationToken,
    ) -> crate::error::Result<()> {
        if let Some(repair_options) = &options.repair {
            repair_options.validate()?;
        }
        let fresh_backoff =
            || crate::processor::retry::Backoff::new(Duration::from_secs(1), interval);
        let mut backoff = fresh_backoff();
        loop {
            let wait = match self.check_and_repair(options).await {
                Ok(()) => {
                    self.gauges.consecutive_failures.set(0.0);
                    backoff = fresh_backoff();
                    interval
                }
                Err(e) if e.downcast_ref::<guard::StateTopicRefusal>().is_some() => return Err(e),
                Err(e) if e.downcast_ref::<guard::SafetyRefusal>().is_some() => {
                    self.gauges.repairs_refused.add(1);
                    tracing::error!(error = %e, "repair refused by the delete guard; run `reconcile --once --dry-run` and repair with --force if the plan is right");
                    interval
                }
                Err(e) => {
                    let g = &self.gauges;
                    g.failures.add(1);
                    g.consecutive_failures
                        .set(g.consecutive_failures.get() + 1.0);
                    let wait = backoff.next_delay();
                    tracing::warn!(error = %format!("{e:#}"), retry_in_ms = wait.as_millis() as u64, "reconcile check failed; retrying");
                    wait
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One round of the continuous mode.
    async fn check_and_repair(&mut self, options: &ReconcileOptions) -> crate::error::Result<()> {
        let report = self.check(options.grace).await?;
        let counts = report.counts();
        tracing::info!(
            drifted = report.drifts.len(),
            missing = counts[&DriftClass::Missing],
            orphan = counts[&DriftClass::Orphan],
            stale = counts[&DriftClass::Stale],
            content_mismatch = counts[&DriftClass::ContentMismatch],
            ahead = counts[&DriftClass::Ahead],
            tombstone_vector = counts[&DriftClass::TombstoneVector],
            stale_vector = counts[&DriftClass::StaleVector],
            missing_vector = counts[&DriftClass::MissingVector],
            foreign = report.foreign_count(),
            not_yet_judged = report.in_grace,
            rechecked = report.rechecked,
            took_ms = report.duration.as_millis() as u64,
            "reconcile check"
        );
        if let Some(repair_options) = &options.repair {
            if !report.is_clean() {
                let outcome = self.repair(&report, repair_options).await?;
                tracing::info!(
                    repaired = outcome.repaired,
                    orphans_deferred = outcome.deferred_orphans,
                    "drift repaired (orphans seen once are deleted when the next check sees them again)"
                );
            }
        }
        Ok(())
    }
}
