//! `graphcdc reconcile`: proves, or restores, that the sink holds exactly the latest
//! state of every entity in the compacted state topic.
//!
//! A check reads the state topic (to its current end, then follows it), scans the sink
//! page by page and classifies drift ([`classify::DriftClass`]); a repair fixes it in the
//! sink or through corrective events on the change topic ([`repair`]).

pub mod classify;
pub mod expected;
pub mod repair;
pub mod report;

use crate::codec::{Codec, SchemaRegistry};
use crate::config::Config;
use crate::mapping::Mapper;
use crate::sink::VectorSink;
use crate::stats::DriftGauges;
use classify::{DriftClass, DriftReport};
use expected::ExpectedState;
use repair::{RepairMode, RepairOptions, RepairOutcome};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long reading the state topic to its end may take.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(300);

/// How a reconcile run behaves.
#[derive(Debug, Clone)]
pub struct ReconcileOptions {
    /// States younger than this are not judged yet (the processor may be applying them).
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
    /// Each mapped collection's vector, for tombstones that still carry it.
    vector_names: BTreeMap<String, String>,
    expected: ExpectedState,
    gauges: Arc<DriftGauges>,
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
    ) -> anyhow::Result<Self> {
        let codec = Arc::new(Codec::new(SchemaRegistry::from_config(&config.registry)?));
        let mapper = Mapper::new(config.mappings.clone(), config.processor.max_payload_bytes);
        let expected = ExpectedState::open(&config.kafka, &mapper)?;
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
            expected,
            gauges,
        })
    }

    /// Read the state topic to its end, scan the sink, classify, update the gauges.
    ///
    /// # Errors
    /// When the state topic or the sink cannot be read.
    pub async fn check(&mut self, grace: Duration) -> anyhow::Result<DriftReport> {
        let started = Instant::now();
        self.catch_up().await?;
        let mut report = classify::check(
            self.sink.as_ref(),
            &self.expected,
            grace,
            &self.vector_names,
        )
        .await?;
        // Entities created while the sink was scanned reach the sink before their state
        // is read: read again, and an "orphan" the state now knows is no orphan.
        self.catch_up().await?;
        let expected = &self.expected.points;
        report
            .drifts
            .retain(|d| d.class != DriftClass::Orphan || !expected.contains_key(&d.id));
        report.duration = started.elapsed();
        self.record(&report);
        Ok(report)
    }

    /// Read the state topic to its end; on failure start over with a fresh reader (a
    /// record may have been consumed without being applied).
    async fn catch_up(&mut self) -> anyhow::Result<()> {
        let result = self
            .expected
            .catch_up(&self.codec, &self.mapper, CATCH_UP_TIMEOUT)
            .await;
        if result.is_err() {
            self.expected = ExpectedState::open(&self.config.kafka, &self.mapper)?;
        }
        result
    }

    fn record(&self, report: &DriftReport) {
        let counts = report.counts();
        let g = &self.gauges;
        for (class, points) in &counts {
            g.set_drift(class.name(), *points);
        }
        g.last_check.set(crate::unix_ms() as f64 / 1000.0);
        g.last_check_duration.set(report.duration.as_secs_f64());
        g.checks.add(1);
    }

    /// Repair the drift of `report`.
    ///
    /// # Errors
    /// A [`repair::SafetyRefusal`] or sink/broker errors.
    pub async fn repair(
        &self,
        report: &DriftReport,
        options: &RepairOptions,
    ) -> anyhow::Result<RepairOutcome> {
        let outcome = repair::repair(
            &self.config,
            self.sink.as_ref(),
            &self.expected,
            &self.codec,
            &self.mapper,
            report,
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
    pub async fn run_once(&mut self, options: &ReconcileOptions) -> anyhow::Result<OnceResult> {
        let found = self.check(options.grace).await?;
        let Some(repair_options) = options.repair.as_ref().filter(|_| !found.is_clean()) else {
            return Ok(OnceResult {
                remaining: found.clone(),
                found,
                repair: None,
            });
        };
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
    ///
    /// # Errors
    /// None today; the signature leaves room for fatal errors.
    pub async fn run_continuous(
        &mut self,
        options: &ReconcileOptions,
        interval: Duration,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
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
                Err(e) if e.downcast_ref::<repair::SafetyRefusal>().is_some() => {
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
    async fn check_and_repair(&mut self, options: &ReconcileOptions) -> anyhow::Result<()> {
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
            took_ms = report.duration.as_millis() as u64,
            "reconcile check"
        );
        if let Some(repair_options) = &options.repair {
            if !report.is_clean() {
                let outcome = self.repair(&report, repair_options).await?;
                tracing::info!(repaired = outcome.repaired, "drift repaired");
            }
        }
        Ok(())
    }
}
