//! Ceiling, pipeline and naive baseline, then freshness (`crate::freshness`).
//!
//! The ceiling is the lower of two rates measured in the same run: the embedded sink's
//! fenced bulk write + flush of the pipeline's points, and a bare consumer reading the
//! pipeline's topic from the same broker (`crate::consumer`).

use crate::usage::CpuSnapshot;
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
async fn wait_applied_and_committed(
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

/// The sink's side of the ceiling: fenced bulk writes of `writes` straight into the
/// embedded sink, per batch size, then a flush; the best (batch, points/s).
async fn sink_ceiling(
    writes: &[graphcdc_core::mapping::PointWrite],
    store: &std::path::Path,
) -> anyhow::Result<(usize, f64)> {
    let sink = EdgeSink::open(store)?;
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
        // Durable, as the pipeline's commits are: one flush at the end, the fewest the
        // sink can do (the pipeline flushes after every batch, or once per
        // `--commit-interval-ms`).
        sink.sync().await?;
        let rate = per_s(writes.len(), started.elapsed());
        println!("ceiling: batch {batch:>5}: {rate:>9.0} points/s");
        if rate > best.1 {
            best = (batch, rate);
        }
    }
    Ok(best)
}

pub async fn run(args: &Args, figures: &mut Vec<Figure>) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let broker = Broker::new(args)?;
    println!("broker: {}", broker_name(args));
    let events: Vec<ChangeEvent> = (0..args.events)
        .map(|i| chunk(i, graphcdc_core::unix_ms()))
        .collect();
    let config = broker
        .config("ceiling", &dir.path().join("ceiling"))
        .await?;
    let mapper = Mapper::new(config.mappings.clone(), config.processor.max_payload_bytes);

    // 8. Decode and map per event, before anything else runs.
    if args.decode_events > 0 {
        crate::decode::run(args.decode_events, &mapper, figures).await?;
    }

    // 1a. The sink's ceiling: fenced bulk writes straight into the embedded sink.
    let writes: Vec<_> = events
        .iter()
        .map(|e| mapper.map(e).map(|mut w| w.remove(0)))
        .collect::<Result<_, _>>()?;
    let best = sink_ceiling(&writes, &dir.path().join("ceiling")).await?;
    drop(writes);

    // 2. Pipeline: broker → processor → embedded sink, manual commits.
    let mut config = broker
        .config("pipeline", &dir.path().join("pipeline"))
        .await?;
    config.processor.batch_max_events = best.0;
    config.processor.commit_interval_ms = args.commit_interval_ms;
    ChangePublisher::new(&config.kafka, Arc::new(Codec::local()), Format::Avro)?
        .publish_changes(&events)
        .await?;
    let sink: Arc<dyn VectorSink> = Arc::new(EdgeSink::open(&dir.path().join("pipeline"))?);
    let (rss_before, _) = rss_mib();
    let cpu_before = CpuSnapshot::now();
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
    let caught_up = wait_applied_and_committed(
        &config,
        &stats,
        events.len() as u64,
        Duration::from_secs(600),
    )
    .await?;
    let (cpu, cpu_threads) = CpuSnapshot::now().since(&cpu_before);
    shutdown.cancel();
    task.await??;
    let Some((applied, elapsed)) = caught_up else {
        anyhow::bail!("the pipeline did not catch up within 600 s");
    };
    let (_, hwm) = rss_mib();
    let pipeline_rate = per_s(events.len(), elapsed);
    let applied_rate = per_s(events.len(), applied);
    println!("pipeline: {pipeline_rate:.0} events/s committed, {applied_rate:.0} events/s applied");

    // 1b. The broker's ceiling: a bare consumer reading the pipeline's topic.
    let consumer_rate = crate::consumer::bare_consumer_rate(&config, events.len()).await?;
    let ceiling = best.1.min(consumer_rate);
    let bound = if best.1 <= consumer_rate {
        "the sink"
    } else {
        "the broker"
    };
    figures.push(Figure {
        name: "1a. ceiling: embedded sink, fenced bulk write + flush".into(),
        value: format!("{:.0} points/s", best.1),
        note: format!(
            "best batch {}; 384-d, ~1 KB payload, {} points",
            best.0,
            events.len()
        ),
    });
    figures.push(Figure {
        name: "1b. ceiling: bare consumer, same topic and broker (no decode, no sink)".into(),
        value: format!("{consumer_rate:.0} records/s"),
        note: broker_name(args),
    });
    figures.push(Figure {
        name: "1. ceiling = min(1a, 1b)".into(),
        value: format!("{ceiling:.0} events/s"),
        note: format!("bound by {bound}"),
    });
    figures.push(Figure {
        name: "2a. pipeline, applied: every event acknowledged by the sink".into(),
        value: format!(
            "{applied_rate:.0} events/s = **{:.2} × ceiling**",
            applied_rate / ceiling
        ),
        note: format!(
            "first event consumed to the last acknowledged (visible in the sink, durable at the next sync); {:.0} ms of the end-to-end time below is the wait for the last sync and commit",
            (elapsed.saturating_sub(applied)).as_secs_f64() * 1000.0
        ),
    });
    figures.push(Figure {
        name: "2. pipeline, committed: broker → processor → embedded sink → offsets".into(),
        value: format!(
            "{pipeline_rate:.0} events/s = **{:.2} × ceiling**",
            pipeline_rate / ceiling
        ),
        note: format!(
            "first event consumed to the group's lag 0; {:.2} × sink, {:.2} × bare consumer; {} events, batch {}, commit interval {} ms, {}",
            pipeline_rate / best.1,
            pipeline_rate / consumer_rate,
            events.len(),
            best.0,
            args.commit_interval_ms,
            broker_name(args)
        ),
    });
    let mock_note = if args.bootstrap.is_none() {
        " and the in-process mock broker"
    } else {
        ""
    };
    figures.push(Figure {
        name: "5. CPU per 1,000 events during (2)".into(),
        value: format!(
            "{:.0} ms",
            cpu.as_secs_f64() * 1e6 / events.len() as f64
        ),
        note: format!(
            "user + system time of the whole bench process{mock_note}, processor start to caught up ({:.1} s CPU over {:.1} s); threads: {cpu_threads}",
            cpu.as_secs_f64(),
            elapsed.as_secs_f64()
        ),
    });

    // 3. Naive baseline: one write and one synchronous commit per event.
    if args.naive_events > 0 {
        let naive_rate = naive(&broker, args.naive_events, &dir.path().join("naive")).await?;
        figures.push(Figure {
            name: "3. naive: one upsert + one commit per event".into(),
            value: format!("{naive_rate:.0} events/s"),
            note: format!("pipeline is {:.1} × faster", pipeline_rate / naive_rate),
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
    drop(events);

    // 4. Freshness at fixed rates, and 7. the processor's RSS at the fastest.
    if args.freshness_seconds > 0 {
        crate::freshness::run(&broker, args, &dir.path().join("fresh"), figures).await?;
    }
    Ok(())
}

/// Which broker a figure came from.
pub fn broker_name(args: &Args) -> String {
    match &args.bootstrap {
        Some(bootstrap) => format!("broker {bootstrap} (--bootstrap)"),
        None => "in-process mock broker".into(),
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
