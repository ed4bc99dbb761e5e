//! What keeps the reconciler from deleting live points: the highest version wins on the
//! state topic whatever the order, a state topic that drops keys is refused, and an
//! orphan is deleted only on its second sighting.

use super::{counts, expected_counts, populated, repair_options};
use crate::support::{doc, unique, Harness, COLLECTION, PARTITIONS};
use graphcdc_core::codec::Format;
use graphcdc_core::event::Op;
use graphcdc_core::kafka::{self, Cleanup};
use graphcdc_core::mapping::{point_id, Mapper};
use graphcdc_core::reconcile::repair::RepairMode;
use graphcdc_core::reconcile::{ReconcileOptions, Reconciler};
use graphcdc_core::sink::{Fence, VectorSink};
use graphcdc_core::stats::DriftGauges;
use rdkafka::producer::FutureRecord;
use std::sync::Arc;
use std::time::Duration;

fn reconciler(h: &Harness, sink: &Arc<dyn VectorSink>) -> Reconciler {
    Reconciler::new(
        h.config.clone(),
        sink.clone(),
        Arc::new(DriftGauges::default()),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tombstone_then_an_older_upsert_on_the_state_topic_resurrects_nothing() {
    let h = Harness::new("state-order").await;
    let (sink, _) = h
        .apply_exactly(&[
            doc("gone", 5, Op::Upsert),
            doc("gone", 6, Op::Delete),
            doc("kept", 7, Op::Upsert),
        ])
        .await;
    // graph.state goes backwards after the fact (a late relay, a backfill): an older
    // upsert after a tombstone, an older upsert after a newer one; "never" reached only
    // the state topic.
    let publisher = h.publisher(Format::Avro);
    publisher
        .publish_states(&[
            doc("gone", 4, Op::Upsert),
            doc("kept", 3, Op::Upsert),
            doc("never", 5, Op::Upsert),
            doc("never", 6, Op::Delete),
            doc("never", 4, Op::Upsert),
            doc("bare", 5, Op::Upsert),
        ])
        .await
        .unwrap();
    // Another producer's tombstone, without the version header, then an older upsert.
    let record = FutureRecord::<str, [u8]>::to(&h.config.kafka.state_topic).key("bare");
    publisher
        .producer()
        .send(record, Duration::from_secs(10))
        .await
        .unwrap();
    publisher
        .publish_states(&[doc("bare", 4, Op::Upsert)])
        .await
        .unwrap();

    let mut reconciler = reconciler(&h, &sink);
    let found = reconciler.check(Duration::ZERO).await.unwrap();
    assert!(found.is_clean(), "{:?}", found.drifts);
    assert_eq!(found.expected_points, 1, "only 'kept' is expected");
    let options = ReconcileOptions {
        grace: Duration::ZERO,
        repair: Some(repair_options(RepairMode::Sink)),
        settle_timeout: Duration::ZERO,
    };
    let result = reconciler.run_once(&options).await.unwrap();
    assert!(result.repair.is_none() && result.remaining.is_clean());
    for key in ["never", "bare"] {
        let point = sink.get(COLLECTION, point_id(COLLECTION, key)).await;
        assert_eq!(point.unwrap(), None, "{key} was not brought back");
    }
    let gone = sink.get(COLLECTION, point_id(COLLECTION, "gone")).await;
    let gone = gone.unwrap().unwrap();
    assert!(gone.deleted && gone.version == 6, "{gone:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_topic_that_deletes_by_age_is_refused() {
    let h = Harness::new("state-policy").await;
    let (sink, _) = h.apply_exactly(&[doc("a", 1, Op::Upsert)]).await;
    let mut config = h.config.clone();
    config.kafka.state_topic = unique("state-delete");
    let k = &config.kafka;
    kafka::ensure_topics(k, &[(&k.state_topic, Cleanup::Delete)], PARTITIONS)
        .await
        .unwrap();
    let gauges = Arc::new(DriftGauges::default());
    let mut refused = Reconciler::new(config.clone(), sink.clone(), gauges.clone()).unwrap();
    let e = refused.check(Duration::ZERO).await.unwrap_err();
    let message = format!("{e:#}");
    assert!(
        e.downcast_ref::<graphcdc_core::reconcile::guard::StateTopicRefusal>()
            .is_some(),
        "{message}"
    );
    assert!(
        message.contains("cleanup.policy=delete")
            && message.contains("--allow-non-compacted-state"),
        "{message}"
    );
    refused.allow_non_compacted_state(true);
    let orphans = refused.check(Duration::ZERO).await.unwrap();
    assert_eq!(
        orphans.drifts.len(),
        1,
        "runs: the empty topic makes 'a' an orphan"
    );
    // The harness's own (compact) state topic passes.
    assert!(reconciler(&h, &sink).check(Duration::ZERO).await.is_ok());
    drop((refused, sink));

    // The command line refuses it too, and runs with the override.
    let path = h.dir.path().join("delete-policy.toml");
    std::fs::write(
        &path,
        h.toml
            .replace(&h.config.kafka.state_topic, &config.kafka.state_topic),
    )
    .unwrap();
    let run = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_graphcdc"))
            .args(["reconcile", "--once", "--grace", "0s", "--config"])
            .arg(&path)
            .args(extra)
            .env("RUST_LOG", "error")
            .output()
            .unwrap()
    };
    let cli = run(&[]);
    let stderr = String::from_utf8_lossy(&cli.stderr);
    assert_eq!(
        cli.status.code(),
        Some(78),
        "a topic to fix: EX_CONFIG: {stderr}"
    );
    assert!(stderr.contains("cleanup.policy=delete"), "{stderr}");
    let allowed = run(&["--allow-non-compacted-state"]);
    assert_eq!(
        allowed.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphan_is_deleted_only_on_its_second_sighting() {
    let (h, sink, _model) = populated("orphan-twice").await;
    // "late" is live in the sink, its state record not published yet (state partition
    // failover, a relay retry); "ghost" has no state at all.
    let mapper = Mapper::new(h.config.mappings.clone(), 1 << 20);
    for event in [doc("late", 1, Op::Upsert), doc("ghost", 3, Op::Upsert)] {
        let writes = mapper.map(&event).unwrap();
        sink.write(COLLECTION, &writes, Fence::Newer).await.unwrap();
    }
    let live = |key: &'static str| {
        let sink = sink.clone();
        async move {
            let point = sink.get(COLLECTION, point_id(COLLECTION, key)).await;
            point.unwrap().is_some_and(|p| !p.deleted)
        }
    };
    let mut reconciler = reconciler(&h, &sink);
    let options = repair_options(RepairMode::Sink);

    let first = reconciler.check(Duration::ZERO).await.unwrap();
    assert_eq!(counts(&first), expected_counts(0, 2, 0, 0, 0));
    let outcome = reconciler.repair(&first, &options).await.unwrap();
    assert_eq!(
        (outcome.deletes, outcome.deferred_orphans, outcome.repaired),
        (0, 2, 0),
        "first sighting: nothing deleted"
    );
    assert!(live("late").await && live("ghost").await);

    // The late state record arrives before the next check.
    h.publisher(Format::Avro)
        .publish_states(&[doc("late", 1, Op::Upsert)])
        .await
        .unwrap();
    let second = reconciler.check(Duration::ZERO).await.unwrap();
    assert_eq!(counts(&second), expected_counts(0, 1, 0, 0, 0));
    let outcome = reconciler.repair(&second, &options).await.unwrap();
    assert_eq!((outcome.deletes, outcome.repaired), (1, 1));
    assert!(live("late").await, "never deleted");
    assert!(!live("ghost").await, "deleted on its second sighting");
    assert!(reconciler.check(Duration::ZERO).await.unwrap().is_clean());
}
