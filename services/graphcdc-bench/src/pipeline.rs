//! Ceiling, pipeline, naive baseline and freshness.

use crate::{per_s, rss_mib, Args, Figure};
use anyhow::Context;
use graphcdc_core::codec::{Codec, Format};
use graphcdc_core::config::Config;
use graphcdc_core::demo::demo_config;
use graphcdc_core::event::{ChangeEvent, Op, PropertyValue};
use graphcdc_core::kafka::{self, ChangePublisher, Cleanup};
use graphcdc_core::mapping::Mapper;
use graphcdc_core::processor::Processor;
use graphcdc_core::sink::edge::EdgeSink;
use graphcdc_core::sink::{CollectionSpec, Fence, VectorSink};
use graphcdc_core::stats::{Health, Stats};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::mocking::MockCluster;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const DIM: usize = 384;
/// Many partitions: the mock broker keeps only about 5 MB per partition.
const PARTITIONS: i32 = 32;

/// A chunk upsert with a 384-d vector and about 1 KB of payload.
fn chunk(i: usize, commit_time_ms: i64) -> ChangeEvent {
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

/// Topics on the mock cluster (kept alive by the caller) or a real broker.
struct Broker {
    mock: Option<MockCluster<'static, rdkafka::producer::DefaultProducerContext>>,
    bootstrap: String,
}

impl Broker {
    fn new(args: &Args) -> anyhow::Result<Self> {
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
    async fn config(&self, run: &str, store: &std::path::Path) -> anyhow::Result<Config> {
        let mut config = demo_config(&self.bootstrap, store)?;
        let suffix = format!("{run}-{}", graphcdc_core::unix_ms());
        let k = &mut config.kafka;
        k.group_id = format!("bench-{suffix}");
        k.changes_topic = format!("bench.{suffix}.changes");
        k.state_topic = format!("bench.{suffix}.state");
        k.dlq_topic = format!("bench.{suffix}.dlq");
        let topics = [
            (k.changes_topic.clone(), Cleanup::Delete),
            (k.state_topic.clone(), Cleanup::Compact),
            (k.dlq_topic.clone(), Cleanup::Delete),
        ];
        match &self.mock {
            Some(mock) => {
                for (topic, _) in &topics {
                    mock.create_topic(topic, PARTITIONS, 1)?;
                }
            }
            None => {
                let refs: Vec<(&str, Cleanup)> =
                    topics.iter().map(|(t, c)| (t.as_str(), *c)).collect();
                kafka::ensure_topics(&config.kafka, &refs, PARTITIONS).await?;
            }
        }
        Ok(config)
    }
}

async fn wait_caught_up(config: &Config, stats: &Stats, total: u64) -> anyhow::Result<Duration> {
    let mut first: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        if first.is_none() && Stats::get(&stats.consumed) > 0 {
            first = Some(Instant::now());
        }
        if Stats::get(&stats.consumed) >= total {
            let k = &config.kafka;
            let lag =
                tokio::task::block_in_place(|| kafka::group_lag(k, &k.group_id, &k.changes_topic))?;
            if lag == 0 {
                return Ok(first.map_or(Duration::ZERO, |t| t.elapsed()));
            }
        }
        anyhow::ensure!(Instant::now() < deadline, "processor did not catch up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn run(args: &Args, figures: &mut Vec<Figure>) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::new(args)?;
    let events: Vec<ChangeEvent> = (0..args.events)
        .map(|i| chunk(i, graphcdc_core::unix_ms()))
        .collect();

    // 1. Ceiling: fenced bulk writes straight into the embedded sink.
    let config = broker
        .config("ceiling", &dir.path().join("ceiling"))
        .await?;
    let mapper = Mapper::new(config.mappings.clone(), config.processor.max_payload_bytes);
    let writes: Vec<_> = events
        .iter()
        .map(|e| mapper.map(e).map(|mut w| w.remove(0)))
        .collect::<Result<_, _>>()?;
    let sink = EdgeSink::open(&dir.path().join("ceiling"))?;
    let mut best = (0usize, 0.0f64);
    for batch in [100, 500, 1_000, 2_000] {
        let spec = CollectionSpec {
            name: format!("ceiling_{batch}"),
            vector_name: "embedding".into(),
            dimension: DIM,
            distance: graphcdc_core::config::Distance::Cosine,
        };
        sink.ensure_collection(&spec).await?;
        let started = Instant::now();
        for chunk in writes.chunks(batch) {
            sink.write(&spec.name, chunk, Fence::Newer).await?;
        }
        let rate = per_s(writes.len(), started.elapsed());
        println!("ceiling: batch {batch:>5}: {rate:>9.0} points/s");
        if rate > best.1 {
            best = (batch, rate);
        }
    }
    figures.push(Figure {
        name: "1. ceiling: embedded sink, fenced bulk write + flush".into(),
        value: format!("{:.0} points/s", best.1),
        note: format!(
            "best batch {}; 384-d, ~1 KB payload, {} points",
            best.0,
            writes.len()
        ),
    });

    // 2. Pipeline: broker → processor → embedded sink, manual commits.
    let mut config = broker
        .config("pipeline", &dir.path().join("pipeline"))
        .await?;
    config.processor.batch_max_events = best.0;
    ChangePublisher::new(&config.kafka, Arc::new(Codec::local()), Format::Avro)?
        .publish_changes(&events)
        .await?;
    let sink: Arc<dyn VectorSink> = Arc::new(EdgeSink::open(&dir.path().join("pipeline"))?);
    let (rss_before, _) = rss_mib();
    let stats = Arc::new(Stats::default());
    let processor = Processor::new(
        config.clone(),
        sink.clone(),
        stats.clone(),
        Arc::new(Health::default()),
    )
    .await?;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(processor.run(shutdown.clone()));
    let elapsed = wait_caught_up(&config, &stats, events.len() as u64).await?;
    shutdown.cancel();
    task.await??;
    let (_, hwm) = rss_mib();
    let pipeline_rate = per_s(events.len(), elapsed);
    println!("pipeline: {pipeline_rate:.0} events/s");
    figures.push(Figure {
        name: "2. pipeline: broker → processor → embedded sink".into(),
        value: format!("{pipeline_rate:.0} events/s"),
        note: format!(
            "{:.2} × ceiling; {} events, batch {}, {}",
            pipeline_rate / best.1,
            events.len(),
            best.0,
            broker_name(args)
        ),
    });

    // 3. Naive baseline: one write and one synchronous commit per event.
    let naive_rate = naive(&broker, args.naive_events, &dir.path().join("naive")).await?;
    figures.push(Figure {
        name: "3. naive: one upsert + one commit per event".into(),
        value: format!("{naive_rate:.0} events/s"),
        note: format!("pipeline is {:.1} × faster", pipeline_rate / naive_rate),
    });

    // 4. Freshness at a fixed rate.
    if args.freshness_seconds > 0 {
        let stats = freshness(&broker, args, &dir.path().join("fresh")).await?;
        let q = |x| (stats.freshness.quantile(x).unwrap_or(0.0) * 1000.0).round();
        figures.push(Figure {
            name: "4. freshness (visible in sink − produced)".into(),
            value: format!("p50 {} ms, p99 {} ms, max {} ms", q(0.5), q(0.99), q(1.0)),
            note: format!(
                "{} events/s for {} s, batch wait 5 ms, linger 1 ms, fetch wait 10 ms",
                args.freshness_rate, args.freshness_seconds
            ),
        });
    }
    figures.push(Figure {
        name: "6. peak RSS during (2)".into(),
        value: format!("{hwm:.0} MiB"),
        note: format!(
            "whole bench process (producer buffers and all {} events in memory included); {rss_before:.0} MiB before the processor started",
            events.len()
        ),
    });
    Ok(())
}

fn broker_name(args: &Args) -> &'static str {
    if args.bootstrap.is_some() {
        "real broker"
    } else {
        "in-process mock broker"
    }
}

async fn naive(broker: &Broker, n: usize, store: &std::path::Path) -> anyhow::Result<f64> {
    let config = broker.config("naive", store).await?;
    let codec = Arc::new(Codec::local());
    let events: Vec<ChangeEvent> = (0..n).map(|i| chunk(i, graphcdc_core::unix_ms())).collect();
    ChangePublisher::new(&config.kafka, codec.clone(), Format::Avro)?
        .publish_changes(&events)
        .await?;
    let mapper = Mapper::new(config.mappings.clone(), config.processor.max_payload_bytes);
    let sink = EdgeSink::open(store)?;
    sink.ensure_collection(&CollectionSpec {
        name: "chunks".into(),
        vector_name: "embedding".into(),
        dimension: DIM,
        distance: graphcdc_core::config::Distance::Cosine,
    })
    .await?;
    let mut client = kafka::client_config(&config.kafka);
    client
        .set("group.id", &config.kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer = client.create().context("naive consumer")?;
    consumer.subscribe(&[&config.kafka.changes_topic])?;
    let mut done = 0;
    let mut started: Option<Instant> = None;
    while done < n {
        let Some(message) =
            tokio::task::block_in_place(|| consumer.poll(Duration::from_millis(100)))
        else {
            continue;
        };
        let message = message?;
        started.get_or_insert_with(Instant::now);
        let payload = rdkafka::Message::payload(&message)
            .unwrap_or_default()
            .to_vec();
        let event = codec.decode_change(&payload).await?;
        for write in mapper.map(&event)? {
            sink.write(
                &write.collection,
                std::slice::from_ref(&write),
                Fence::Newer,
            )
            .await?;
        }
        tokio::task::block_in_place(|| consumer.commit_message(&message, CommitMode::Sync))?;
        done += 1;
    }
    let rate = per_s(n, started.map_or(Duration::ZERO, |s| s.elapsed()));
    println!("naive: {rate:.0} events/s");
    Ok(rate)
}

async fn freshness(
    broker: &Broker,
    args: &Args,
    store: &std::path::Path,
) -> anyhow::Result<Arc<Stats>> {
    let mut config = broker.config("fresh", store).await?;
    config.processor.batch_max_wait_ms = 5;
    for (key, value) in [("linger.ms", "1"), ("fetch.wait.max.ms", "10")] {
        config
            .kafka
            .properties
            .insert(key.into(), graphcdc_core::config::Secret::new(value));
    }
    let publisher = ChangePublisher::new(&config.kafka, Arc::new(Codec::local()), Format::Avro)?;
    let sink: Arc<dyn VectorSink> = Arc::new(EdgeSink::open(store)?);
    let stats = Arc::new(Stats::default());
    let health = Arc::new(Health::default());
    let processor = Processor::new(config.clone(), sink, stats.clone(), health.clone()).await?;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(processor.run(shutdown.clone()));
    while health.assigned_partitions() == 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let per_tick = (args.freshness_rate / 100).max(1) as usize;
    let ticks = args.freshness_seconds * 100;
    let mut interval = tokio::time::interval(Duration::from_millis(10));
    let mut sent = 0usize;
    for _ in 0..ticks {
        interval.tick().await;
        let batch: Vec<ChangeEvent> = (sent..sent + per_tick)
            .map(|i| chunk(i, graphcdc_core::unix_ms()))
            .collect();
        sent += per_tick;
        publisher.publish_changes(&batch).await?;
    }
    wait_caught_up(&config, &stats, sent as u64).await?;
    shutdown.cancel();
    task.await??;
    Ok(stats)
}
