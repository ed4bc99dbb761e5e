//! What every run of the bench shares: the broker (the in-process mock or `--bootstrap`),
//! the sink (the embedded engine, or the Qdrant server at `QDRANT_URL`, API key in
//! `QDRANT_API_KEY`, in collections named after the run), the chunk events, and waiting
//! for the processor to catch up.

use crate::Args;
use graphcdc_core::config::Config;
use graphcdc_core::config::Secret;
use graphcdc_core::event::{ChangeEvent, Op, PropertyValue};
use graphcdc_core::kafka;
use graphcdc_core::sink::SinkConfig;
use graphcdc_core::sink::VectorSink;
use graphcdc_core::stats::Stats;
use graphcdc_demo::demo_config;
use rdkafka::mocking::MockCluster;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const DIM: usize = 384;
/// Many partitions: the mock broker keeps only about 5 MB per partition.
pub const PARTITIONS: i32 = 32;

/// A chunk upsert with a 384-d vector and about 1 KB of payload.
pub fn chunk(i: usize, commit_time_ms: i64) -> ChangeEvent {
    let vector = (0..DIM)
        .map(|d| ((i * 31 + d * 7) % 97) as f32 / 97.0 - 0.5)
        .collect();
    ChangeEvent::node(
        &format!("chunk-{i}"),
        &["Chunk"],
        Op::Upsert,
        1,
        commit_time_ms,
    )
    .with_property(
        "text",
        PropertyValue::String(format!("{i:08} {}", "lorem ipsum ".repeat(75))),
    )
    .with_property(
        "title",
        PropertyValue::String(format!("document {}", i / 20)),
    )
    .with_property("position", PropertyValue::Long((i % 20) as i64))
    .with_vector(vector)
}

/// The Qdrant server at `QDRANT_URL`, when set.
fn server_sink() -> Option<SinkConfig> {
    let url = std::env::var("QDRANT_URL").ok()?;
    Some(SinkConfig::Qdrant {
        url,
        api_key: std::env::var("QDRANT_API_KEY").ok().map(Secret::new),
        timeout_ms: 30_000,
    })
}

/// Which sink the figures come from.
pub fn sink_name() -> &'static str {
    match std::env::var_os("QDRANT_URL") {
        Some(_) => "Qdrant server",
        None => "embedded",
    }
}

/// The sink `config` names (the embedded engine, or the server at `QDRANT_URL`).
pub fn open_sink(config: &Config) -> anyhow::Result<Arc<dyn VectorSink>> {
    Ok(graphcdc_core::sink::open(&config.sink)?)
}

/// Topics on the mock cluster (kept alive by the caller) or a real broker.
pub struct Broker {
    mock: Option<MockCluster<'static, rdkafka::producer::DefaultProducerContext>>,
    bootstrap: String,
}

impl Broker {
    pub fn new(args: &Args) -> anyhow::Result<Self> {
        Ok(match &args.bootstrap {
            Some(b) => Broker {
                mock: None,
                bootstrap: b.clone(),
            },
            None => {
                let mock = MockCluster::new(1)?;
                let bootstrap = mock.bootstrap_servers();
                Broker {
                    mock: Some(mock),
                    bootstrap,
                }
            }
        })
    }

    /// A config with its own topics and group, named after `run`.
    pub async fn config(&self, run: &str, store: &std::path::Path) -> anyhow::Result<Config> {
        let mut config = demo_config(&self.bootstrap, store)?;
        let suffix = format!("{run}-{}", graphcdc_core::unix_ms());
        if let Some(server) = server_sink() {
            config.sink = server;
            for m in &mut config.mappings {
                m.collection = format!("{}_{}", m.collection, suffix.replace('-', "_"));
            }
        }
        let k = &mut config.kafka;
        k.group_id = format!("bench-{suffix}");
        k.changes_topic = format!("bench.{suffix}.changes");
        k.state_topic = format!("bench.{suffix}.state");
        k.dlq_topic = format!("bench.{suffix}.dlq");
        match &self.mock {
            // The mock cluster knows no cleanup policies.
            Some(mock) => {
                for topic in [&k.changes_topic, &k.state_topic, &k.dlq_topic] {
                    mock.create_topic(topic, PARTITIONS, 1)?;
                }
            }
            None => kafka::ensure_pipeline_topics(&config.kafka, PARTITIONS).await?,
        }
        Ok(config)
    }
}

/// Time from the first consumed event until the processor has consumed `total` events
/// and its group has no lag; `None` if that takes longer than `limit`.
pub async fn wait_caught_up(
    config: &Config,
    stats: &Stats,
    total: u64,
    limit: Duration,
) -> anyhow::Result<Option<Duration>> {
    Ok(wait_applied_and_committed(config, stats, total, limit)
        .await?
        .map(|(_, committed)| committed))
}

/// Events the sink acknowledged (applied or skipped as stale) or the DLQ took.
fn handled(stats: &Stats) -> u64 {
    [
        &stats.applied,
        &stats.skipped_stale,
        &stats.unmapped,
        &stats.dlq,
    ]
    .into_iter()
    .map(Stats::get)
    .sum()
}

/// Times from the first consumed event until all `total` events were handled (the sink
/// acknowledged them), and until the group had no lag (committed); `None` if that takes
/// longer than `limit`.
pub async fn wait_applied_and_committed(
    config: &Config,
    stats: &Stats,
    total: u64,
    limit: Duration,
) -> anyhow::Result<Option<(Duration, Duration)>> {
    let mut first: Option<Instant> = None;
    let mut applied: Option<Duration> = None;
    let deadline = Instant::now() + limit;
    loop {
        if first.is_none() && Stats::get(&stats.consumed) > 0 {
            first = Some(Instant::now());
        }
        let since_first = || first.map_or(Duration::ZERO, |t| t.elapsed());
        if applied.is_none() && handled(stats) >= total {
            applied = Some(since_first());
        }
        if Stats::get(&stats.consumed) >= total {
            let k = &config.kafka;
            let lag =
                tokio::task::block_in_place(|| kafka::group_lag(k, &k.group_id, &k.changes_topic))?;
            if lag == 0 {
                let committed = since_first();
                return Ok(Some((applied.unwrap_or(committed), committed)));
            }
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Which broker a figure came from.
pub fn broker_name(args: &Args) -> String {
    match &args.bootstrap {
        Some(bootstrap) => format!("broker {bootstrap} (--bootstrap)"),
        None => "in-process mock broker".into(),
    }
}
