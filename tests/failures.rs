//! How the processor fails, against a real broker and the embedded Qdrant: a collection
//! that does not match its mapping stops it at start; one event that keeps causing an
//! internal sink error is narrowed down and sent to the DLQ while the rest of the stream
//! goes on; offsets wait for a sync that made the writes durable, through a crash too; a
//! record too large for the DLQ is truncated, never dropped; a DLQ that refuses records
//! for good stops the process with the reason.

mod support;

use graphcdc_core::codec::Format;
use graphcdc_core::dlq::headers;
use graphcdc_core::event::Op;
use graphcdc_core::mapping::point_id;
use graphcdc_core::processor::Processor;
use graphcdc_core::sink::CollectionSpec;
use graphcdc_core::sink::SinkError;
use graphcdc_core::stats::{Health, Stats};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{doc, read_topic, Call, FaultySink, Harness, Model, COLLECTION};

const CATCH_UP: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_that_does_not_match_its_mapping_stops_the_processor_at_start() {
    let h = Harness::new("mismatch").await;
    let sink = h.open_sink();
    let mut spec = CollectionSpec::from(&h.config.mappings[0]);
    spec.dimension = support::DIM + 4;
    sink.ensure_collection(&spec).await.unwrap();
    let result = Processor::new(
        h.config.clone(),
        sink,
        Arc::new(Stats::default()),
        Arc::new(Health::default()),
    )
    .await;
    let message = format!("{:#}", result.err().expect("refused at start"));
    assert!(
        message.contains(&format!("collection {COLLECTION:?}"))
            && message.contains("expected 4, found 8"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_that_keeps_failing_inside_the_sink_goes_to_the_dlq_and_the_stream_goes_on() {
    let mut h = Harness::new("culprit").await;
    h.config.processor.isolate_after_retries = 2;
    let events: Vec<_> = (0..60)
        .map(|i| doc(&format!("doc-{i}"), 1, Op::Upsert))
        .chain([doc("culprit", 1, Op::Upsert)])
        .chain((60..120).map(|i| doc(&format!("doc-{i}"), 1, Op::Upsert)))
        .collect();
    h.publisher(Format::Avro)
        .publish_all(&events)
        .await
        .unwrap();
    // Writes holding the culprit's point fail with an internal error (a server-side bug
    // triggered by one payload).
    let culprit = point_id(COLLECTION, "culprit");
    let internal_errors = Arc::new(AtomicU64::new(0));
    let counted = internal_errors.clone();
    let sink = Arc::new(FaultySink::new(h.open_sink(), move |call| match call {
        Call::Write(points) if points.iter().any(|p| p.id == culprit) => {
            counted.fetch_add(1, Ordering::SeqCst);
            Some(SinkError::Internal("injected: internal error".into()))
        }
        _ => None,
    }));

    let stats = h.process_to_end(sink.clone()).await;
    assert_eq!(Stats::get(&stats.dlq), 1);
    let dlq = read_topic(&h, &h.config.kafka.dlq_topic, 1).await;
    assert_eq!(dlq[0].key.as_deref(), Some("culprit".as_bytes()));
    assert!(dlq[0].headers[headers::MESSAGE].contains("internal error"));
    let mut model = Model::of(&events);
    model
        .expected
        .remove(&(COLLECTION.to_owned(), "culprit".to_owned()));
    let cmp = model.compare(sink.as_ref()).await;
    assert!(cmp.is_exact(), "{cmp:?}");
    let attempts = internal_errors.load(Ordering::SeqCst);
    assert!(attempts >= 3, "retried before isolating: {attempts}");
}

/// Writes are visible once the sink applied them, and committed only once a sync made
/// them durable: while every sync fails nothing is committed, not after a crash either
/// (the processor dropped mid-run, its revoke commit included); the first sync that
/// succeeds lets everything be committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_wait_for_a_sync_that_made_the_writes_durable() {
    let mut h = Harness::new("unsynced").await;
    // A sync after every batch: the tightest schedule, and no interval to wait for.
    h.config.processor.commit_interval_ms = 0;
    let events = support::churn(50, 300, 17);
    let model = Model::of(&events);
    h.publisher(Format::Avro)
        .publish_all(&events)
        .await
        .unwrap();
    let flush_fails = Arc::new(AtomicBool::new(true));
    let failed_syncs = Arc::new(AtomicU64::new(0));
    let (fails, failed) = (flush_fails.clone(), failed_syncs.clone());
    let sink = Arc::new(FaultySink::new(h.open_sink(), move |call| {
        let fail = matches!(call, Call::Sync) && fails.load(Ordering::SeqCst);
        fail.then(|| {
            failed.fetch_add(1, Ordering::SeqCst);
            SinkError::Unavailable("injected: flush failed".into())
        })
    }));

    let running = h.start_processor(sink.clone()).await;
    let deadline = Instant::now() + CATCH_UP;
    while !model.compare(sink.as_ref()).await.is_exact() {
        assert!(Instant::now() < deadline, "the writes never became visible");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every write is visible; syncs after the last one fail too.
    let seen = failed_syncs.load(Ordering::SeqCst);
    while failed_syncs.load(Ordering::SeqCst) < seen + 3 {
        assert!(Instant::now() < deadline, "no sync after the last write");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lag = tokio::task::block_in_place(|| h.lag());
    assert_eq!(
        lag, 300,
        "offsets committed past writes no sync made durable"
    );

    // A crash: the processor is dropped where it stands (its consumer closes; the revoke
    // commits only offsets a sync covered: none).
    running.task.abort();
    let _ = running.task.await;
    let lag = tokio::task::block_in_place(|| h.lag());
    assert_eq!(lag, 300, "a crash committed offsets of writes not durable");

    flush_fails.store(false, Ordering::SeqCst);
    let stats = h.process_to_end(sink.clone()).await;
    assert_eq!(Stats::get(&stats.dlq), 0);
    let cmp = model.compare(sink.as_ref()).await;
    assert!(cmp.is_exact(), "{cmp:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_too_large_for_the_dlq_is_truncated_and_marked_never_dropped() {
    let mut h = Harness::new("dlq-size").await;
    let publisher = h.publisher(Format::Avro);
    let huge: Vec<u8> = (0..100_000u32).map(|i| 0x13 ^ (i % 251) as u8).collect();
    let record = rdkafka::producer::FutureRecord::to(&h.config.kafka.changes_topic)
        .key("huge")
        .payload(&huge);
    publisher
        .producer()
        .send(record, Duration::from_secs(10))
        .await
        .unwrap();
    publisher
        .publish(&doc("after", 1, Op::Upsert))
        .await
        .unwrap();
    // The processor's producer takes records of 20 kB at most.
    h.config.kafka.properties.insert(
        "message.max.bytes".into(),
        graphcdc_core::config::Secret::new("20000"),
    );

    let sink = h.open_sink();
    let stats = h.process_to_end(sink.clone()).await;
    assert_eq!(Stats::get(&stats.dlq), 1);
    assert_eq!(sink.count_live(COLLECTION).await.unwrap(), 1);
    let dlq = read_topic(&h, &h.config.kafka.dlq_topic, 1).await;
    let value = dlq[0].value.as_deref().unwrap();
    assert!(value.len() < 20_000, "{} bytes", value.len());
    assert!(
        value.len() > 10_000,
        "as much as fits: {} bytes",
        value.len()
    );
    assert_eq!(
        value,
        &huge[..value.len()],
        "a prefix of the original value"
    );
    assert_eq!(dlq[0].headers[headers::TRUNCATED], "100000");
    assert_eq!(dlq[0].key.as_deref(), Some("huge".as_bytes()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dlq_that_refuses_records_for_good_stops_the_processor_with_the_reason() {
    let mut h = Harness::new("dlq-gone").await;
    // A DLQ topic that does not exist (and is not created): the producer learns it is
    // unknown after the metadata propagation time.
    h.config.kafka.dlq_topic = support::unique("never-created");
    h.config.kafka.properties.insert(
        "topic.metadata.propagation.max.ms".into(),
        graphcdc_core::config::Secret::new("2000"),
    );
    h.config.kafka.properties.insert(
        "allow.auto.create.topics".into(),
        graphcdc_core::config::Secret::new("false"),
    );
    let publisher = h.publisher(Format::Avro);
    publisher
        .publish(&doc("before", 1, Op::Upsert))
        .await
        .unwrap();
    let mut short = doc("short", 1, Op::Upsert);
    short.vector = Some(vec![1.0, 2.0]);
    publisher.publish(&short).await.unwrap();

    let running = h.start_processor(h.open_sink()).await;
    let deadline = Instant::now() + CATCH_UP;
    while !running.task.is_finished() {
        assert!(Instant::now() < deadline, "the processor kept retrying");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let error = running
        .task
        .await
        .unwrap()
        .expect_err("stopped with an error");
    let message = format!("{error:#}");
    assert!(
        message.contains(&h.config.kafka.dlq_topic) && message.contains("refuses records"),
        "{message}"
    );
}
