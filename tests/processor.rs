//! The processor against a real broker and the embedded Qdrant: version fence, deletes,
//! DLQ, and transient sink failures.

mod support;

use graphcdc_core::codec::Format;
use graphcdc_core::dlq::headers;
use graphcdc_core::event::Op;
use graphcdc_core::sink::SinkError;
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
async fn batches_in_flight_together_hold_disjoint_keys_and_keep_each_keys_order() {
    let mut h = Harness::new("parallel").await;
    h.config.processor.max_batches_in_flight = 4;
    h.config.processor.batch_max_events = 20;
    // Many keys: two batches of 20 events are often disjoint, so several go out at once.
    let events = support::churn(1_000, 4_000, 7);
    let model = Model::of(&events);
    h.publisher(Format::Avro)
        .publish_all(&events)
        .await
        .unwrap();

    let sink = Arc::new(FaultySink::slow(h.open_sink(), Duration::from_millis(5)));
    let stats = h.process_to_end(sink.clone()).await;

    let cmp = model.compare(sink.as_ref()).await;
    assert!(cmp.is_exact(), "{cmp:?}");
    let writes = &sink.writes;
    let most = writes.max_concurrent.load(Ordering::SeqCst);
    assert!(
        (2..=4).contains(&most),
        "batches were written together, at most 4: {most}"
    );
    assert_eq!(
        writes.overlapping.load(Ordering::SeqCst),
        0,
        "no point in two writes at once"
    );
    assert_eq!(
        writes.regressions.load(Ordering::SeqCst),
        0,
        "each key's versions in order"
    );
    assert_eq!(
        Stats::get(&stats.applied) + Stats::get(&stats.skipped_stale),
        events.len() as u64
    );
    assert_eq!(h.lag(), 0, "all offsets committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_batch_among_several_in_flight_is_retried_alone_and_loses_nothing() {
    let mut h = Harness::new("parallel-retry").await;
    h.config.processor.max_batches_in_flight = 3;
    h.config.processor.batch_max_events = 10;
    h.config.processor.retry_initial_ms = 20;
    let events = support::churn(400, 1_500, 19);
    let model = Model::of(&events);
    h.publisher(Format::Json)
        .publish_all(&events)
        .await
        .unwrap();
    let failures = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let failed = failures.clone();
    let sink = Arc::new(FaultySink::new(h.open_sink(), move |call| match call {
        // Every 5th write that holds a key ending in 3 fails, 3 times in all.
        support::Call::Write(points) if points.iter().any(|p| p.key.ends_with('3')) => {
            let n = failed.fetch_add(1, Ordering::SeqCst);
            (n.is_multiple_of(5) && n < 15).then(|| SinkError::Unavailable("injected".into()))
        }
        _ => None,
    }));
    let stats = h.process_to_end(sink.clone()).await;

    let cmp = model.compare(sink.as_ref()).await;
    assert!(cmp.is_exact(), "{cmp:?}");
    assert!(Stats::get(&stats.retries) >= 3, "the failures were retried");
    let writes = &sink.writes;
    assert!(
        writes.max_concurrent.load(Ordering::SeqCst) >= 2,
        "batches went out together"
    );
    assert_eq!(writes.overlapping.load(Ordering::SeqCst), 0);
    assert_eq!(writes.regressions.load(Ordering::SeqCst), 0);
    assert_eq!(
        Stats::get(&stats.dlq),
        0,
        "an outage sends nothing to the DLQ"
    );
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
        .write_all(
            format!("GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).await.unwrap();
    let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = response.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    (status, body.to_owned())
}

/// `/metrics` of `addr`, parsed by a Prometheus text-format parser.
async fn scrape(addr: std::net::SocketAddr) -> prometheus_parse::Scrape {
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).unwrap()
}

/// Samples of `name` whose labels include every pair of `labels`.
fn samples<'a>(
    scrape: &'a prometheus_parse::Scrape,
    name: &'a str,
    labels: &'a [(&'a str, &'a str)],
) -> impl Iterator<Item = &'a prometheus_parse::Sample> + 'a {
    scrape.samples.iter().filter(move |s| {
        s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
    })
}

/// The value of the one counter, gauge or untyped sample `name` with `labels` (0 when
/// absent, as Prometheus treats a series that was never incremented).
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    use prometheus_parse::Value;
    let found: Vec<f64> = samples(scrape, name, labels)
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            other => panic!("{name} is not a single value: {other:?}"),
        })
        .collect();
    assert!(found.len() <= 1, "{name}{labels:?}: {found:?}");
    found.first().copied().unwrap_or(0.0)
}

/// Bucket counts of the histogram `name` with `labels`, by upper bound.
fn buckets(
    scrape: &prometheus_parse::Scrape,
    name: &str,
    labels: &[(&str, &str)],
) -> Vec<(f64, f64)> {
    let sample = samples(scrape, name, labels)
        .next()
        .unwrap_or_else(|| panic!("{name}{labels:?} missing"));
    match &sample.value {
        prometheus_parse::Value::Histogram(counts) => {
            counts.iter().map(|c| (c.less_than, c.count)).collect()
        }
        other => panic!("{name} is not a histogram: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_serves_counters_that_move_and_readiness() {
    // Before the processor resolves its metric handles.
    graphcdc_core::ops::install_recorder();
    let mut h = Harness::new("metrics").await;
    h.config.kafka.properties.insert(
        "statistics.interval.ms".into(),
        graphcdc_core::config::Secret::new("200"),
    );
    let sink = h.open_sink();
    let running = h.start_processor(sink.clone()).await;
    let readiness = graphcdc_core::ops::Readiness::Processor(running.health.clone());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (addr, _) =
        graphcdc_core::ops::serve("127.0.0.1:0".parse().unwrap(), readiness, shutdown.clone())
            .await
            .unwrap();
    assert_eq!(http_get(addr, "/healthz").await.0, 200);
    let group = h.config.kafka.group_id.clone();
    let topic = h.config.kafka.changes_topic.clone();
    let ours = [("group", group.as_str()), ("topic", topic.as_str())];
    let before = scrape(addr).await;
    assert_eq!(value(&before, "graphcdc_points_applied_total", &ours), 0.0);

    let events = support::churn(20, 100, 1);
    h.publisher(Format::Avro)
        .publish_all(&events)
        .await
        .unwrap();
    h.wait_caught_up(CATCH_UP).await;
    let after = scrape(addr).await;
    assert_eq!(
        value(&after, "graphcdc_events_consumed_total", &ours),
        100.0
    );
    let applied = value(&after, "graphcdc_points_applied_total", &ours);
    let skipped = value(&after, "graphcdc_points_skipped_stale_total", &ours);
    assert_eq!(applied + skipped, 100.0);
    assert_eq!(
        Stats::get(&running.stats.applied) as f64,
        applied,
        "one source"
    );
    assert_eq!(
        value(&after, "graphcdc_freshness_seconds_count", &ours),
        applied
    );
    let freshness = buckets(&after, "graphcdc_freshness_seconds", &ours);
    assert!(
        freshness.iter().any(|(le, _)| *le == 300.0),
        "buckets reach 5 min: {freshness:?}"
    );
    assert_eq!(freshness.last().unwrap().1, applied, "+Inf bucket");
    // Every histogram is exported with its own buckets (a summary has none).
    let apply = buckets(&after, "graphcdc_apply_duration_seconds", &ours);
    assert!(apply.iter().any(|(le, _)| *le == 300.0), "{apply:?}");
    let sizes = buckets(&after, "graphcdc_batch_size_events", &ours);
    assert!(sizes.iter().any(|(le, _)| *le == 5000.0), "{sizes:?}");
    assert_eq!(
        value(&after, "graphcdc_partitions_assigned", &ours),
        f64::from(support::PARTITIONS)
    );
    assert_eq!(value(&after, "graphcdc_ready", &ours), 1.0);
    let batches = value(&after, "graphcdc_batches_total", &ours);
    assert!(batches > 0.0);
    assert_eq!(
        value(&after, "graphcdc_batch_size_events_count", &ours),
        batches
    );
    assert_eq!(
        value(&after, "graphcdc_batch_size_events_sum", &ours),
        100.0
    );
    assert_eq!(
        value(&after, "graphcdc_apply_duration_seconds_count", &ours),
        batches
    );
    let collection = h.config.mappings[0].collection.clone();
    let in_collection = [ours[0], ours[1], ("collection", collection.as_str())];
    assert_eq!(
        value(
            &after,
            "graphcdc_collection_points_applied_total",
            &in_collection
        ),
        applied
    );
    assert!(
        after.docs.contains_key("graphcdc_freshness_seconds"),
        "HELP text"
    );
    // Per-partition lag from the consumer's statistics: every partition listed, the
    // high watermarks add up to the 100 records, and the lag drains to 0.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (high, lag) = loop {
        let body = scrape(addr).await;
        let group_only = [("group", group.as_str()), ("topic", topic.as_str())];
        let series = |name: &str| -> Vec<f64> {
            samples(&body, name, &group_only)
                .map(|s| match s.value {
                    prometheus_parse::Value::Gauge(v) => v,
                    _ => panic!("{name} is a gauge"),
                })
                .collect()
        };
        let high = series("graphcdc_high_watermark_offset");
        let lag = series("graphcdc_consumer_lag_records");
        let done = high.len() == support::PARTITIONS as usize
            && high.iter().sum::<f64>() == 100.0
            && lag.iter().sum::<f64>() == 0.0;
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
    assert_eq!(high.iter().sum::<f64>(), 100.0, "high watermarks");
    assert_eq!(lag.iter().sum::<f64>(), 0.0, "lag after catching up");
    assert_eq!(http_get(addr, "/readyz").await.0, 200);
    assert_eq!(http_get(addr, "/nope").await.0, 404);

    running.stop().await;
    assert_eq!(
        http_get(addr, "/readyz").await.0,
        503,
        "a stopped processor is not ready"
    );
    assert_eq!(value(&scrape(addr).await, "graphcdc_ready", &ours), 0.0);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sink_is_a_second_consumer_group_and_gets_the_same_events() {
    let h = Harness::new("two-sinks").await;
    let qdrant = h.open_sink();
    let mut audit_config = h.config.clone();
    audit_config.kafka.group_id = format!("{}-audit", h.config.kafka.group_id);
    audit_config.sink = graphcdc_core::sink::SinkConfig::Jsonl {
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

    for (name, sink) in [("embedded", &qdrant), ("jsonl", &audit)] {
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

/// Issue 12, item 3: nodes labelled `[Doc, Entity]` lose `Entity` and keep `Doc`. The
/// trigger's upsert says so in `removed_labels`; the processor tombstones them in the
/// entities collection at that version and updates them in docs. The reconciler then finds
/// nothing to do: graph.state's `[Doc]` record expects them absent from entities.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_loses_one_of_two_mapped_labels_leaves_that_collection_only() {
    let entities = "\n[[mappings]]\nlabel = \"Entity\"\ncollection = \"entities\"\ndimension = 4\nvector_property = \"embedding\"\n";
    let h = Harness::with_extra("lost-label", entities).await;
    let both = |key: &str, version: i64| {
        let mut event = doc(key, version, Op::Upsert);
        event.labels.push("Entity".into());
        event
    };
    let keys: Vec<String> = (0..6).map(|i| format!("n{i}")).collect();
    let mut events: Vec<_> = keys.iter().map(|k| both(k, 1)).collect();
    // n0..n3 lose Entity at v2 (n0, n1 in JSON, the rest in Avro); n4, n5 keep both labels.
    let lose = |key: &str| doc(key, 2, Op::Upsert).with_removed_labels(&["Entity"]);
    let json: Vec<_> = keys[..2].iter().map(|k| lose(k)).collect();
    events.extend(keys[2..4].iter().map(|k| lose(k)));
    events.extend(keys[4..].iter().map(|k| both(k, 2)));
    h.publisher(Format::Avro)
        .publish_all(&events)
        .await
        .unwrap();
    h.publisher(Format::Json).publish_all(&json).await.unwrap();

    let sink = h.open_sink();
    let stats = h.process_to_end(sink.clone()).await;
    assert_eq!(Stats::get(&stats.dlq), 0);
    assert_eq!(
        sink.count_live("docs").await.unwrap(),
        6,
        "every node kept Doc"
    );
    assert_eq!(
        sink.count_live("entities").await.unwrap(),
        2,
        "only n4 and n5 are still entities"
    );
    let point = |collection: &'static str, key: &str| {
        let sink = sink.clone();
        let id = graphcdc_core::mapping::point_id(collection, key);
        async move { sink.get(collection, id).await.unwrap().unwrap() }
    };
    for key in &keys[..4] {
        let gone = point("entities", key).await;
        assert!(gone.deleted && gone.version == 2, "{key}: {gone:?}");
        let kept = point("docs", key).await;
        assert!(!kept.deleted && kept.version == 2, "{key}: {kept:?}");
        assert_eq!(kept.payload.unwrap()["text"], format!("{key} v2"));
    }
    for key in &keys[4..] {
        for collection in ["docs", "entities"] {
            let live = point(collection, key).await;
            assert!(
                !live.deleted && live.version == 2,
                "{collection}/{key}: {live:?}"
            );
        }
    }
    drop(sink);
    let check = h.cli(["reconcile", "--once", "--grace", "0s", "--format", "json"]);
    let report = String::from_utf8_lossy(&check.stdout);
    assert_eq!(
        check.status.code(),
        Some(0),
        "{report}{}",
        String::from_utf8_lossy(&check.stderr)
    );
}
