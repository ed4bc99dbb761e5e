//! The contract every [`VectorSink`] must keep, run against the embedded sink always and
//! against a Qdrant server whenever `QDRANT_URL` is set.

use super::*;
use crate::mapping::{point_id, PointWrite, DELETED_FIELD, HASH_FIELD, KEY_FIELD, VERSION_FIELD};
use serde_json::{json, Map, Value};

const DIM: usize = 4;

fn spec(name: &str) -> CollectionSpec {
    CollectionSpec {
        name: name.to_owned(),
        vector_name: "embedding".into(),
        dimension: DIM,
        distance: Distance::Cosine,
    }
}

fn write(collection: &str, key: &str, version: i64, text: &str) -> PointWrite {
    let mut payload = Map::new();
    payload.insert(KEY_FIELD.into(), json!(key));
    payload.insert(VERSION_FIELD.into(), json!(version));
    payload.insert(HASH_FIELD.into(), json!(format!("h-{text}")));
    payload.insert(DELETED_FIELD.into(), json!(false));
    payload.insert("text".into(), json!(text));
    PointWrite {
        collection: collection.to_owned(),
        id: point_id(collection, key),
        key: key.to_owned(),
        version,
        commit_time_ms: 0,
        hash: format!("h-{text}"),
        vector_name: "embedding".into(),
        vector: Some(vec![1.0, version as f32, 0.5, 0.25]),
        text: None,
        payload,
    }
}

fn tombstone(collection: &str, key: &str, version: i64) -> PointWrite {
    let mut w = write(collection, key, version, "");
    w.vector = None;
    w.payload = Map::new();
    w.payload.insert(KEY_FIELD.into(), json!(key));
    w.payload.insert(VERSION_FIELD.into(), json!(version));
    w.payload.insert(DELETED_FIELD.into(), json!(true));
    w
}

async fn text_of(sink: &dyn VectorSink, collection: &str, key: &str) -> Option<(i64, bool, Value)> {
    let p = sink
        .get(collection, point_id(collection, key))
        .await
        .unwrap()?;
    let text = p
        .payload
        .unwrap()
        .get("text")
        .cloned()
        .unwrap_or(Value::Null);
    Some((p.version, p.deleted, text))
}

async fn run_contract(sink: &dyn VectorSink, c: &str) {
    sink.ensure_collection(&spec(c)).await.unwrap();
    sink.ensure_collection(&spec(c))
        .await
        .expect("ensure_collection is idempotent");

    // New points are inserted regardless of the fence.
    let batch: Vec<_> = (0..5)
        .map(|i| write(c, &format!("k{i}"), 2, "v2"))
        .collect();
    sink.write(c, &batch, Fence::Newer).await.unwrap();
    assert_eq!(sink.count_live(c).await.unwrap(), 5);

    // One batch mixing newer, equal and older versions: per-point fence.
    let mixed = vec![
        write(c, "k0", 3, "v3"),
        write(c, "k1", 2, "equal"),
        write(c, "k2", 1, "older"),
        write(c, "k5", 1, "new"),
    ];
    sink.write(c, &mixed, Fence::Newer).await.unwrap();
    assert_eq!(text_of(sink, c, "k0").await, Some((3, false, json!("v3"))));
    assert_eq!(text_of(sink, c, "k1").await, Some((2, false, json!("v2"))));
    assert_eq!(text_of(sink, c, "k2").await, Some((2, false, json!("v2"))));
    assert_eq!(text_of(sink, c, "k5").await, Some((1, false, json!("new"))));

    // A repair may overwrite the same version, never a newer one.
    let repair = vec![write(c, "k1", 2, "repaired"), write(c, "k0", 2, "back")];
    sink.write(c, &repair, Fence::NewerOrEqual).await.unwrap();
    assert_eq!(
        text_of(sink, c, "k1").await,
        Some((2, false, json!("repaired")))
    );
    assert_eq!(text_of(sink, c, "k0").await, Some((3, false, json!("v3"))));

    // Versions of existing ids only.
    let ids = [point_id(c, "k0"), point_id(c, "k3"), point_id(c, "absent")];
    let versions = sink.versions(c, &ids).await.unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[&point_id(c, "k0")], 3);

    // A tombstone hides the point and fences older upserts; a newer upsert revives it.
    sink.write(c, &[tombstone(c, "k3", 5)], Fence::Newer)
        .await
        .unwrap();
    assert_eq!(sink.count_live(c).await.unwrap(), 5);
    sink.write(c, &[write(c, "k3", 4, "zombie")], Fence::Newer)
        .await
        .unwrap();
    assert_eq!(text_of(sink, c, "k3").await, Some((5, true, Value::Null)));
    sink.write(c, &[write(c, "k3", 6, "again")], Fence::Newer)
        .await
        .unwrap();
    assert_eq!(
        text_of(sink, c, "k3").await,
        Some((6, false, json!("again")))
    );

    // Duplicate ids in one write: the highest version wins, in any order (the fence
    // alone would OR both bounds and keep the last duplicate).
    sink.write(c, &[write(c, "k2", 4, "v4")], Fence::Newer)
        .await
        .unwrap();
    sink.write(
        c,
        &[write(c, "k2", 5, "v5"), write(c, "k2", 3, "v3")],
        Fence::Newer,
    )
    .await
    .unwrap();
    assert_eq!(text_of(sink, c, "k2").await, Some((5, false, json!("v5"))));
    sink.write(
        c,
        &[write(c, "k2", 7, "v7"), write(c, "k2", 6, "v6")],
        Fence::NewerOrEqual,
    )
    .await
    .unwrap();
    assert_eq!(text_of(sink, c, "k2").await, Some((7, false, json!("v7"))));

    // Scan pages through every point exactly once.
    let mut seen = Vec::new();
    let mut from = None;
    loop {
        let page = sink.scan(c, from, 2).await.unwrap();
        assert!(page.points.len() <= 2);
        seen.extend(page.points);
        match page.next {
            Some(next) => from = Some(next),
            None => break,
        }
    }
    let mut keys: Vec<_> = seen.iter().map(|p| p.key.clone()).collect();
    keys.sort();
    assert_eq!(keys, ["k0", "k1", "k2", "k3", "k4", "k5"]);
    let k0 = seen.iter().find(|p| p.key == "k0").unwrap();
    assert_eq!(
        (k0.version, k0.hash.as_str(), k0.deleted),
        (3, "h-v3", false)
    );
    assert!(k0.payload.is_none(), "scan reads only the reserved fields");

    // Purge removes a point only when its version is not newer than given.
    sink.purge(c, &[(point_id(c, "k4"), 1), (point_id(c, "k5"), 1)])
        .await
        .unwrap();
    assert!(sink.get(c, point_id(c, "k4")).await.unwrap().is_some());
    assert!(sink.get(c, point_id(c, "k5")).await.unwrap().is_none());
    assert_eq!(sink.count_live(c).await.unwrap(), 5);
}

#[tokio::test]
async fn embedded_sink_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let sink = embedded::EmbeddedSink::open(dir.path()).unwrap();
    run_contract(&sink, "contract").await;
}

/// A collection that existed before graphcdc holds numeric ids (Qdrant orders them before
/// UUIDs) and points without `cdc_*` fields. The scan pages over both id kinds, reports
/// those points as foreign, and still reaches every point the pipeline wrote.
#[tokio::test]
async fn embedded_scan_pages_over_numeric_ids_and_reports_foreign_points() {
    let dir = tempfile::tempdir().unwrap();
    let sink = embedded::EmbeddedSink::open(dir.path()).unwrap();
    let c = "legacy";
    sink.ensure_collection(&spec(c)).await.unwrap();
    let title = |n: u64| Map::from_iter([("title".to_owned(), json!(format!("legacy {n}")))]);
    for n in 1..=5 {
        sink.put_foreign(c, ScanCursor::Num(n), "embedding", vec![0.5; DIM], title(n))
            .await
            .unwrap();
    }
    let legacy = Uuid::new_v4();
    sink.put_foreign(
        c,
        ScanCursor::Uuid(legacy),
        "embedding",
        vec![0.5; DIM],
        title(0),
    )
    .await
    .unwrap();
    let ours: Vec<_> = (0..6).map(|i| write(c, &format!("k{i}"), 1, "t")).collect();
    sink.write(c, &ours, Fence::Newer).await.unwrap();

    let (mut keys, mut foreign, mut from) = (Vec::new(), Vec::new(), None);
    loop {
        let page = sink.scan(c, from, 2).await.unwrap();
        keys.extend(page.points.iter().map(|p| p.key.clone()));
        foreign.extend(page.foreign.iter().map(|f| f.id.clone()));
        match page.next {
            Some(next) => from = Some(next),
            None => break,
        }
    }
    keys.sort();
    foreign.sort();
    assert_eq!(keys, ["k0", "k1", "k2", "k3", "k4", "k5"]);
    let mut expected: Vec<String> = (1..=5).map(|n: u64| n.to_string()).collect();
    expected.push(legacy.to_string());
    expected.sort();
    assert_eq!(foreign, expected);
}

/// Many first uses of a collection at once (a reopened store under load) open its shard
/// once: a second open fails on the WAL's file lock (seen as a flaky replay test).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embedded_sink_opens_a_shard_once_under_concurrent_first_use() {
    let dir = tempfile::tempdir().unwrap();
    {
        let sink = embedded::EmbeddedSink::open(dir.path()).unwrap();
        sink.ensure_collection(&spec("busy")).await.unwrap();
        sink.write("busy", &[write("busy", "k0", 1, "t")], Fence::Newer)
            .await
            .unwrap();
    }
    for _ in 0..5 {
        let sink = std::sync::Arc::new(embedded::EmbeddedSink::open(dir.path()).unwrap());
        let counts = futures::future::join_all((0..8).map(|_| {
            let sink = sink.clone();
            tokio::spawn(async move { sink.count_live("busy").await })
        }))
        .await;
        for count in counts {
            assert_eq!(count.unwrap().unwrap(), 1);
        }
    }
}

#[tokio::test]
async fn jsonl_sink_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let sink = jsonl::JsonlSink::open(dir.path(), 1_000).unwrap();
    run_contract(&sink, "contract").await;
    let files = std::fs::read_dir(dir.path().join("contract"))
        .unwrap()
        .count();
    assert!(files > 1, "rotated at 1 kB: {files} files");
}

#[tokio::test]
async fn jsonl_sink_rebuilds_its_index_from_the_files() {
    let dir = tempfile::tempdir().unwrap();
    {
        let sink = jsonl::JsonlSink::open(dir.path(), 1_000).unwrap();
        sink.ensure_collection(&spec("c")).await.unwrap();
        sink.write(
            "c",
            &[write("c", "a", 7, "kept"), write("c", "b", 1, "gone")],
            Fence::Newer,
        )
        .await
        .unwrap();
        sink.purge("c", &[(point_id("c", "b"), 1)]).await.unwrap();
        // Across rotations (1 kB files): get reads each payload back from its line.
        let many: Vec<PointWrite> = (0..20)
            .map(|i| write("c", &format!("p{i}"), 1, &format!("text {i}")))
            .collect();
        sink.write("c", &many, Fence::Newer).await.unwrap();
    }
    let sink = jsonl::JsonlSink::open(dir.path(), 1_000).unwrap();
    sink.ensure_collection(&spec("c")).await.unwrap();
    for i in 0..20 {
        assert_eq!(
            text_of(&sink, "c", &format!("p{i}")).await,
            Some((1, false, json!(format!("text {i}")))),
            "p{i} after the index was rebuilt"
        );
    }
    assert!(std::fs::read_dir(dir.path().join("c")).unwrap().count() > 2);
    assert_eq!(
        text_of(&sink, "c", "a").await,
        Some((7, false, json!("kept")))
    );
    assert!(sink.get("c", point_id("c", "b")).await.unwrap().is_none());
    sink.write("c", &[write("c", "a", 6, "older")], Fence::Newer)
        .await
        .unwrap();
    assert_eq!(
        text_of(&sink, "c", "a").await,
        Some((7, false, json!("kept"))),
        "fence survives a restart"
    );
}

#[tokio::test]
async fn embedded_sink_keeps_acknowledged_writes_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let sink = embedded::EmbeddedSink::open(dir.path()).unwrap();
        sink.ensure_collection(&spec("c")).await.unwrap();
        sink.write("c", &[write("c", "a", 7, "kept")], Fence::Newer)
            .await
            .unwrap();
    }
    let sink = embedded::EmbeddedSink::open(dir.path()).unwrap();
    sink.ensure_collection(&spec("c")).await.unwrap();
    assert_eq!(
        text_of(&sink, "c", "a").await,
        Some((7, false, json!("kept")))
    );
}

#[tokio::test]
async fn embedded_sink_rejects_wrong_dimension_without_retry() {
    let dir = tempfile::tempdir().unwrap();
    let sink = embedded::EmbeddedSink::open(dir.path()).unwrap();
    sink.ensure_collection(&spec("c")).await.unwrap();
    let mut bad = write("c", "a", 1, "x");
    bad.vector = Some(vec![1.0; DIM + 1]);
    let err = sink.write("c", &[bad], Fence::Newer).await.unwrap_err();
    assert!(!err.is_retriable(), "{err}");
}

/// Entities written, then moved into optimized (indexed, non-appendable) segments by
/// `optimize`, then deleted: every tombstone must lose its vector, vector search must
/// not return a deleted entity, and a revival after the delete keeps its new vector.
async fn tombstones_on_optimized_segments_have_no_vector<F, Fut>(
    sink: &dyn VectorSink,
    c: &str,
    optimize: F,
) where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    const N: usize = 2_000;
    sink.ensure_collection(&spec(c)).await.unwrap();
    let vector = |i: usize| {
        let a = i as f32 * 0.01;
        vec![a.cos(), a.sin(), (3.0 * a).cos(), (5.0 * a).sin()]
    };
    let points: Vec<_> = (0..N)
        .map(|i| {
            let mut w = write(c, &format!("e{i}"), 1, "v1");
            w.vector = Some(vector(i));
            w
        })
        .collect();
    for chunk in points.chunks(500) {
        sink.write(c, chunk, Fence::Newer).await.unwrap();
    }
    optimize().await;

    let deleted: Vec<usize> = (0..N).step_by(10).collect();
    let tombstones: Vec<_> = deleted
        .iter()
        .map(|i| tombstone(c, &format!("e{i}"), 2))
        .collect();
    sink.write(c, &tombstones, Fence::Newer).await.unwrap();
    // One deleted entity comes back at v3 with a vector of its own.
    let mut revived = write(c, "e0", 3, "back");
    revived.vector = Some(vector(0));
    sink.write(c, &[revived], Fence::Newer).await.unwrap();

    let with_vector = sink.tombstones_with_vector(c, "embedding").await.unwrap();
    assert!(
        with_vector.is_empty(),
        "{} of {} tombstones still carry a vector",
        with_vector.len(),
        deleted.len() - 1
    );
    let mut returned = 0;
    for i in deleted.iter().skip(1) {
        let nearest = sink.nearest(c, "embedding", &vector(*i), 3).await.unwrap();
        if nearest.contains(&point_id(c, &format!("e{i}"))) {
            returned += 1;
        }
    }
    assert_eq!(returned, 0, "deleted entities returned by vector search");
    let nearest = sink.nearest(c, "embedding", &vector(0), 1).await.unwrap();
    assert_eq!(
        nearest,
        [point_id(c, "e0")],
        "the revived entity is searchable"
    );
    assert_eq!(
        sink.count_live(c).await.unwrap(),
        (N - deleted.len() + 1) as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_tombstones_on_optimized_segments_have_no_vector() {
    let dir = tempfile::tempdir().unwrap();
    let sink = embedded::EmbeddedSink::open(dir.path()).unwrap();
    tombstones_on_optimized_segments_have_no_vector(&sink, "opt", || async {
        assert!(
            sink.optimize("opt", 1).await.unwrap(),
            "the optimizer moved the points into indexed segments"
        );
    })
    .await;
}

/// An existing collection with another dimension, vector name or distance than its
/// mapping is named with the expected and the actual value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_sink_rejects_a_mismatched_collection_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let sink = embedded::EmbeddedSink::open(dir.path()).unwrap();
    sink.ensure_collection(&spec("c")).await.unwrap();
    let mut wider = spec("c");
    wider.dimension = DIM * 2;
    let err = check_collection(&sink, &wider).await.unwrap_err();
    assert!(matches!(err, SinkError::Misconfigured(_)), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("\"c\"") && message.contains("expected 8, found 4"),
        "{message}"
    );
    let mut renamed = spec("c");
    renamed.vector_name = "text".into();
    let message = check_collection(&sink, &renamed)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("expected \"text\", found \"embedding\""),
        "{message}"
    );
    let mut dot = spec("c");
    dot.distance = Distance::Dot;
    assert!(check_collection(&sink, &dot).await.is_err());
    check_collection(&sink, &spec("c")).await.unwrap();
}

/// Runs only when `QDRANT_URL` points at a Qdrant server (gRPC port).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_tombstones_on_optimized_segments_have_no_vector() {
    let Ok(url) = std::env::var("QDRANT_URL") else {
        eprintln!("QDRANT_URL not set: server tombstone test not run");
        return;
    };
    let sink =
        qdrant::QdrantSink::connect(&url, std::env::var("QDRANT_API_KEY").ok(), 10_000).unwrap();
    let c = format!("graphcdc_optimized_{}", Uuid::new_v4().simple());
    tombstones_on_optimized_segments_have_no_vector(&sink, &c, || async {
        sink.index_now(&c).await.unwrap();
    })
    .await;
    sink.delete_collection(&c).await.unwrap();
}

/// Runs only when `QDRANT_URL` points at a Qdrant server (gRPC port).
#[tokio::test]
async fn server_sink_keeps_the_contract() {
    let Ok(url) = std::env::var("QDRANT_URL") else {
        eprintln!("QDRANT_URL not set: server sink contract not run");
        return;
    };
    let sink =
        qdrant::QdrantSink::connect(&url, std::env::var("QDRANT_API_KEY").ok(), 10_000).unwrap();
    let collection = format!("graphcdc_contract_{}", Uuid::new_v4().simple());
    run_contract(&sink, &collection).await;
}
