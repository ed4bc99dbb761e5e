//! `graphcdc demo`: the main job on embedded defaults, nothing to install.
//!
//! An in-process Kafka-protocol broker (librdkafka's mock cluster), the embedded Qdrant,
//! and a synthetic GraphRAG change stream go through the real processor code path; the
//! final store is compared with the state computed from the generated stream alone.

pub mod corpus;
pub mod drift;
mod progress;
pub mod stream;
pub mod verify;

use graphcdc_core::codec::{Codec, Format};
use graphcdc_core::config::Config;
use graphcdc_core::embed::Embeddings;
use graphcdc_core::error::Context;
use graphcdc_core::event::ChangeEvent;
use graphcdc_core::kafka::{self, ChangePublisher};
use graphcdc_core::mapping::{EmbeddingConfig, EmbeddingProvider, LOCAL_MODEL};
use graphcdc_core::processor::Processor;
use graphcdc_core::reconcile::repair::{RepairMode, RepairOptions};
use graphcdc_core::reconcile::{ReconcileOptions, Reconciler};
use graphcdc_core::sink::{self, VectorSink};
use graphcdc_core::stats::{DriftGauges, Health, Stats};
use rdkafka::mocking::MockCluster;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use stream::{DemoRecord, StreamShape};
use tokio_util::sync::CancellationToken;

/// Partitions of the demo topics.
const PARTITIONS: i32 = 8;

/// The demo's mapping: chunks and entities with 384-d vectors; files and relationships
/// are consumed but not mapped.
pub fn demo_config(bootstrap: &str, data_dir: &Path) -> graphcdc_core::error::Result<Config> {
    let text = format!(
        r#"
        [kafka]
        bootstrap_servers = "{bootstrap}"
        group_id = "graphcdc-demo"

        [processor]
        batch_max_events = 1000
        batch_max_wait_ms = 20

        [sink]
        kind = "embedded"
        path = "{path}"

        [[mappings]]
        label = "Chunk"
        collection = "chunks"
        dimension = {dim}
        exclude = ["uuid"]

        [[mappings]]
        label = "Entity"
        collection = "entities"
        dimension = {dim}
        exclude = ["uuid"]
        "#,
        path = data_dir.display().to_string().replace('\\', "/"),
        dim = stream::DIMENSION,
    );
    Ok(Config::from_toml(&text)?)
}

/// The embedding the demo's chunk mapping gets when chunks carry text only: the local
/// model over the chunk's `text`.
pub fn demo_embedding() -> EmbeddingConfig {
    EmbeddingConfig {
        template: "{text}".into(),
        provider: EmbeddingProvider::Local,
        model: LOCAL_MODEL.into(),
        model_dir: None,
        url: None,
        api_key: None,
        batch_size: 64,
        concurrency: 1,
        timeout_ms: 120_000,
    }
}

/// What the embedding step did for the chunks.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmbeddingFigures {
    pub model_calls: u64,
    pub embedded: u64,
    pub cache_hits: u64,
}

/// One demo query and the chunks nearest to it.
#[derive(Debug, Clone)]
pub struct QueryResult {
    pub query: &'static str,
    /// The topic its nearest chunk must be on.
    pub topic: &'static str,
    /// (key, text), nearest first.
    pub hits: Vec<(String, String)>,
}

impl QueryResult {
    /// Whether the nearest chunk is on the query's topic.
    pub fn on_topic(&self) -> bool {
        self.hits
            .first()
            .and_then(|(_, text)| corpus::topic_of(text))
            == Some(self.topic)
    }
}

/// What the reconciler did after drift was injected.
#[derive(Debug, Clone, Copy)]
pub struct DriftFigures {
    pub found: usize,
    pub repaired: usize,
    pub remaining: usize,
    pub took: Duration,
}

/// Figures of a demo run.
#[derive(Debug)]
pub struct DemoReport {
    /// Set when drift was injected.
    pub drift: Option<DriftFigures>,
    /// Set when chunks were embedded on the way.
    pub embedding: Option<EmbeddingFigures>,
    /// The demo queries, when chunks were embedded.
    pub search: Vec<QueryResult>,
    pub stats: Arc<Stats>,
    pub comparison: verify::Comparison,
    pub records: usize,
    pub expected_dlq: usize,
    pub elapsed: Duration,
}

impl DemoReport {
    /// Whether the store equals the model, every poison record reached the DLQ, and
    /// injected drift (if any) was repaired.
    pub fn is_ok(&self) -> bool {
        self.comparison.is_exact()
            && Stats::get(&self.stats.dlq) == self.expected_dlq as u64
            && self.drift.is_none_or(|d| d.remaining == 0)
            && self.search.iter().all(QueryResult::on_topic)
    }

    /// `reconcile: …` line when drift was injected.
    pub fn reconcile_line(&self) -> Option<String> {
        self.drift.map(|d| {
            format!(
                "reconcile: drift_found={} repaired={} remaining={} took_ms={}",
                d.found,
                d.repaired,
                d.remaining,
                d.took.as_millis()
            )
        })
    }

    /// What happened, as a short table: records, applied, skipped, DLQ'd by reason,
    /// drift found and repaired, the store against the model.
    pub fn summary(&self) -> String {
        let s = &self.stats;
        let mut rows = vec![
            ("records streamed".to_owned(), self.records.to_string()),
            (
                "points applied".to_owned(),
                Stats::get(&s.applied).to_string(),
            ),
            (
                "skipped (stale or duplicate version)".to_owned(),
                Stats::get(&s.skipped_stale).to_string(),
            ),
            (
                "not mapped to a collection".to_owned(),
                Stats::get(&s.unmapped).to_string(),
            ),
            ("sent to the DLQ".to_owned(), Stats::get(&s.dlq).to_string()),
        ];
        for (reason, n) in s.dlq_by_reason() {
            rows.push((format!("  {reason}"), n.to_string()));
        }
        if let Some(e) = self.embedding {
            rows.push((
                "chunk texts embedded / model calls".to_owned(),
                format!("{} / {}", e.embedded, e.model_calls),
            ));
            rows.push((
                "chunk updates with unchanged text (vector kept)".to_owned(),
                e.cache_hits.to_string(),
            ));
        }
        if let Some(d) = self.drift {
            rows.push((
                "drift found / repaired / left".to_owned(),
                format!("{} / {} / {}", d.found, d.repaired, d.remaining),
            ));
        }
        let c = &self.comparison;
        rows.push((
            "live points (expected)".to_owned(),
            format!("{} ({})", c.live_points, c.expected_live),
        ));
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut table = String::new();
        for (key, value) in rows {
            table.push_str(&format!("  {key:<width$}  {value:>9}\n"));
        }
        for result in &self.search {
            let mark = if result.on_topic() {
                ""
            } else {
                "  (off topic!)"
            };
            table.push_str(&format!("search {:?}{mark}\n", result.query));
            for (key, text) in &result.hits {
                table.push_str(&format!("  {key:<12} {text}\n"));
            }
        }
        table
    }

    /// The closing line: `demo: OK …` or `demo: FAIL …`.
    pub fn line(&self) -> String {
        let s = &self.stats;
        let c = &self.comparison;
        let dlq_ok = Stats::get(&s.dlq) == self.expected_dlq as u64;
        let verdict = if self.is_ok() { "OK" } else { "FAIL" };
        let mut line = format!(
            "demo: {verdict} applied={} skipped_stale={} dlq={} points={} expected={} events={} events_per_s={:.0}",
            Stats::get(&s.applied),
            Stats::get(&s.skipped_stale),
            Stats::get(&s.dlq),
            c.live_points,
            c.expected_live,
            self.records,
            self.records as f64 / self.elapsed.as_secs_f64().max(1e-9),
        );
        if !dlq_ok {
            line.push_str(&format!(" expected_dlq={}", self.expected_dlq));
        }
        if !c.is_exact() {
            line.push_str(&format!(
                " missing={} wrong_version={} wrong_content={} extra={} first={:?}",
                c.missing.len(),
                c.wrong_version.len(),
                c.wrong_content.len(),
                c.extra.len(),
                c.missing
                    .iter()
                    .chain(&c.wrong_version)
                    .chain(&c.wrong_content)
                    .chain(&c.extra)
                    .next()
            ));
        }
        line
    }
}

/// Run the demo with `shape`, keeping the embedded store in `data_dir`; with
/// `inject_drift`, damage the store afterwards and let the reconciler repair it.
///
/// # Errors
/// When the mock broker, the sink or the processor cannot be set up, or the processor
/// does not catch up within two minutes.
pub async fn run(
    shape: StreamShape,
    data_dir: &Path,
    inject_drift: bool,
) -> graphcdc_core::error::Result<DemoReport> {
    let mock = MockCluster::new(1).context("starting the in-process Kafka broker")?;
    let bootstrap = mock.bootstrap_servers();
    let mut config = demo_config(&bootstrap, data_dir)?;
    if shape.embed_chunks {
        config.mappings[0].embedding = Some(demo_embedding());
    }
    let embeddings = Arc::new(Embeddings::from_mappings(&config.mappings).await?);
    let k = &config.kafka;
    for topic in [&k.changes_topic, &k.state_topic, &k.dlq_topic] {
        mock.create_topic(topic, PARTITIONS, 1)
            .with_context(|| format!("creating topic {topic}"))?;
    }

    let generated = stream::generate(shape);
    tracing::info!(
        records = generated.records.len(),
        "producing the demo stream"
    );
    produce(&config, &generated.records).await?;

    let sink: Arc<dyn VectorSink> = sink::open(&config.sink)?;
    let stats = Arc::new(Stats::default());
    let health = Arc::new(Health::default());
    let processor = Processor::with_embeddings(
        config.clone(),
        sink.clone(),
        stats.clone(),
        health.clone(),
        embeddings.clone(),
    )
    .await?;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(processor.run(shutdown.clone()));

    let started = Instant::now();
    let mut first_consumed: Option<Instant> = None;
    let deadline = started + Duration::from_secs(120);
    let mut progress = progress::DemoProgress::new(generated.records.len() as u64);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        progress.update(&stats);
        if first_consumed.is_none() && Stats::get(&stats.consumed) > 0 {
            first_consumed = Some(Instant::now());
        }
        let lag = tokio::task::block_in_place(|| {
            kafka::group_lag(
                &config.kafka,
                &config.kafka.group_id,
                &config.kafka.changes_topic,
            )
        })?;
        if lag == 0 && Stats::get(&stats.consumed) > 0 {
            break;
        }
        if Instant::now() >= deadline {
            return Err(graphcdc_core::Error::external(format!(
                "processor did not catch up in time (lag {lag})"
            )));
        }
        if task.is_finished() {
            return Err(graphcdc_core::Error::internal("processor stopped early"));
        }
    }
    progress.finish(&stats);
    let elapsed = first_consumed.map_or(started.elapsed(), |t| t.elapsed());
    shutdown.cancel();
    task.await.context("processor task")??;
    let chunks = &config.mappings[0];
    let embedding = embeddings
        .stats(&chunks.collection)
        .map(|s| EmbeddingFigures {
            model_calls: s.model_calls.get(),
            embedded: s.embedded.get(),
            cache_hits: s.cache_hits.get(),
        });

    let drift = if inject_drift {
        Some(damage_and_reconcile(&config, sink.clone(), &generated.expected).await?)
    } else {
        None
    };
    let comparison = verify::compare(sink.as_ref(), &generated.expected).await?;
    let mut search = Vec::new();
    if embedding.is_some() {
        // Only topics with a live chunk in the independent model: a small stream may
        // have deleted every chunk of one.
        let live_topics: std::collections::BTreeSet<&str> = generated
            .expected
            .iter()
            .filter(|((collection, _), _)| collection == &chunks.collection)
            .filter_map(|(_, e)| e.text.as_deref().and_then(corpus::topic_of))
            .collect();
        for (query, topic) in corpus::QUERIES
            .into_iter()
            .filter(|(_, topic)| live_topics.contains(topic))
        {
            let hits = graphcdc_core::embed::search::nearest(
                sink.as_ref(),
                &embeddings,
                &chunks.collection,
                &chunks.vector_name,
                query,
                3,
            )
            .await?;
            let hits = hits
                .into_iter()
                .map(|p| {
                    let text = p
                        .payload
                        .as_ref()
                        .and_then(|p| p.get("text"))
                        .and_then(|t| t.as_str())
                        .unwrap_or_default()
                        .to_owned();
                    (p.key, text)
                })
                .collect();
            search.push(QueryResult { query, topic, hits });
        }
    }
    drop(mock);
    Ok(DemoReport {
        drift,
        embedding,
        search,
        stats,
        comparison,
        records: generated.records.len(),
        expected_dlq: generated.expected_dlq,
        elapsed,
    })
}

/// Produce the change stream in order (chunks as Avro wire format, the rest as JSON),
/// then the state topic: the state of each key's newest version, as a correct capture
/// side leaves it (the stream's replays and out-of-order events are deliveries, not
/// states).
async fn produce(config: &Config, records: &[DemoRecord]) -> graphcdc_core::error::Result<()> {
    let codec = Arc::new(Codec::local());
    let avro = ChangePublisher::new(&config.kafka, codec.clone(), Format::Avro)?;
    let json = ChangePublisher::new(&config.kafka, codec, Format::Json)?;
    let events: Vec<&ChangeEvent> = records
        .iter()
        .filter_map(|r| match r {
            DemoRecord::Event(e) => Some(e.as_ref()),
            DemoRecord::Poison { .. } => None,
        })
        .collect();
    let publisher_of = |e: &ChangeEvent| match e.labels.first().map(String::as_str) {
        Some("Chunk") => &avro,
        _ => &json,
    };
    for part in events.chunks(2_000) {
        let (chunks, others): (Vec<ChangeEvent>, Vec<ChangeEvent>) = part
            .iter()
            .map(|e| (*e).clone())
            .partition(|e| std::ptr::eq(publisher_of(e), &avro));
        avro.publish_changes(&chunks).await?;
        json.publish_changes(&others).await?;
    }
    let mut newest: std::collections::BTreeMap<&str, &ChangeEvent> =
        std::collections::BTreeMap::new();
    for event in &events {
        if newest
            .get(event.key.as_str())
            .is_none_or(|e| e.version < event.version)
        {
            newest.insert(&event.key, event);
        }
    }
    let (chunk_states, other_states): (Vec<ChangeEvent>, Vec<ChangeEvent>) = newest
        .values()
        .map(|e| (*e).clone())
        .partition(|e| std::ptr::eq(publisher_of(e), &avro));
    avro.publish_states(&chunk_states).await?;
    json.publish_states(&other_states).await?;
    for record in records {
        if let DemoRecord::Poison { key, value } = record {
            json.publish_raw(key, value).await?;
        }
    }
    Ok(())
}

/// Damage the chunks collection (every drift class but "ahead"), then check, repair in
/// the sink and check again.
async fn damage_and_reconcile(
    config: &Config,
    sink: Arc<dyn VectorSink>,
    expected: &std::collections::BTreeMap<(String, String), stream::Expected>,
) -> graphcdc_core::error::Result<DriftFigures> {
    let mapping = &config.mappings[0];
    let live: Vec<(String, i64)> = expected
        .iter()
        .filter(|((c, _), e)| c == &mapping.collection && e.text.is_some())
        .map(|((_, key), e)| (key.clone(), e.version))
        .collect();
    let plan = drift::DriftPlan {
        missing: 10,
        orphans: 5,
        stale: 5,
        mismatched: 5,
        ahead: 0,
    };
    let mapper = graphcdc_core::mapping::Mapper::new(
        config.mappings.clone(),
        config.processor.max_payload_bytes,
    );
    drift::inject(sink.as_ref(), &mapper, mapping, &live, plan).await?;
    let mut reconciler = Reconciler::new(config.clone(), sink, Arc::new(DriftGauges::default()))?;
    // librdkafka's mock cluster keeps every record but cannot describe topic configs.
    reconciler.allow_non_compacted_state(true);
    let options = ReconcileOptions {
        grace: Duration::ZERO,
        repair: Some(RepairOptions {
            rate_per_s: 10_000,
            ..RepairOptions::new(RepairMode::Sink)
        }),
        settle_timeout: Duration::ZERO,
    };
    let result = reconciler.run_once(&options).await?;
    Ok(DriftFigures {
        found: result.found.drifts.len(),
        repaired: result.repair.map_or(0, |r| r.repaired),
        remaining: result.remaining.drifts.len(),
        took: result.found.duration,
    })
}
