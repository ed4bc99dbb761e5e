//! Processes that die, drain, and share a group, against a real broker.

mod support;

use graphcdc_core::codec::Format;
use graphcdc_core::stats::Stats;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::{churn, Harness, Model};

const CATCH_UP: Duration = Duration::from_secs(90);

fn spawn_processor(h: &Harness, log_name: &str) -> Child {
    let log = std::fs::File::create(h.dir.path().join(log_name)).unwrap();
    Command::new(env!("CARGO_BIN_EXE_graphcdc"))
        .args(["process", "--config"])
        .arg(h.config_file())
        .env("RUST_LOG", "info,qdrant_edge=error")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting graphcdc process")
}

fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Wait until the group's lag drops below `below` (the child made progress).
async fn wait_progress(h: &Harness, below: i64, child: &mut Child) {
    let deadline = Instant::now() + CATCH_UP;
    loop {
        let lag = tokio::task::block_in_place(|| h.lag());
        if lag < below {
            return;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "processor exited early"
        );
        assert!(Instant::now() < deadline, "no progress: lag {lag}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_nothing_and_regresses_nothing() {
    // CI: 10 kills over 11,000 events; GRAPHCDC_CHAOS_KILLS=100 for the long run.
    let kills_wanted: usize = std::env::var("GRAPHCDC_CHAOS_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let h = Harness::new("sigkill").await;
    let events = churn(500, (kills_wanted + 1) * 1_000, 3);
    let model = Model::of(&events);
    let publisher = h.publisher(Format::Avro);
    let waves: Vec<_> = events.chunks(1_000).collect();
    let mut produced = 0i64;
    let mut kills = 0;
    for (i, wave) in waves.iter().enumerate() {
        publisher.publish_all(wave).await.unwrap();
        produced += wave.len() as i64;
        if i + 1 == waves.len() {
            break;
        }
        let lag_before = tokio::task::block_in_place(|| h.lag());
        let mut child = spawn_processor(&h, &format!("run-{i}.log"));
        wait_progress(&h, lag_before, &mut child).await;
        tokio::time::sleep(Duration::from_millis(20 * (i % 10) as u64)).await;
        signal(&child, "-KILL");
        child.wait().unwrap();
        kills += 1;
    }
    assert_eq!(kills, kills_wanted);
    assert!(
        tokio::task::block_in_place(|| h.lag()) > 0,
        "the kills left work behind"
    );

    let mut last = spawn_processor(&h, "final.log");
    h.wait_caught_up(CATCH_UP).await;
    signal(&last, "-TERM");
    let status = last.wait().unwrap();
    assert!(status.success(), "SIGTERM exits 0: {status:?}");

    let sink = h.open_sink();
    let cmp = model.compare(sink.as_ref()).await;
    assert!(
        cmp.is_exact(),
        "after {kills} kills and {produced} events: {cmp:?}"
    );
    assert_eq!(h.lag(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_batch_commits_and_exits_zero() {
    let h = Harness::new("sigterm").await;
    let events = churn(100, 2_000, 5);
    let model = Model::of(&events);
    h.publisher(Format::Json)
        .publish_all(&events)
        .await
        .unwrap();
    let mut child = spawn_processor(&h, "run.log");
    wait_progress(&h, 2_000, &mut child).await;
    signal(&child, "-TERM");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let log = std::fs::read_to_string(h.dir.path().join("run.log")).unwrap();
    assert!(log.contains("offsets committed, group left"), "{log}");
    let lag_after_drain = h.lag();
    // Everything the stopped process applied is committed: a fresh run finishes the rest
    // and the result is exact.
    let sink = h.open_sink();
    let stats = h.process_to_end(sink.clone()).await;
    assert!(
        Stats::get(&stats.consumed) <= lag_after_drain as u64,
        "the second run re-read only uncommitted records"
    );
    let cmp = model.compare(sink.as_ref()).await;
    assert!(cmp.is_exact(), "{cmp:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processors_split_partitions_and_the_survivor_finishes() {
    let h = Harness::new("group").await;
    let events = churn(300, 3_000, 9);
    let model = Model::of(&events);
    let publisher = h.publisher(Format::Avro);
    let sink = h.open_sink();

    publisher.publish_all(&events[..1_000]).await.unwrap();
    let a = h.start_processor(sink.clone()).await;
    let b = h.start_processor(sink.clone()).await;
    let deadline = Instant::now() + CATCH_UP;
    loop {
        let (pa, pb) = (
            a.health.assigned_partitions(),
            b.health.assigned_partitions(),
        );
        if pa > 0 && pb > 0 && pa + pb == support::PARTITIONS as usize {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "partitions never split: {pa} + {pb}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    publisher.publish_all(&events[1_000..2_000]).await.unwrap();
    h.wait_caught_up(CATCH_UP).await;
    let a_stats = a.stop().await;
    publisher.publish_all(&events[2_000..]).await.unwrap();
    h.wait_caught_up(CATCH_UP).await;
    assert_eq!(
        b.health.assigned_partitions(),
        support::PARTITIONS as usize,
        "the survivor took every partition"
    );
    let b_stats = b.stop().await;

    assert!(Stats::get(&a_stats.consumed) > 0 && Stats::get(&b_stats.consumed) > 0);
    let consumed = Stats::get(&a_stats.consumed) + Stats::get(&b_stats.consumed);
    assert!(consumed >= 3_000, "{consumed}");
    let cmp = model.compare(sink.as_ref()).await;
    assert!(cmp.is_exact(), "{cmp:?}");
}

/// librdkafka keeps a partition's pause flag across unassign and assign. A rebalance
/// error while a batch is retried (every partition paused) is followed by an unassign;
/// when the partitions come back after the retry succeeded, they must be consumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_error_during_retries_leaves_no_partition_paused() {
    use graphcdc_core::processor::rebalance::ProcessorContext;
    use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaErrorCode;
    use rdkafka::{Offset, TopicPartitionList};
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, Mutex};

    let h = Harness::new("rebalance-error").await;
    let events = churn(40, 200, 5);
    h.publisher(Format::Avro)
        .publish_all(&events)
        .await
        .unwrap();
    let context = ProcessorContext {
        revoked: Mutex::new(Vec::new()),
        revoked_during_batch: Mutex::new(Vec::new()),
        retrying: AtomicBool::new(true),
        unsynced: Mutex::new(Default::default()),
        stats: Arc::new(Stats::default()),
        health: Arc::new(graphcdc_core::stats::Health::default()),
    };
    let mut config = graphcdc_core::kafka::client_config(&h.config.kafka);
    config
        .set("group.id", support::unique("manual"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer<ProcessorContext> = config.create_with_context(context).unwrap();
    let mut partitions = TopicPartitionList::new();
    for p in 0..support::PARTITIONS {
        partitions
            .add_partition_offset(&h.config.kafka.changes_topic, p, Offset::Beginning)
            .unwrap();
    }
    // Polls for `for_how_long`, as the processor does also while paused.
    let poll = |for_how_long: Duration, until: usize| {
        let deadline = Instant::now() + for_how_long;
        let mut received = 0;
        while received < until && Instant::now() < deadline {
            if let Some(message) = consumer.poll(Duration::from_millis(100)) {
                message.unwrap();
                received += 1;
            }
        }
        received
    };
    // Retrying: everything assigned is paused.
    consumer.assign(&partitions).unwrap();
    consumer.pause(&partitions).unwrap();
    assert_eq!(poll(Duration::from_secs(2), 1), 0, "paused");
    let error = Rebalance::Error(KafkaError::Rebalance(RDKafkaErrorCode::Fail));
    consumer.context().pre_rebalance(&consumer, &error);
    consumer.unassign().unwrap();
    poll(Duration::from_millis(500), 1);
    // The retry succeeds; later the partitions are assigned again.
    consumer.context().retrying.store(false, Ordering::SeqCst);
    consumer.assign(&partitions).unwrap();
    consumer
        .context()
        .post_rebalance(&consumer, &Rebalance::Assign(&partitions));
    let received = poll(Duration::from_secs(20), events.len());
    assert_eq!(received, events.len(), "partitions left paused");
}
