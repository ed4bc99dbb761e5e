//! The bucketed check reports what the full check reports: drift of every class is
//! injected (in the sink, on the state topic without the processor, in place, and in
//! points written before `cdc_bucket` existed), then full and bucketed checks of the same
//! sink are compared, with the expected state in memory and on disk.

use super::support::{doc, COLLECTION, DIM};
use super::{counts, live_keys, populated, revectorize_tombstones};
use graphcdc_core::codec::Format;
use graphcdc_core::event::Op;
use graphcdc_core::mapping::{Mapper, BUCKETS, BUCKET_FIELD};
use graphcdc_core::reconcile::classify::{DriftClass, DriftReport};
use graphcdc_core::reconcile::Reconciler;
use graphcdc_core::sink::embedded::EmbeddedSink;
use graphcdc_core::sink::{Fence, ScanCursor, VectorSink};
use graphcdc_core::stats::DriftGauges;
use graphcdc_demo::drift::{self, DriftPlan};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// Drift as comparable tuples, and the foreign points.
fn drift_set(report: &DriftReport) -> BTreeSet<(DriftClass, String, Option<i64>, Option<i64>)> {
    report
        .drifts
        .iter()
        .map(|d| (d.class, d.key.clone(), d.sink_version, d.expected_version))
        .collect()
}

fn foreign_set(report: &DriftReport) -> BTreeSet<String> {
    report.foreign.values().flatten().cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucketed_check_reports_exactly_the_drift_of_a_full_check() {
    let (h, sink, mut model) = populated("buckets").await;
    let graphcdc_core::sink::SinkConfig::Embedded { path } = &h.config.sink else {
        unreachable!()
    };
    drop(sink);
    let edge = Arc::new(EmbeddedSink::open(path).unwrap());
    let sink: Arc<dyn VectorSink> = edge.clone();
    let mut bucketed = Reconciler::new(
        h.config.clone(),
        sink.clone(),
        Arc::new(DriftGauges::default()),
    )
    .unwrap();
    bucketed.rescan_every(2);
    let first = bucketed.check(Duration::ZERO).await.unwrap();
    assert!(first.is_clean(), "{:?}", first.drifts);
    assert_eq!(first.rescanned, None, "the first check is a full pass");

    let live = live_keys(&model);
    let mapper = Mapper::new(h.config.mappings.clone(), 1 << 20);
    // In the sink: missing and orphans change a bucket's count; stale, mismatched and
    // ahead change points in place.
    let plan = DriftPlan {
        missing: 3,
        orphans: 2,
        stale: 2,
        mismatched: 2,
        ahead: 1,
    };
    drift::inject(sink.as_ref(), &mapper, &h.config.mappings[0], &live, plan)
        .await
        .unwrap();
    let mut rest = live[plan.live_needed()..].iter();
    // Written before cdc_bucket existed (same version and content: no drift), one of them
    // then changed in place.
    let legacy: Vec<_> = rest.by_ref().take(3).collect();
    for (i, (key, version)) in legacy.iter().enumerate() {
        let text = if i == 0 { "changed in place" } else { "" };
        let mut event = doc(key, *version, Op::Upsert);
        if !text.is_empty() {
            event = event.with_property(
                "text",
                graphcdc_core::event::PropertyValue::String(text.into()),
            );
        }
        assert_eq!(event.version, *version);
        let mut write = mapper.map(&event).unwrap().remove(0);
        write.payload.remove(BUCKET_FIELD);
        sink.write(COLLECTION, &[write], Fence::NewerOrEqual)
            .await
            .unwrap();
    }
    // A live point that lost its vector (same version and payload, no vector).
    let (bare, version) = rest.next().unwrap();
    let mut write = mapper
        .map(&doc(bare, *version, Op::Upsert))
        .unwrap()
        .remove(0);
    write.vector = None;
    sink.write(COLLECTION, &[write], Fence::NewerOrEqual)
        .await
        .unwrap();
    // On the state topic, never applied: new entities, an update and a delete.
    let (updated, deleted) = (rest.next().unwrap(), rest.next().unwrap());
    let unapplied = [
        doc("late-1", 1, Op::Upsert),
        doc("late-2", 1, Op::Upsert),
        doc(&updated.0, updated.1 + 1, Op::Upsert),
        doc(&deleted.0, deleted.1 + 1, Op::Delete),
    ];
    h.publisher(Format::Json)
        .publish_all(&unapplied)
        .await
        .unwrap();
    unapplied.iter().for_each(|e| model.apply(e));
    // A tombstone that kept its vector, and points another tool wrote.
    let tombstone = model
        .expected
        .iter()
        .find(|(_, e)| e.text.is_none() && e.version > 0)
        .map(|((_, key), e)| (key.clone(), e.version))
        .unwrap();
    revectorize_tombstones(sink.as_ref(), &[tombstone]).await;
    let foreign = serde_json::Map::from_iter([("title".into(), serde_json::json!("legacy"))]);
    for id in [ScanCursor::Num(7), ScanCursor::Uuid(uuid::Uuid::new_v4())] {
        edge.put_foreign(COLLECTION, id, "embedding", vec![0.1; DIM], foreign.clone())
            .await
            .unwrap();
    }

    let mut full = Reconciler::new(
        h.config.clone(),
        sink.clone(),
        Arc::new(DriftGauges::default()),
    )
    .unwrap();
    let expected = full.check(Duration::ZERO).await.unwrap();
    // Every class but stale_vector, which needs an embedding mapping
    // (tests/embedding.rs::the_reconciler_finds_a_vector_of_an_old_text_and_a_live_point_without_one).
    for (class, n) in counts(&expected) {
        if class != "stale_vector" {
            assert!(n > 0, "the full check finds {class}: {:?}", expected.drifts);
        }
    }
    assert_eq!(foreign_set(&expected).len(), 2);

    // Rescanning half of the buckets plus those the counts, the topic and the legacy
    // points point at: everything but drift changed in place elsewhere.
    let once = bucketed.check(Duration::ZERO).await.unwrap();
    let extent = once.rescanned.expect("a bucketed check");
    assert!(
        (extent.buckets as usize) < BUCKETS * 2 / 3,
        "rescanned {extent:?}"
    );
    let (found, all) = (drift_set(&once), drift_set(&expected));
    assert!(found.is_subset(&all), "{:?}", found.difference(&all));
    let in_place_keys: BTreeSet<&str> = live[plan.missing..plan.live_needed()]
        .iter()
        .map(|(k, _)| k.as_str())
        .collect();
    let not_in_place: BTreeSet<_> = all
        .iter()
        .filter(|(_, key, _, _)| !in_place_keys.contains(key.as_str()))
        .cloned()
        .collect();
    assert!(
        not_in_place.is_subset(&found),
        "missed {:?}",
        not_in_place.difference(&found)
    );
    assert_eq!(foreign_set(&once), foreign_set(&expected));
    assert_eq!(once.sink_live_points, expected.sink_live_points);
    assert_eq!(once.expected_points, expected.expected_points);

    // The other half, and again what was found: the full check's report exactly.
    let twice = bucketed.check(Duration::ZERO).await.unwrap();
    assert!(twice.rescanned.is_some());
    assert_eq!(drift_set(&twice), all);
    assert_eq!(foreign_set(&twice), foreign_set(&expected));
    assert_eq!(counts(&twice), counts(&expected));

    // The expected state on disk (`--state-dir`): its full check goes bucket by bucket,
    // its bucketed checks read their buckets from the file; both report what the full
    // check of the state in memory reports.
    let state_dir = tempfile::tempdir().unwrap();
    let mut on_disk = Reconciler::new(
        h.config.clone(),
        sink.clone(),
        Arc::new(DriftGauges::default()),
    )
    .unwrap();
    on_disk.state_dir(state_dir.path()).unwrap();
    on_disk.rescan_every(2);
    let file = state_dir
        .path()
        .join(graphcdc_core::reconcile::store::FILE_NAME);
    for check in ["full, bucket by bucket", "bucketed"] {
        let report = on_disk.check(Duration::ZERO).await.unwrap();
        assert!(report.rescanned.is_some(), "{check}");
        assert_eq!(drift_set(&report), all, "{check}");
        assert_eq!(foreign_set(&report), foreign_set(&expected), "{check}");
        assert_eq!(
            report.sink_live_points, expected.sink_live_points,
            "{check}"
        );
        assert_eq!(report.expected_points, expected.expected_points, "{check}");
    }
    assert!(
        file.metadata().unwrap().len() > 0,
        "the state is in {file:?}"
    );
}
