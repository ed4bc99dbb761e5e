//! Ceiling, pipeline and naive baseline, then freshness (`crate::freshness`).
//!
//! The ceiling is the lower of two rates measured in the same run: the sink's fenced
//! bulk write + flush of the pipeline's points, and a bare consumer reading the
//! pipeline's topic from the same broker (`crate::consumer`). The sink and broker are
//! those of `crate::workload`.

use crate::usage::CpuSnapshot;
use crate::workload::{
    broker_name, chunk, open_sink, sink_name, wait_applied_and_committed, Broker, DIM,
};
use crate::{per_s, rss_mib, Args, Figure};
use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use graphcdc_core::codec::{Codec, Format};
use graphcdc_core::config::Config;
use graphcdc_core::event::ChangeEvent;
use graphcdc_core::kafka::{self, ChangePublisher};
use graphcdc_core::mapping::Mapper;
use graphcdc_core::processor::Processor;
use graphcdc_core::sink::embedded::EmbeddedSink;
use graphcdc_core::sink::{CollectionSpec, Fence, VectorSink};
use graphcdc_core::stats::{Health, Stats};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The sink's side of the ceiling: fenced bulk writes of `writes` straight into the
/// sink of `config`, per batch size, `streams` disjoint batches at once, then a flush;
/// the best (batch, points/s).
async fn sink_ceiling(
    writes: &[graphcdc_core::mapping::PointWrite],
    config: &Config,
    streams: usize,
) -> anyhow::Result<(usize, f64)> {
    let sink = open_sink(config)?;
    let mut best = (0usize, 0.0f64);
    for batch in [100, 500, 1_000, 2_000] {
        let spec = CollectionSpec {
            name: format!("{}_{batch}", config.mappings[0].collection),
            vector_name: "embedding".into(),
            dimension: DIM,
            distance: graphcdc_core::mapping::Distance::Cosine,
        };
        sink.ensure_collection(&spec).await?;
        let started = Instant::now();
        futures::stream::iter(writes.chunks(batch))
            .map(|chunk| sink.write(&spec.name, chunk, Fence::Newer))
            .buffer_unordered(streams.max(1))
            .try_collect::<Vec<()>>()
            .await?;
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
    let best = sink_ceiling(&writes, &config, args.batches_in_flight).await?;
    drop(writes);

    // 2. Pipeline: broker → processor → embedded sink, manual commits.
    let mut config = broker
        .config("pipeline", &dir.path().join("pipeline"))
        .await?;
    config.processor.batch_max_events = best.0;
    config.processor.commit_interval_ms = args.commit_interval_ms;
    config.processor.max_batches_in_flight = args.batches_in_flight;
    ChangePublisher::new(&config.kafka, Arc::new(Codec::local()), Format::Avro)?
        .publish_changes(&events)
        .await?;
    let sink = open_sink(&config)?;
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
        name: format!(
            "1a. ceiling: {} sink, fenced bulk write + flush",
            sink_name()
        ),
        value: format!("{:.0} points/s", best.1),
        note: format!(
            "best batch {}, {} stream(s); 384-d, ~1 KB payload, {} points",
            best.0,
            args.batches_in_flight,
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
        name: format!(
            "2. pipeline, committed: broker → processor → {} sink → offsets",
            sink_name()
        ),
        value: format!(
            "{pipeline_rate:.0} events/s = **{:.2} × ceiling**",
            pipeline_rate / ceiling
        ),
        note: format!(
            "first event consumed to the group's lag 0; {:.2} × sink, {:.2} × bare consumer; {} events, batch {}, {} batch(es) in flight, commit interval {} ms, {}",
            pipeline_rate / best.1,
            pipeline_rate / consumer_rate,
            events.len(),
            best.0,
            args.batches_in_flight,
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

async fn naive(broker: &Broker, n: usize, store: &std::path::Path) -> anyhow::Result<f64> {
    let config = broker.config("naive", store).await?;
    let codec = Arc::new(Codec::local());
    let events: Vec<ChangeEvent> = (0..n).map(|i| chunk(i, graphcdc_core::unix_ms())).collect();
    ChangePublisher::new(&config.kafka, codec.clone(), Format::Avro)?
        .publish_changes(&events)
        .await?;
    let mapper = Mapper::new(config.mappings.clone(), config.processor.max_payload_bytes);
    let sink = EmbeddedSink::open(store)?;
    sink.ensure_collection(&CollectionSpec {
        name: "chunks".into(),
        vector_name: "embedding".into(),
        dimension: DIM,
        distance: graphcdc_core::mapping::Distance::Cosine,
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
