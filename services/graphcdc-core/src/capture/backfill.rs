//! `graphcdc backfill`: snapshot an existing graph into the change and state topics
//! (source = backfill), label by label, with keyset pagination on the key property.
//!
//! Each page is one short read (writers are never blocked). After a page is
//! acknowledged, a checkpoint file records the last key and the state topic's high
//! watermarks. A resumed backfill first reads what was published after those
//! watermarks, so the page that was cut short is not published twice: every entity
//! lands once per version.

use super::connect;
use crate::codec::{Codec, Format, SchemaRegistry};
use crate::config::{Config, MappingConfig};
use crate::event::{CaptureMode, ChangeEvent, EntityKind, Op, PropertyValue, Source};
use crate::kafka::{self, ChangePublisher};
use anyhow::Context;
use neo4rs::query;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Where a backfill stands; written after every acknowledged page.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Checkpoint {
    /// Per label: last key published, and whether the label is finished.
    pub labels: BTreeMap<String, LabelProgress>,
    /// High watermarks of the state topic when this checkpoint was written.
    pub state_watermarks: BTreeMap<i32, i64>,
}

/// Progress of one label.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LabelProgress {
    pub after: Option<String>,
    pub done: bool,
    pub published: u64,
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

/// Template of the page query (`deploy/neo4j/queries/backfill-page.cypher`).
const PAGE_TEMPLATE: &str = include_str!("../../../../deploy/neo4j/queries/backfill-page.cypher");

/// The page query of one node mapping: keyset pagination on the key property, version
/// from the `CdcVersion` counter when the trigger has one. Label and key property are
/// validated identifiers (config), quoted with backticks.
pub fn page_query(mapping: &MappingConfig) -> Option<String> {
    let label = mapping.label.as_ref()?;
    Some(
        PAGE_TEMPLATE
            .replace("__LABEL__", label)
            .replace("__KEY__", &mapping.key_property),
    )
}

#[derive(Deserialize)]
struct PageRow {
    key: String,
    labels: Vec<String>,
    props: serde_json::Map<String, serde_json::Value>,
    version: i64,
}

/// What a backfill did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BackfillReport {
    pub published: u64,
    /// Entities of the interrupted page found already published on resume.
    pub already_published: u64,
    /// Whether every label is finished.
    pub complete: bool,
}

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
    let graph = connect(&config.neo4j)?;
    let codec = std::sync::Arc::new(Codec::new(SchemaRegistry::from_config(&config.registry)?));
    let publisher = ChangePublisher::new(&config.kafka, codec.clone(), Format::Avro)?;
    let mut checkpoint = Checkpoint::load(checkpoint_path)?;
    let published_since = published_after(config, &codec, &checkpoint.state_watermarks).await?;
    let mut report = BackfillReport::default();
    let db = config
        .neo4j
        .database
        .clone()
        .unwrap_or_else(|| "neo4j".into());
    let mut seen_labels = Vec::new();
    for mapping in &config.mappings {
        let (Some(label), Some(page)) = (mapping.label.clone(), page_query(mapping)) else {
            continue;
        };
        if seen_labels.contains(&label) {
            continue;
        }
        seen_labels.push(label.clone());
        let progress = checkpoint.labels.entry(label.clone()).or_default().clone();
        if progress.done {
            continue;
        }
        let mut after = progress.after.clone();
        let mut published = progress.published;
        let bar = indicatif::ProgressBar::new_spinner().with_message(format!("backfill {label}"));
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg}: {pos} entities, {per_sec}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.set_position(published);
        loop {
            if shutdown.is_cancelled() {
                return Ok(report);
            }
            let mut q = query(&page).param("limit", page_size as i64);
            q = match &after {
                Some(a) => q.param("after", a.as_str()),
                None => q.param("after", neo4rs::BoltType::Null(neo4rs::BoltNull)),
            };
            let mut rows = graph
                .execute(q)
                .await
                .with_context(|| format!("reading {label} page"))?;
            let mut events = Vec::new();
            let mut last = None;
            while let Some(row) = rows.next().await? {
                let row: PageRow = row.to().context("backfill row of unexpected shape")?;
                last = Some(row.key.clone());
                if published_since
                    .get(&row.key)
                    .is_some_and(|v| *v >= row.version)
                {
                    report.already_published += 1;
                    continue;
                }
                events.push(backfill_event(row, &db)?);
            }
            let Some(last) = last else {
                let entry = checkpoint.labels.entry(label.clone()).or_default();
                entry.done = true;
                checkpoint.save(checkpoint_path)?;
                bar.finish();
                tracing::info!(%label, published, "backfill of label complete");
                break;
            };
            super::context::enrich(&graph, &config.mappings, &mut events).await?;
            publisher.publish_all(&events).await?;
            published += events.len() as u64;
            report.published += events.len() as u64;
            checkpoint.state_watermarks = state_watermarks(config)?;
            let entry = checkpoint.labels.entry(label.clone()).or_default();
            entry.after = Some(last.clone());
            entry.published = published;
            checkpoint.save(checkpoint_path)?;
            bar.set_position(published);
            if bar.is_hidden() {
                tracing::info!(%label, published, after = %last, "backfill page published");
            }
            after = Some(last);
        }
    }
    report.complete = checkpoint.labels.values().all(|p| p.done);
    Ok(report)
}

fn backfill_event(row: PageRow, db: &str) -> anyhow::Result<ChangeEvent> {
    let properties: BTreeMap<String, PropertyValue> =
        serde_json::from_value(serde_json::Value::Object(row.props))
            .context("unsupported property value")?;
    let now = crate::unix_ms();
    let labels: Vec<&str> = row.labels.iter().map(String::as_str).collect();
    let mut event = ChangeEvent::node(&row.key, &labels, Op::Upsert, row.version, now);
    event.kind = EntityKind::Node;
    event.properties = properties;
    event.source = Source {
        db: db.to_owned(),
        mode: CaptureMode::Backfill,
    };
    Ok(event)
}

fn state_reader(config: &Config) -> anyhow::Result<BaseConsumer> {
    let mut client = kafka::client_config(&config.kafka);
    client
        .set("group.id", format!("{}-backfill", config.kafka.group_id))
        .set("enable.auto.commit", "false");
    client.create().context("creating state topic reader")
}

/// High watermark of every partition of the state topic.
fn state_watermarks(config: &Config) -> anyhow::Result<BTreeMap<i32, i64>> {
    let reader = state_reader(config)?;
    let topic = &config.kafka.state_topic;
    let metadata = reader.fetch_metadata(Some(topic), kafka::ADMIN_TIMEOUT)?;
    let mut marks = BTreeMap::new();
    for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
        let (_, high) = reader.fetch_watermarks(topic, p.id(), kafka::ADMIN_TIMEOUT)?;
        marks.insert(p.id(), high);
    }
    Ok(marks)
}

/// Keys (with their highest version) published to the state topic after `watermarks`.
async fn published_after(
    config: &Config,
    codec: &Codec,
    watermarks: &BTreeMap<i32, i64>,
) -> anyhow::Result<HashMap<String, i64>> {
    let mut found = HashMap::new();
    if watermarks.is_empty() {
        return Ok(found);
    }
    let now = state_watermarks(config)?;
    let reader = state_reader(config)?;
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
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !remaining.is_empty() {
        let task = "reading the state topic's tail";
        let Some(record) = kafka::poll_record(&reader, deadline, task)? else {
            continue;
        };
        if remaining
            .get(&record.partition)
            .is_some_and(|end| record.offset + 1 >= *end)
        {
            remaining.remove(&record.partition);
        }
        if let (Some(key), Some(payload)) = (&record.key, &record.payload) {
            if let Ok(state) = codec.decode_state(payload).await {
                let version = found
                    .entry(String::from_utf8_lossy(key).into_owned())
                    .or_insert(state.version);
                *version = (*version).max(state.version);
            }
        }
    }
    Ok(found)
}
