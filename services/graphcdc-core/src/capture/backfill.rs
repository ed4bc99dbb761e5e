//! `graphcdc backfill`: snapshot an existing graph into the change and state topics
//! (source = backfill), mapping by mapping: the nodes of each mapped label and the
//! relationships of each mapped type, with keyset pagination on the key.
//!
//! A page is selected without a lock, then one write transaction bumps the trigger's
//! `CdcVersion` counter of every entity in it, reads the properties after that lock, and
//! writes each entity as an outbox entry at its new version ([`page::write_locked`]): a
//! commit that changes the entity either committed before (and is read) or waits and
//! gets a higher version. The backfill publishes nothing itself: **the relay must run**;
//! it publishes the entries like the trigger's, fenced and in version order per key, so
//! a live change committed after a page is always published after it and graph.state
//! never goes backwards. Properties are serialized exactly as the trigger's
//! `apoc.convert.toJson` does ([`super::canonical`]), without
//! `capture.exclude_properties`. An entity that cannot become an event (a point
//! property) is skipped and counted, not retried forever.
//!
//! After a page commits, a checkpoint file records the last key. A backfill stopped
//! between a page's commit and its checkpoint writes that page again on resume: its
//! entities get a second entry at a higher version, which is harmless (the same
//! content, published after the first).

pub mod page;

use crate::config::Config;
use crate::error::Context;
use crate::event::CaptureMode;
use page::Target;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Where a backfill stands; written after every committed page.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Checkpoint {
    /// Per label (or `[:TYPE]`): last key written, and whether it is finished.
    pub labels: BTreeMap<String, LabelProgress>,
}

/// Progress of one label or relationship type.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LabelProgress {
    /// Last key written (string or integer, as stored).
    pub after: Option<serde_json::Value>,
    pub done: bool,
    /// Outbox entries written (checkpoints of older versions: `published`).
    #[serde(alias = "published")]
    pub written: u64,
    /// Entities skipped because they cannot become an event.
    #[serde(default)]
    pub failed: u64,
}

impl Checkpoint {
    fn load(path: &Path) -> crate::error::Result<Checkpoint> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("checkpoint {} is corrupt", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Checkpoint::default()),
            Err(e) => Err(e).with_context(|| format!("reading checkpoint {}", path.display())),
        }
    }

    /// Write atomically (temp file + rename).
    fn save(&self, path: &Path) -> crate::error::Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("writing checkpoint {}", path.display()))
    }
}

/// What a backfill did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BackfillReport {
    /// Outbox entries written (the relay publishes them).
    pub written: u64,
    /// Entities skipped because they cannot become an event (logged with the reason).
    pub failed: u64,
    /// Whether every label is finished.
    pub complete: bool,
}

/// A page transaction that fails (a deadlock with a writer, a lost connection) is
/// retried this often before the backfill stops.
const PAGE_ATTEMPTS: u32 = 3;

/// Run (or resume) a backfill with `page_size` entities per page: outbox entries that
/// the relay publishes.
///
/// # Errors
/// When Neo4j or the checkpoint file fail.
pub async fn run(
    config: &Config,
    checkpoint_path: &Path,
    page_size: usize,
    shutdown: CancellationToken,
) -> crate::error::Result<BackfillReport> {
    let graph = super::connect(&config.neo4j)?;
    let mut checkpoint = Checkpoint::load(checkpoint_path)?;
    let mut report = BackfillReport::default();
    let db = config
        .neo4j
        .database
        .clone()
        .unwrap_or_else(|| "neo4j".into());
    let mut seen = Vec::new();
    for target in config.mappings.iter().filter_map(Target::of) {
        let name = target.name();
        if seen.contains(&name) {
            continue;
        }
        seen.push(name.clone());
        let progress = checkpoint.labels.entry(name.clone()).or_default().clone();
        if progress.done {
            continue;
        }
        let mut after = progress.after.clone();
        let mut written = progress.written;
        let bar = indicatif::ProgressBar::new_spinner().with_message(format!("backfill {name}"));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {msg}: {pos} outbox entries written, {per_sec} (the relay publishes them)",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.set_position(written);
        loop {
            if shutdown.is_cancelled() {
                return Ok(report);
            }
            let capture = &config.capture;
            let selected =
                page::select(&graph, &target, capture, after.as_ref(), page_size).await?;
            let Some(last) = selected.last().map(|s| s.key.clone()) else {
                let entry = checkpoint.labels.entry(name.clone()).or_default();
                entry.done = true;
                checkpoint.save(checkpoint_path)?;
                bar.finish();
                tracing::info!(label = %name, written, "backfill of label complete");
                break;
            };
            let keys: Vec<serde_json::Value> = selected.into_iter().map(|s| s.key).collect();
            let mut attempt = 0;
            let page = loop {
                attempt += 1;
                let write = page::write_locked(
                    &graph,
                    &target,
                    capture,
                    after.as_ref(),
                    page_size,
                    &keys,
                    &db,
                    CaptureMode::Backfill,
                );
                match write.await {
                    Ok(page) => break page,
                    Err(e) if attempt < PAGE_ATTEMPTS => {
                        tracing::warn!(label = %name, error = %format!("{e:#}"), "backfill page failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
                    }
                    Err(e) => return Err(e),
                }
            };
            for f in &page.failed {
                tracing::warn!(label = %name, key = %f.key, error = %f.error, "entity cannot become an event; skipped");
            }
            let failed = page.failed.len() as u64;
            written += page.entries as u64;
            report.written += page.entries as u64;
            report.failed += failed;
            let entry = checkpoint.labels.entry(name.clone()).or_default();
            entry.after = Some(last.clone());
            entry.written = written;
            entry.failed += failed;
            checkpoint.save(checkpoint_path)?;
            bar.set_position(written);
            if bar.is_hidden() {
                tracing::info!(label = %name, written, after = %last, "backfill page written to the outbox");
            }
            after = Some(last);
        }
    }
    report.complete = checkpoint.labels.values().all(|p| p.done);
    Ok(report)
}
