//! The processor against a real broker and the embedded Qdrant: version fence, deletes,
//! DLQ, and transient sink failures.

mod support;

use graphcdc_core::codec::Format;
use graphcdc_core::error::SinkError;
use graphcdc_core::event::Op;
use graphcdc_core::processor::dlq::headers;
use graphcdc_core::stats::Stats;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::{doc, read_topic, DlqRecord, FaultySink, Harness, Model};

const CATCH_UP: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_duplicate_and_out_of_order_versions_never_regress() {
    let h = Harness::new("fence").await;
    let mut events = Vec::new();
    for k in 0..40 {
        let key = format!("doc-{k}");
        for v in 1..=3 {
            events.push(doc(&key, v, Op::Upsert));
        }
        events.push(doc(&key, 2, Op::Upsert)); // stale replay
        events.push(doc(&key, 3, Op::Upsert)); // duplicate
        if k % 4 == 0 {
            events.push(doc(&key, 5, Op::Upsert)); // out of order: 5 before 4
            events.push(doc(&key, 4, Op::Upsert));
        }
    }
    // Deletes: plain, overtaken by an older upsert, and re-created.
    events.extend([
        doc("deleted", 1, Op::Upsert),
        doc("deleted", 2, Op::Delete),
        doc("zombie", 1, Op::Upsert),
        doc("zombie", 2, Op::Delete),
        doc("zombie", 1, Op::Upsert),
        doc("recreated", 1, Op::Upsert),
        doc("recreated", 2, Op::Delete),
        doc("recreated", 3, Op::Upsert),
    ]);
    let model = Model::of(&events);
    let (avro, json) = events.split_at(events.len() / 2);
    h.publisher(Format::Avro).publish_all(avro).await.unwrap();
    h.publisher(Format::Json).publish_all(json).await.unwrap();

    let sink = h.open_sink();
    let stats = h.process_to_end(sink.clone()).await;

    let cmp = model.compare(sink.as_ref()).await;
    assert!(cmp.is_exact(), "{cmp:?}");
    assert_eq!(
        cmp.live_points, 41,
        "40 docs + recreated; deleted and zombie stay deleted"
    );
    let zombie = sink
        .get(
            support::COLLECTION,
            graphcdc_core::mapping::point_id(support::COLLECTION, "zombie"),
        )
        .await
        .unwrap()
        .unwrap();
    assert!(zombie.deleted && zombie.version == 2, "{zombie:?}");
    let applied = Stats::get(&stats.applied);
    let skipped = Stats::get(&stats.skipped_stale);
    assert_eq!(
        applied + skipped,
        events.len() as u64,
        "every write applied or fenced"
    );
    let stale_sent = 40 * 2 + 10 + 1; // replays + duplicates, out-of-order, the zombie
    assert!(
        skipped >= stale_sent,
        "every stale event was fenced: {skipped}"
    );
    assert_eq!(Stats::get(&stats.dlq), 0);
    assert_eq!(h.lag(), 0, "all offsets committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_events_go_to_the_dlq_with_connect_headers_and_the_stream_goes_on() {
    let h = Harness::new("dlq").await;
    let publisher = h.publisher(Format::Avro);
    publisher
        .publish(&doc("before", 1, Op::Upsert))
        .await
        .unwrap();
    let garbage = b"\x13 definitely not an event".to_vec();
    let record = rdkafka::producer::FutureRecord::to(&h.config.kafka.changes_topic)
        .key("garbage-key")
        .payload(&garbage)
        .headers(
            rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
                key: "origin",
                value: Some("test".as_bytes()),
            }),
        );
    publisher
        .producer()
        .send(record, Duration::from_secs(10))
        .await
        .unwrap();
    let mut short = doc("short", 1, Op::Upsert);
    short.vector = Some(vec![1.0, 2.0]);
    publisher.publish(&short).await.unwrap();
    let mut nan = doc("nan", 1, Op::Upsert);
    nan.vector = Some(vec![f32::NAN, 0.0, 0.0, 0.0]);
    publisher.publish(&nan).await.unwrap();
    publisher
        .publish(&doc("after", 1, Op::Upsert))
        .await
        .unwrap();

    let sink = h.open_sink();
    let stats = h.process_to_end(sink.clone()).await;
    assert_eq!(Stats::get(&stats.dlq), 3);
    assert_eq!(
        sink.count_live(support::COLLECTION).await.unwrap(),
        2,
        "the stream went on"
    );

    let dlq = read_topic(&h, &h.config.kafka.dlq_topic, 3).await;
    let by_class: HashMap<String, &DlqRecord> = dlq
        .iter()
        .map(|r| (r.headers[headers::CLASS_NAME].clone(), r))
        .collect();
    let garbage_record = by_class["graphcdc.Undecodable"];
    assert_eq!(
        garbage_record.key.as_deref(),
        Some("garbage-key".as_bytes())
    );
    assert_eq!(
        garbage_record.value.as_deref(),
        Some(garbage.as_slice()),
        "original bytes kept"
    );
    assert_eq!(
        garbage_record.headers["origin"], "test",
        "original headers kept"
    );
    assert_eq!(
        garbage_record.headers[headers::TOPIC],
        h.config.kafka.changes_topic
    );
    let partition: i32 = garbage_record.headers[headers::PARTITION].parse().unwrap();
    assert!((0..support::PARTITIONS).contains(&partition));
    garbage_record.headers[headers::OFFSET]
        .parse::<i64>()
        .unwrap();
    assert!(garbage_record.headers[headers::MESSAGE].contains("first byte 0x13"));
    assert!(
        by_class["graphcdc.VectorDimension"].headers[headers::MESSAGE].contains("2 dimensions")
    );
    assert_eq!(
        by_class["graphcdc.NonFiniteVector"].key.as_deref(),
        Some("nan".as_bytes())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_outage_pauses_commits_nothing_and_loses_nothing() {
    let h = Harness::new("outage").await;
    let down = Arc::new(AtomicBool::new(true));
    let outage = down.clone();
    let sink = Arc::new(FaultySink::new(h.open_sink(), move |_| {
        outage
            .load(Ordering::SeqCst)
            .then(|| SinkError::Unavailable("injected outage".into()))
    }));
    let events = support::churn(50, 300, 11);
    let model = Model::of(&events);
    h.publisher(Format::Avro)
        .publish_all(&events)
        .await
        .unwrap();

    let running = h.start_processor(sink.clone()).await;
    let deadline = std::time::Instant::now() + CATCH_UP;
    while running.health.is_ready() || Stats::get(&running.stats.retries) < 3 {
        assert!(std::time::Instant::now() < deadline, "circuit never opened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        tokio::task::block_in_place(|| h.lag()),
        300,
        "nothing committed during the outage"
    );
    assert_eq!(Stats::get(&running.stats.applied), 0);

    down.store(false, Ordering::SeqCst);
    h.wait_caught_up(CATCH_UP).await;
    assert!(running.health.is_ready(), "circuit closes after recovery");
    let stats = running.stop().await;
    assert!(Stats::get(&stats.retries) >= 3);
    let cmp = model.compare(sink.as_ref()).await;
    assert!(cmp.is_exact(), "{cmp:?}");
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).await.unwrap();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, response)
}

fn metric(body: &str, name: &str) -> u64 {
    body.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing in\n{body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_serves_counters_that_move_and_readiness() {
    let mut h = Harness::new("metrics").await;
    h.config.kafka.properties.insert(
        "statistics.interval.ms".into(),
        graphcdc_core::config::Secret::new("200"),
    );
    let sink = h.open_sink();
    let running = h.start_processor(sink.clone()).await;
    let state = graphcdc_core::ops::OpsState::Processor {
        stats: running.stats.clone(),
        health: running.health.clone(),
        group: h.config.kafka.group_id.clone(),
        topic: h.config.kafka.changes_topic.clone(),
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (addr, _) =
        graphcdc_core::ops::serve("127.0.0.1:0".parse().unwrap(), state, shutdown.clone())
            .await
            .unwrap();
    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    let (_, before) = http_get(addr, "/metrics").await;
    assert_eq!(metric(&before, "graphcdc_points_applied_total"), 0);

    let events = support::churn(20, 100, 1);
    h.publisher(Format::Avro)
        .publish_all(&events)
        .await
        .unwrap();
    h.wait_caught_up(CATCH_UP).await;
    let (status, after) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(metric(&after, "graphcdc_events_consumed_total"), 100);
    let applied = metric(&after, "graphcdc_points_applied_total");
    let skipped = metric(&after, "graphcdc_points_skipped_stale_total");
    assert_eq!(applied + skipped, 100);
    assert_eq!(metric(&after, "graphcdc_freshness_seconds_count"), applied);
    assert_eq!(
        metric(&after, "graphcdc_partitions_assigned"),
        support::PARTITIONS as u64
    );
    let batches = metric(&after, "graphcdc_batches_total");
    assert!(batches > 0);
    assert_eq!(metric(&after, "graphcdc_batch_size_events_count"), batches);
    assert_eq!(metric(&after, "graphcdc_batch_size_events_sum"), 100);
    assert_eq!(
        metric(&after, "graphcdc_apply_duration_seconds_count"),
        batches
    );
    let collection = format!(
        "graphcdc_collection_points_applied_total{{group=\"{}\",topic=\"{}\",collection=\"{}\"}}",
        h.config.kafka.group_id, h.config.kafka.changes_topic, h.config.mappings[0].collection
    );
    assert_eq!(metric(&after, &collection), applied);
    // Per-partition lag from the consumer's statistics: every partition listed, the
    // high watermarks add up to the 100 records, and the lag drains to 0.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (high, lag) = loop {
        let (_, body) = http_get(addr, "/metrics").await;
        let series = |name: &str| -> Vec<u64> {
            body.lines()
                .filter(|l| l.starts_with(&format!("{name}{{")))
                .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
                .collect()
        };
        let high = series("graphcdc_high_watermark_offset");
        let lag = series("graphcdc_consumer_lag_records");
        let done = high.len() == support::PARTITIONS as usize
            && high.iter().sum::<u64>() == 100
            && lag.iter().sum::<u64>() == 0;
        if done || std::time::Instant::now() > deadline {
            break (high, lag);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        high.len(),
        support::PARTITIONS as usize,
        "one series per partition"
    );
    assert_eq!(high.iter().sum::<u64>(), 100, "high watermarks");
    assert_eq!(lag.iter().sum::<u64>(), 0, "lag after catching up");
    assert_eq!(http_get(addr, "/readyz").await.0, 200);
    assert_eq!(http_get(addr, "/nope").await.0, 404);

    running.stop().await;
    assert_eq!(
        http_get(addr, "/readyz").await.0,
        503,
        "a stopped processor is not ready"
    );
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sink_is_a_second_consumer_group_and_gets_the_same_events() {
    let h = Harness::new("two-sinks").await;
    let qdrant = h.open_sink();
    let mut audit_config = h.config.clone();
    audit_config.kafka.group_id = format!("{}-audit", h.config.kafka.group_id);
    audit_config.sink = graphcdc_core::config::SinkConfig::Jsonl {
        path: h.dir.path().join("audit"),
        max_file_bytes: 8 << 10,
    };
    let audit = graphcdc_core::sink::open(&audit_config.sink).unwrap();
    let first = h.start_processor(qdrant.clone()).await;
    let stats = Arc::new(Stats::default());
    let second = graphcdc_core::processor::Processor::new(
        audit_config.clone(),
        audit.clone(),
        stats.clone(),
        Arc::new(graphcdc_core::stats::Health::default()),
    )
    .await
    .unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(second.run(shutdown.clone()));

    let events = support::churn(80, 600, 4);
    let model = Model::of(&events);
    h.publisher(Format::Avro)
        .publish_all(&events)
        .await
        .unwrap();
    h.wait_caught_up(CATCH_UP).await;
    let k = &audit_config.kafka;
    let deadline = std::time::Instant::now() + CATCH_UP;
    while tokio::task::block_in_place(|| {
        graphcdc_core::kafka::group_lag(k, &k.group_id, &k.changes_topic).unwrap()
    }) > 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "audit group did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    first.stop().await;
    shutdown.cancel();
    task.await.unwrap().unwrap();

    for (name, sink) in [("qdrant-edge", &qdrant), ("jsonl", &audit)] {
        let cmp = model.compare(sink.as_ref()).await;
        assert!(cmp.is_exact(), "{name}: {cmp:?}");
    }
    assert_eq!(
        Stats::get(&stats.consumed),
        600,
        "the audit group read every event"
    );
    let files = std::fs::read_dir(h.dir.path().join("audit").join(support::COLLECTION))
        .unwrap()
        .count();
    assert!(files > 1, "audit files rotated: {files}");
}

/// Records compressed with zstd (what many producers and managed services use) are
/// read and applied: librdkafka is built with zstd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_compressed_records_are_read_and_applied() {
    let h = Harness::on_broker_with(
        "zstd",
        &support::bootstrap(),
        &[("compression.type", "zstd")],
        "",
    )
    .await;
    h.apply_exactly(&support::churn(50, 300, 41)).await;
}
