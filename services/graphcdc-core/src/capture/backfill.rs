//! `graphcdc backfill`: snapshot an existing graph into the change and state topics
//! (source = backfill), mapping by mapping: the nodes of each mapped label and the
//! relationships of each mapped type, with keyset pagination on the key.
//!
//! A page is selected without a lock, then one write transaction bumps the trigger's
//! `CdcVersion` counter of every entity in it and reads the properties after that lock,
//! so a published version is always paired with the content of that version: a commit
//! that changes the entity either committed before (and is read) or waits and gets a
//! higher version. Properties are serialized exactly as the trigger's
//! `apoc.convert.toJson` does ([`super::canonical`]), without `capture.exclude_properties`.
//! An entity that cannot become an event (a point property) is skipped and counted, not
//! retried forever.
//!
//! After a page is acknowledged, a checkpoint file records the last key and the state
//! topic's high watermarks. A resumed backfill reads what was published after those
//! watermarks for the keys of its first page only, so the page that was cut short is
//! not published twice.

pub mod page;

use crate::codec::{Codec, Format, SchemaRegistry};
use crate::config::Config;
use crate::kafka::{self, ChangePublisher};
use anyhow::Context;
use page::Target;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Where a backfill stands; written after every acknowledged page.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Checkpoint {
    /// Per label (or `[:TYPE]`): last key published, and whether it is finished.
    pub labels: BTreeMap<String, LabelProgress>,
    /// High watermarks of the state topic when this checkpoint was written.
    pub state_watermarks: BTreeMap<i32, i64>,
}

/// Progress of one label or relationship type.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LabelProgress {
    /// Last key published (string or integer, as stored).
    pub after: Option<serde_json::Value>,
    pub done: bool,
    pub published: u64,
    /// Entities skipped because they cannot become an event.
    #[serde(default)]
    pub failed: u64,
}

impl Checkpoint {
    fn load(path: &Path) -> anyhow::Result<Checkpoint> {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("checkpoint {} is corrupt", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Checkpoint::default()),
            Err(e) => Err(e).with_context(|| format!("reading checkpoint {}", path.display())),
        }
    }

    /// Write atomically (temp file + rename).
    fn save(&self, path: &Path) -> anyhow::Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("writing checkpoint {}", path.display()))
    }
}

/// What a backfill did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BackfillReport {
    pub published: u64,
    /// Entities of the interrupted page found already published on resume.
    pub already_published: u64,
    /// Entities skipped because they cannot become an event (logged with the reason).
    pub failed: u64,
    /// Whether every label is finished.
    pub complete: bool,
}

/// A page transaction that fails (a deadlock with a writer, a lost connection) is
/// retried this often before the backfill stops.
const PAGE_ATTEMPTS: u32 = 3;

/// Run (or resume) a backfill with `page_size` entities per page.
///
/// # Errors
/// When Neo4j, the broker or the checkpoint file fail.
pub async fn run(
    config: &Config,
    checkpoint_path: &Path,
    page_size: usize,
    shutdown: CancellationToken,
) -> anyhow::Result<BackfillReport> {
    let graph = super::connect(&config.neo4j)?;
    let codec = std::sync::Arc::new(Codec::new(SchemaRegistry::from_config(&config.registry)?));
    let publisher = ChangePublisher::new(&config.kafka, codec.clone(), Format::Avro)?;
    let reader = state_reader(config)?;
    let mut checkpoint = Checkpoint::load(checkpoint_path)?;
    // Only the first page of this run can have been published by the run before.
    let mut resume_from =
        Some(std::mem::take(&mut checkpoint.state_watermarks)).filter(|marks| !marks.is_empty());
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
        let mut published = progress.published;
        let bar = indicatif::ProgressBar::new_spinner().with_message(format!("backfill {name}"));
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg}: {pos} entities, {per_sec}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.set_position(published);
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
                tracing::info!(label = %name, published, "backfill of label complete");
                break;
            };
            let mut keys = Vec::new();
            if let Some(marks) = resume_from.take() {
                let page_keys = selected.iter().map(|s| page::key_text(&s.key)).collect();
                let done = published_after(config, &reader, &codec, &marks, &page_keys).await?;
                for s in &selected {
                    if done
                        .get(&page::key_text(&s.key))
                        .is_some_and(|v| *v >= s.version)
                    {
                        report.already_published += 1;
                    } else {
                        keys.push(s.key.clone());
                    }
                }
            } else {
                keys = selected.into_iter().map(|s| s.key).collect();
            }
            let mut attempt = 0;
            let (mut events, failed) = loop {
                attempt += 1;
                let read = page::read_locked(
                    &graph,
                    &target,
                    capture,
                    after.as_ref(),
                    page_size,
                    &keys,
                    &db,
                );
                match read.await {
                    Ok(page) => break page,
                    Err(e) if attempt < PAGE_ATTEMPTS => {
                        tracing::warn!(label = %name, error = %format!("{e:#}"), "backfill page failed; retrying");
                        tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
                    }
                    Err(e) => return Err(e),
                }
            };
            for f in &failed {
                tracing::warn!(label = %name, key = %f.key, error = %f.error, "entity cannot become an event; skipped");
            }
            super::context::enrich(&graph, &config.mappings, &mut events).await?;
            publisher.publish_all(&events).await?;
            published += events.len() as u64;
            report.published += events.len() as u64;
            report.failed += failed.len() as u64;
            checkpoint.state_watermarks = state_watermarks(config, &reader)?;
            let entry = checkpoint.labels.entry(name.clone()).or_default();
            entry.after = Some(last.clone());
            entry.published = published;
            entry.failed += failed.len() as u64;
            checkpoint.save(checkpoint_path)?;
            bar.set_position(published);
            if bar.is_hidden() {
                tracing::info!(label = %name, published, after = %last, "backfill page published");
            }
            after = Some(last);
        }
    }
    report.complete = checkpoint.labels.values().all(|p| p.done);
    Ok(report)
}

fn state_reader(config: &Config) -> anyhow::Result<BaseConsumer> {
    let mut client = kafka::client_config(&config.kafka);
    client
        .set("group.id", format!("{}-backfill", config.kafka.group_id))
        .set("enable.auto.commit", "false");
    client.create().context("creating state topic reader")
}

/// High watermark of every partition of the state topic.
fn state_watermarks(config: &Config, reader: &BaseConsumer) -> anyhow::Result<BTreeMap<i32, i64>> {
    let topic = &config.kafka.state_topic;
    tokio::task::block_in_place(|| {
        let metadata = reader.fetch_metadata(Some(topic), kafka::ADMIN_TIMEOUT)?;
        let mut marks = BTreeMap::new();
        for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
            let (_, high) = reader.fetch_watermarks(topic, p.id(), kafka::ADMIN_TIMEOUT)?;
            marks.insert(p.id(), high);
        }
        Ok(marks)
    })
}

/// Reading the state topic's tail fails only when no record arrives for this long: a
/// long tail (live traffic since the interruption) is read to its end however long.
const TAIL_IDLE: Duration = Duration::from_secs(30);

/// Of `keys`, those published to the state topic after `watermarks`, with their highest
/// version. Other keys are not kept.
async fn published_after(
    config: &Config,
    reader: &BaseConsumer,
    codec: &Codec,
    watermarks: &BTreeMap<i32, i64>,
    keys: &HashSet<String>,
) -> anyhow::Result<HashMap<String, i64>> {
    let mut found = HashMap::new();
    let now = state_watermarks(config, reader)?;
    let mut assignment = TopicPartitionList::new();
    let mut remaining: HashMap<i32, i64> = HashMap::new();
    for (partition, from) in watermarks {
        let end = now.get(partition).copied().unwrap_or(*from);
        if end > *from {
            assignment.add_partition_offset(
                &config.kafka.state_topic,
                *partition,
                Offset::Offset(*from),
            )?;
            remaining.insert(*partition, end);
        }
    }
    if remaining.is_empty() {
        return Ok(found);
    }
    reader.assign(&assignment)?;
    let mut deadline = Instant::now() + TAIL_IDLE;
    while !remaining.is_empty() {
        let task = "reading the state topic's tail (no record for 30 s)";
        let Some(record) = kafka::poll_record(reader, deadline, task)? else {
            continue;
        };
        deadline = Instant::now() + TAIL_IDLE;
        if remaining
            .get(&record.partition)
            .is_some_and(|end| record.offset + 1 >= *end)
        {
            remaining.remove(&record.partition);
        }
        let (Some(key), Some(payload)) = (&record.key, &record.payload) else {
            continue;
        };
        let key = String::from_utf8_lossy(key);
        if !keys.contains(key.as_ref()) {
            continue;
        }
        if let Ok(state) = codec.decode_state(payload).await {
            let version = found.entry(key.into_owned()).or_insert(state.version);
            *version = (*version).max(state.version);
        }
    }
    reader.unassign()?;
    Ok(found)
}
