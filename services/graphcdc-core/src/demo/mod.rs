//! `graphcdc demo`: the main job on embedded defaults, nothing to install.
//!
//! An in-process Kafka-protocol broker (librdkafka's mock cluster), the embedded Qdrant,
//! and a synthetic GraphRAG change stream go through the real processor code path; the
//! final store is compared with the state computed from the generated stream alone.

pub mod stream;
pub mod verify;

use crate::codec::{Codec, Format};
use crate::config::Config;
use crate::event::ChangeEvent;
use crate::kafka::{self, ChangePublisher};
use crate::processor::Processor;
use crate::sink::{self, VectorSink};
use crate::stats::{Health, Stats};
use anyhow::Context;
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
pub fn demo_config(bootstrap: &str, data_dir: &Path) -> anyhow::Result<Config> {
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

/// Figures of a demo run.
#[derive(Debug)]
pub struct DemoReport {
    pub stats: Arc<Stats>,
    pub comparison: verify::Comparison,
    pub records: usize,
    pub expected_dlq: usize,
    pub elapsed: Duration,
}

impl DemoReport {
    /// Whether the store equals the model and every poison record reached the DLQ.
    pub fn is_ok(&self) -> bool {
        self.comparison.is_exact() && Stats::get(&self.stats.dlq) == self.expected_dlq as u64
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

/// Run the demo with `shape`, keeping the embedded store in `data_dir`.
///
/// # Errors
/// When the mock broker, the sink or the processor cannot be set up, or the processor
/// does not catch up within two minutes.
pub async fn run(shape: StreamShape, data_dir: &Path) -> anyhow::Result<DemoReport> {
    let mock = MockCluster::new(1).context("starting the in-process Kafka broker")?;
    let bootstrap = mock.bootstrap_servers();
    let config = demo_config(&bootstrap, data_dir)?;
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
    let processor =
        Processor::new(config.clone(), sink.clone(), stats.clone(), health.clone()).await?;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(processor.run(shutdown.clone()));

    let started = Instant::now();
    let mut first_consumed: Option<Instant> = None;
    let deadline = started + Duration::from_secs(120);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
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
        anyhow::ensure!(
            Instant::now() < deadline,
            "processor did not catch up in time (lag {lag})"
        );
        anyhow::ensure!(!task.is_finished(), "processor stopped early");
    }
    let elapsed = first_consumed.map_or(started.elapsed(), |t| t.elapsed());
    shutdown.cancel();
    task.await.context("processor task")??;

    let comparison = verify::compare(sink.as_ref(), &generated.expected).await?;
    drop(mock);
    Ok(DemoReport {
        stats,
        comparison,
        records: generated.records.len(),
        expected_dlq: generated.expected_dlq,
        elapsed,
    })
}

/// Produce the stream in order: chunks as Avro wire format, the rest as JSON.
async fn produce(config: &Config, records: &[DemoRecord]) -> anyhow::Result<()> {
    let codec = Arc::new(Codec::local());
    let avro = ChangePublisher::new(&config.kafka, codec.clone(), Format::Avro)?;
    let json = ChangePublisher::new(&config.kafka, codec, Format::Json)?;
    // Keep per-key order: one publisher per key family, each in stream order.
    let (chunks, others): (Vec<&ChangeEvent>, Vec<&ChangeEvent>) = records
        .iter()
        .filter_map(|r| match r {
            DemoRecord::Event(e) => Some(e.as_ref()),
            DemoRecord::Poison { .. } => None,
        })
        .partition(|e| e.labels.first().is_some_and(|l| l == "Chunk"));
    let chunks: Vec<ChangeEvent> = chunks.into_iter().cloned().collect();
    let others: Vec<ChangeEvent> = others.into_iter().cloned().collect();
    for part in chunks.chunks(2_000) {
        avro.publish_all(part).await?;
    }
    for part in others.chunks(2_000) {
        json.publish_all(part).await?;
    }
    for record in records {
        if let DemoRecord::Poison { key, value } = record {
            json.publish_raw(key, value).await?;
        }
    }
    Ok(())
}
