//! The reconciler against a real broker's state topic and the embedded Qdrant: each drift
//! class is injected by hand, detected with exact counts, and repaired in both modes;
//! checks while a processor applies a live stream find nothing; the guards
//! (`reconcile/guards.rs`) hold; the continuous mode serves its drift over HTTP
//! (`reconcile/metrics.rs`) and rides out a failing sink, and same-version rewrites stay
//! within a budget across checks (`reconcile/resilience.rs`); a bucketed check reports what a full check reports
//! (`reconcile/buckets.rs`).

mod support;

#[path = "reconcile/buckets.rs"]
mod buckets;
#[path = "reconcile/guards.rs"]
mod guards;
#[path = "reconcile/metrics.rs"]
mod metrics;
#[path = "reconcile/resilience.rs"]
mod resilience;

use graphcdc_core::codec::Format;
use graphcdc_core::event::ChangeEvent;
use graphcdc_core::event::Op;
use graphcdc_core::mapping::{point_id, Mapper};
use graphcdc_core::reconcile::classify::{DriftClass, DriftReport};
use graphcdc_core::reconcile::repair::{RepairMode, RepairOptions, SafetyRefusal};
use graphcdc_core::reconcile::{ReconcileOptions, Reconciler};
use graphcdc_core::sink::VectorSink;
use graphcdc_core::stats::DriftGauges;
use graphcdc_demo::drift::{self, DriftPlan};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{churn, doc, Harness, Model, COLLECTION};

/// Give the tombstones of `keys` their vector back, as Qdrant does when it moves a
/// point out of an optimized segment and no strip follows (a write from a version
/// before the strip, or one interrupted between its upsert and its strip).
async fn revectorize_tombstones(sink: &dyn VectorSink, keys: &[(String, i64)]) {
    use graphcdc_core::mapping::{PointWrite, DELETED_FIELD, KEY_FIELD, VERSION_FIELD};
    use graphcdc_core::sink::Fence;
    let writes: Vec<PointWrite> = keys
        .iter()
        .map(|(key, version)| {
            let mut payload = serde_json::Map::new();
            payload.insert(KEY_FIELD.into(), serde_json::json!(key));
            payload.insert(VERSION_FIELD.into(), serde_json::json!(version));
            payload.insert(DELETED_FIELD.into(), serde_json::json!(true));
            PointWrite {
                collection: COLLECTION.into(),
                id: point_id(COLLECTION, key),
                key: key.clone(),
                version: *version,
                commit_time_ms: 0,
                hash: String::new(),
                vector_name: "embedding".into(),
                vector: Some(vec![1.0, *version as f32, 0.5, -0.5]),
                text: None,
                payload,
            }
        })
        .collect();
    sink.write(COLLECTION, &writes, Fence::NewerOrEqual)
        .await
        .unwrap();
    let found = sink
        .tombstones_with_vector(COLLECTION, "embedding")
        .await
        .unwrap();
    assert_eq!(found.len(), keys.len(), "drift injected");
}

/// Publish a churn stream (change + state topics) and apply it with a processor.
async fn populated(name: &str) -> (Harness, Arc<dyn VectorSink>, Model) {
    let h = Harness::new(name).await;
    let (sink, model) = h.apply_exactly(&churn(120, 400, 21)).await;
    (h, sink, model)
}

fn live_keys(model: &Model) -> Vec<(String, i64)> {
    model
        .expected
        .iter()
        .filter(|(_, e)| e.text.is_some())
        .map(|((_, key), e)| (key.clone(), e.version))
        .collect()
}

/// Damage the sink: 3 deleted, 2 orphans, 2 lowered versions, 2 changed payloads,
/// 1 ahead; and 2 entities published but never applied. Returns the "ahead" key.
async fn inject_drift(h: &Harness, sink: &dyn VectorSink, model: &mut Model) -> String {
    let live = live_keys(model);
    let plan = DriftPlan {
        missing: 3,
        orphans: 2,
        stale: 2,
        mismatched: 2,
        ahead: 1,
    };
    let mapper = Mapper::new(h.config.mappings.clone(), 1 << 20);
    drift::inject(sink, &mapper, &h.config.mappings[0], &live, plan)
        .await
        .unwrap();
    // Published to both topics, never applied: the processor is not running.
    let unapplied = [doc("late-1", 1, Op::Upsert), doc("late-2", 1, Op::Upsert)];
    h.publisher(Format::Json)
        .publish_all(&unapplied)
        .await
        .unwrap();
    unapplied.iter().for_each(|e| model.apply(e));
    live[plan.live_needed() - 1].0.clone()
}

/// A populated sink with every drift class injected, and the "ahead" point removed
/// (so it is missing instead: everything left is repairable).
async fn drifted_without_ahead(name: &str) -> (Harness, Arc<dyn VectorSink>, Model) {
    let (h, sink, mut model) = populated(name).await;
    let ahead_key = inject_drift(&h, sink.as_ref(), &mut model).await;
    remove(sink.as_ref(), &ahead_key).await;
    (h, sink, model)
}

/// Remove a point whatever its version.
async fn remove(sink: &dyn VectorSink, key: &str) {
    sink.purge(COLLECTION, &[(point_id(COLLECTION, key), i64::MAX >> 12)])
        .await
        .unwrap();
}

fn counts(report: &DriftReport) -> BTreeMap<&'static str, u64> {
    report
        .counts()
        .into_iter()
        .map(|(c, n)| (c.name(), n))
        .collect()
}

fn expected_counts(
    missing: u64,
    orphan: u64,
    stale: u64,
    mismatch: u64,
    ahead: u64,
) -> BTreeMap<&'static str, u64> {
    BTreeMap::from([
        ("missing", missing),
        ("orphan", orphan),
        ("stale", stale),
        ("content_mismatch", mismatch),
        ("ahead", ahead),
        ("tombstone_vector", 0),
        ("stale_vector", 0),
        ("missing_vector", 0),
    ])
}

fn repair_options(mode: RepairMode) -> RepairOptions {
    RepairOptions {
        rate_per_s: 10_000,
        ..RepairOptions::new(mode)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_drift_class_is_counted_exactly_and_repaired_in_the_sink() {
    let (h, sink, mut model) = populated("drift-sink").await;
    let mut reconciler = Reconciler::new(
        h.config.clone(),
        sink.clone(),
        Arc::new(DriftGauges::default()),
    )
    .unwrap();
    let clean = reconciler.check(Duration::ZERO).await.unwrap();
    assert!(
        clean.is_clean(),
        "freshly applied stream has no drift: {:?}",
        clean.drifts
    );
    assert_eq!(
        clean.sink_live_points,
        model.compare(sink.as_ref()).await.expected_live
    );

    let ahead_key = inject_drift(&h, sink.as_ref(), &mut model).await;
    let found = reconciler.check(Duration::ZERO).await.unwrap();
    assert_eq!(
        counts(&found),
        expected_counts(5, 2, 2, 2, 1),
        "{:?}",
        found.drifts
    );
    let ahead = found
        .drifts
        .iter()
        .find(|d| d.class == DriftClass::Ahead)
        .unwrap();
    assert_eq!(ahead.key, ahead_key);

    // Dry run: a plan, no change. The orphans were seen once: deferred.
    let mut dry = repair_options(RepairMode::Sink);
    dry.dry_run = true;
    let plan = reconciler.repair(&found, &dry).await.unwrap();
    assert_eq!(
        (
            plan.planned,
            plan.repaired,
            plan.left_ahead,
            plan.deferred_orphans
        ),
        (9, 0, 1, 2)
    );
    let unchanged = reconciler.check(Duration::ZERO).await.unwrap();
    assert_eq!(
        counts(&unchanged),
        counts(&found),
        "dry run changed nothing"
    );
    // Seen in two consecutive checks now: planned for deletion.
    let plan = reconciler.repair(&unchanged, &dry).await.unwrap();
    assert_eq!(
        (plan.planned, plan.deletes, plan.deferred_orphans),
        (11, 2, 0)
    );

    // Safety threshold: 2 deletes of ~100 live points is more than 1 %.
    let mut strict = repair_options(RepairMode::Sink);
    strict.max_delete_ratio = 0.01;
    let refused = reconciler.repair(&found, &strict).await.unwrap_err();
    assert!(
        refused.downcast_ref::<SafetyRefusal>().is_some(),
        "{refused}"
    );
    assert_eq!(
        counts(&reconciler.check(Duration::ZERO).await.unwrap()),
        counts(&found)
    );

    let done = reconciler
        .repair(&found, &repair_options(RepairMode::Sink))
        .await
        .unwrap();
    assert_eq!(done.repaired, 11);
    let after = reconciler.check(Duration::ZERO).await.unwrap();
    assert_eq!(
        counts(&after),
        expected_counts(0, 0, 0, 0, 1),
        "only 'ahead' is left: {:?}",
        after.drifts
    );

    // The point ahead is never written backwards; once removed, it is missing and repaired.
    remove(sink.as_ref(), &ahead_key).await;
    let options = ReconcileOptions {
        grace: Duration::ZERO,
        repair: Some(repair_options(RepairMode::Sink)),
        settle_timeout: Duration::ZERO,
    };
    let result = reconciler.run_once(&options).await.unwrap();
    assert_eq!(counts(&result.found), expected_counts(1, 0, 0, 0, 0));
    assert!(result.remaining.is_clean());
    let cmp = model.compare(sink.as_ref()).await;
    assert!(cmp.is_exact(), "the sink equals the model again: {cmp:?}");

    // Idempotent: a second run right after finds nothing.
    let again = reconciler.run_once(&options).await.unwrap();
    assert!(again.found.is_clean() && again.repair.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_repair_heals_through_the_processor() {
    let (h, sink, model) = drifted_without_ahead("drift-log").await;
    let mut reconciler = Reconciler::new(
        h.config.clone(),
        sink.clone(),
        Arc::new(DriftGauges::default()),
    )
    .unwrap();
    let found = reconciler.check(Duration::ZERO).await.unwrap();
    assert_eq!(counts(&found), expected_counts(6, 2, 2, 2, 0));
    // Orphans are deleted on their second sighting.
    let found = reconciler.check(Duration::ZERO).await.unwrap();
    assert_eq!(counts(&found), expected_counts(6, 2, 2, 2, 0));

    let outcome = reconciler
        .repair(&found, &repair_options(RepairMode::Log))
        .await
        .unwrap();
    assert_eq!(
        outcome.repaired, 12,
        "one corrective event per drifted point"
    );
    // The processor applies the corrective events (and the two late ones) like any other.
    h.process_to_end(sink.clone()).await;
    let after = reconciler.check(Duration::ZERO).await.unwrap();
    assert!(after.is_clean(), "{:?}", after.drifts);
    let cmp = model.compare(sink.as_ref()).await;
    assert!(cmp.is_exact(), "{cmp:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_once_exits_3_on_drift_and_0_after_repair() {
    let (h, sink, _model) = drifted_without_ahead("drift-cli").await;
    drop(sink);
    let run = |extra: &[&str]| {
        let args = ["reconcile", "--once", "--grace", "0s"];
        h.cli(args.iter().chain(extra))
    };
    let check = run(&["--format", "json"]);
    assert_eq!(
        check.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(json["found"]["classes"]["missing"]["count"], 6);
    assert_eq!(json["found"]["classes"]["orphan"]["count"], 2);
    assert_eq!(json["clean"], false);

    let refused = run(&["--repair", "sink", "--max-delete-ratio", "0.001"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("repair refused"));
    // A dry run prints the plan the guard refuses.
    let dry = run(&[
        "--repair",
        "sink",
        "--dry-run",
        "--max-delete-ratio",
        "0.001",
    ]);
    let plan = String::from_utf8_lossy(&dry.stdout);
    assert_eq!(dry.status.code(), Some(3), "{plan}");
    assert!(
        plan.contains("plan: deletes=2") && plan.contains("the guard would refuse this plan"),
        "{plan}"
    );
    for bad in ["NaN", "-0.1", "1.5"] {
        let invalid = run(&["--repair", "sink", &format!("--max-delete-ratio={bad}")]);
        assert_eq!(invalid.status.code(), Some(2), "{bad}");
        assert!(
            String::from_utf8_lossy(&invalid.stderr).contains("--max-delete-ratio"),
            "{bad}"
        );
    }

    let repaired = run(&["--repair", "sink"]);
    let table = String::from_utf8_lossy(&repaired.stdout);
    assert_eq!(
        repaired.status.code(),
        Some(0),
        "{table}{}",
        String::from_utf8_lossy(&repaired.stderr)
    );
    assert!(
        table.contains("repair: planned=12 repaired=12 left_ahead=0 remaining=0"),
        "{table}"
    );
    assert_eq!(run(&[]).status.code(), Some(0), "clean on the next run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tombstone_that_kept_its_vector_is_found_and_stripped_in_both_modes() {
    let (h, sink, model) = populated("tombstone-vector").await;
    let deleted: Vec<(String, i64)> = model
        .expected
        .iter()
        .filter(|(_, e)| e.text.is_none())
        .map(|((_, key), e)| (key.clone(), e.version))
        .take(3)
        .collect();
    assert_eq!(deleted.len(), 3, "the stream deletes entities");
    let mut reconciler = Reconciler::new(
        h.config.clone(),
        sink.clone(),
        Arc::new(DriftGauges::default()),
    )
    .unwrap();
    revectorize_tombstones(sink.as_ref(), &deleted[..2]).await;
    let found = reconciler.check(Duration::ZERO).await.unwrap();
    let mut expected = expected_counts(0, 0, 0, 0, 0);
    expected.insert("tombstone_vector", 2);
    assert_eq!(counts(&found), expected, "{:?}", found.drifts);

    // Sink repair: rewritten at their own version, which strips the vector. Not a
    // delete: a guard that allows none lets it through.
    let mut options = repair_options(RepairMode::Sink);
    options.max_delete_ratio = 0.0;
    let done = reconciler.repair(&found, &options).await.unwrap();
    assert_eq!(done.repaired, 2);
    assert!(reconciler.check(Duration::ZERO).await.unwrap().is_clean());

    // Log repair: a corrective delete at the same version, applied by the processor.
    revectorize_tombstones(sink.as_ref(), &deleted[2..]).await;
    let found = reconciler.check(Duration::ZERO).await.unwrap();
    assert_eq!(found.drifts.len(), 1, "{:?}", found.drifts);
    let done = reconciler
        .repair(&found, &repair_options(RepairMode::Log))
        .await
        .unwrap();
    assert_eq!(done.repaired, 1);
    h.process_to_end(sink.clone()).await;
    let after = reconciler.check(Duration::ZERO).await.unwrap();
    assert!(after.is_clean(), "{:?}", after.drifts);
    let left = sink
        .tombstones_with_vector(COLLECTION, "embedding")
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
    let cmp = model.compare(sink.as_ref()).await;
    assert!(cmp.is_exact(), "{cmp:?}");
}

/// `events` events over the first `keys` keys of [`churn`]'s key space, versions going on
/// from `model`.
fn continued_churn(model: &Model, keys: usize, events: usize, seed: u64) -> Vec<ChangeEvent> {
    let versions: Vec<i64> = (0..keys)
        .map(|k| {
            let slot = (COLLECTION.to_owned(), format!("doc-{k}"));
            model.expected.get(&slot).map_or(0, |e| e.version)
        })
        .collect();
    support::churn_from(versions, events, seed)
}

/// How long the live test publishes.
const LIVE_FOR: Duration = Duration::from_secs(6);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_during_a_live_stream_judge_everything_find_nothing_and_delete_nothing() {
    let (h, sink, mut model) = populated("live").await;
    // 40 hot keys, each changed several times a second: always younger than the grace.
    let stream = continued_churn(&model, 40, 100_000, 5);
    let running = h.start_processor(sink.clone()).await;
    let publisher = h.publisher(Format::Avro);
    let publishing = tokio::spawn(async move {
        let started = Instant::now();
        let mut published = 0;
        for chunk in stream.chunks(10) {
            if started.elapsed() >= LIVE_FOR {
                break;
            }
            publisher.publish_all(chunk).await.unwrap();
            published += chunk.len();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (stream, published)
    });
    let mut reconciler = Reconciler::new(
        h.config.clone(),
        sink.clone(),
        Arc::new(DriftGauges::default()),
    )
    .unwrap();
    let options = ReconcileOptions {
        grace: Duration::from_secs(10),
        repair: Some(repair_options(RepairMode::Sink)),
        settle_timeout: Duration::ZERO,
    };
    let mut results = Vec::new();
    while !publishing.is_finished() {
        results.push(reconciler.run_once(&options).await.unwrap());
    }
    let (stream, published) = publishing.await.unwrap();
    stream[..published].iter().for_each(|e| model.apply(e));
    h.wait_caught_up(Duration::from_secs(60)).await;
    running.stop().await;

    let rechecked: u64 = results.iter().map(|r| r.found.rechecked).sum();
    eprintln!(
        "live: {published} events in {LIVE_FOR:?}, {} checks, {rechecked} candidates looked at again",
        results.len()
    );
    assert!(results.len() >= 3, "only {} checks", results.len());
    for (i, r) in results.iter().enumerate() {
        let found = &r.found;
        assert!(
            found.is_clean(),
            "check {i}: false drift {:?}",
            found.drifts
        );
        assert_eq!(found.in_grace, 0, "check {i} left entities unjudged");
        assert!(r.repair.is_none(), "check {i} repaired something");
    }
    let cmp = model.compare(sink.as_ref()).await;
    assert!(cmp.is_exact(), "nothing deleted or rewritten: {cmp:?}");
    let after = reconciler.check(Duration::ZERO).await.unwrap();
    assert!(after.is_clean(), "{:?}", after.drifts);
}

/// A collection that held points before graphcdc (the seeds' 793 vectors with no nodes):
/// numeric ids, which Qdrant orders before UUIDs, and points without `cdc_*` fields. The
/// check pages past them, judges every point the pipeline wrote, and reports the others
/// as foreign (drift, never repaired automatically).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn points_the_pipeline_did_not_write_are_reported_as_foreign() {
    use graphcdc_core::sink::embedded::EmbeddedSink;
    use graphcdc_core::sink::ScanCursor;
    let (h, sink, _model) = populated("foreign").await;
    drop(sink);
    let graphcdc_core::sink::SinkConfig::Embedded { path } = &h.config.sink else {
        unreachable!()
    };
    let edge = EmbeddedSink::open(path).unwrap();
    let legacy = |n: u64| {
        serde_json::Map::from_iter([("title".to_owned(), serde_json::json!(format!("legacy {n}")))])
    };
    for n in 1..=5 {
        edge.put_foreign(
            COLLECTION,
            ScanCursor::Num(n),
            "embedding",
            vec![0.1; support::DIM],
            legacy(n),
        )
        .await
        .unwrap();
    }
    let uuid = uuid::Uuid::new_v4();
    edge.put_foreign(
        COLLECTION,
        ScanCursor::Uuid(uuid),
        "embedding",
        vec![0.1; support::DIM],
        legacy(0),
    )
    .await
    .unwrap();
    let sink: Arc<dyn VectorSink> = Arc::new(edge);
    let gauges = Arc::new(DriftGauges::default());
    let mut reconciler = Reconciler::new(h.config.clone(), sink, gauges.clone()).unwrap();
    let report = reconciler.check(Duration::ZERO).await.unwrap();

    assert_eq!(
        counts(&report),
        expected_counts(0, 0, 0, 0, 0),
        "{report:?}"
    );
    let mut foreign = report.foreign[COLLECTION].clone();
    foreign.sort();
    let mut expected: Vec<String> = (1..=5).map(|n: u64| n.to_string()).collect();
    expected.push(uuid.to_string());
    expected.sort();
    assert_eq!(foreign, expected);
    assert!(!report.is_clean());
    assert_eq!(gauges.drift("foreign"), 6);

    // Deleting them is a delete like any other: within the budget, or forced.
    let live = report.sink_live_points;
    let delete_foreign = |force: bool| ReconcileOptions {
        grace: Duration::ZERO,
        repair: Some(RepairOptions {
            delete_foreign: true,
            max_delete_ratio: 0.01,
            force,
            ..repair_options(RepairMode::Sink)
        }),
        settle_timeout: Duration::ZERO,
    };
    let refused = reconciler
        .run_once(&delete_foreign(false))
        .await
        .unwrap_err();
    assert!(
        refused.downcast_ref::<SafetyRefusal>().is_some(),
        "{refused:#}"
    );
    let forced = reconciler.run_once(&delete_foreign(true)).await.unwrap();
    assert_eq!(forced.repair.map(|r| (r.deletes, r.repaired)), Some((6, 6)));
    assert!(
        forced.remaining.is_clean(),
        "{:?}",
        forced.remaining.foreign
    );
    assert_eq!(
        forced.remaining.sink_live_points, live,
        "none of ours deleted"
    );
    let log_mode = RepairOptions {
        delete_foreign: true,
        ..repair_options(RepairMode::Log)
    };
    assert!(log_mode.validate().is_err());
}
