//! Batches against the real embedded engine, with faults injected where a unit test can
//! reach them: a flush that fails after the update was applied (the sync fails), a
//! collection whose schema differs from the mapping, a version pre-read the sink refuses.

use super::*;
use crate::codec::Format;
use crate::config::Config;
use crate::event::{ChangeEvent, Op};
use crate::sink::embedded::EmbeddedSink;
use crate::sink::{CollectionSpec, ScanCursor, ScanPage, StoredPoint};
use async_trait::async_trait;

const COLLECTION: &str = "docs";

fn config(dimension: usize) -> Config {
    Config::from_toml(&format!(
        r#"
        [sink]
        kind = "embedded"
        path = "/unused"

        [[mappings]]
        label = "Doc"
        collection = "{COLLECTION}"
        dimension = {dimension}
        vector_property = "embedding"
        "#
    ))
    .unwrap()
}

async fn records(codec: &Codec, dimension: usize, keys: &[&str]) -> Vec<Record> {
    let mut out = Vec::new();
    for (offset, key) in keys.iter().enumerate() {
        let event = ChangeEvent::node(key, &["Doc"], Op::Upsert, 1, 1_000)
            .with_vector(vec![0.5; dimension]);
        out.push(Record {
            topic: "changes".into(),
            partition: 0,
            offset: offset as i64,
            key: Some(key.as_bytes().to_vec()),
            payload: Some(codec.encode_change(&event, Format::Avro).await.unwrap()),
            headers: Vec::new(),
            timestamp_ms: None,
        });
    }
    out
}

/// An applier for a `dimension`-d mapping over `sink`, whose collection was created at
/// `created_dimension`.
async fn applier(
    sink: Arc<dyn VectorSink>,
    dimension: usize,
    created_dimension: usize,
) -> BatchApplier {
    let mut spec = CollectionSpec::from(&config(dimension).mappings[0]);
    spec.dimension = created_dimension;
    sink.ensure_collection(&spec).await.unwrap();
    let mapper = Mapper::new(config(dimension).mappings, 65_536);
    BatchApplier::new(Arc::new(Codec::local()), mapper, Arc::default(), sink)
}

/// A batch is acknowledged once the shard applied it, without a flush; the sync that
/// makes it durable fails as long as its flush does, and a later sync flushes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_acknowledged_when_visible_and_durable_only_after_a_sync_that_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(EmbeddedSink::open(dir.path()).unwrap());
    let applier = applier(sink.clone(), 4, 4).await;
    let batch = records(&Codec::local(), 4, &["a", "b", "c"]).await;

    // Every flush fails for a while: the write does not flush, so it succeeds.
    sink.fail_flushes(COLLECTION, 2);
    let first = applier.apply(&batch).await.unwrap();
    assert_eq!(first.applied, 3);
    assert_eq!(sink.count_live(COLLECTION).await.unwrap(), 3, "visible");
    for attempt in 0..2 {
        let synced = sink.sync().await;
        assert!(
            matches!(synced, Err(SinkError::Unavailable(_))),
            "sync {attempt} succeeded although its flush failed: {synced:?}"
        );
    }
    sink.sync().await.unwrap();
    // The retry after the failed syncs finds every point at its version (from memory).
    let again = applier.apply(&batch).await.unwrap();
    assert_eq!((again.applied, again.skipped_stale), (0, 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collection_that_no_longer_matches_stops_the_stream_instead_of_the_dlq() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(EmbeddedSink::open(dir.path()).unwrap());
    // The collection has 4 dimensions, the mapping (changed by a deploy) 8.
    let applier = applier(sink.clone(), 8, 4).await;
    let batch = records(&Codec::local(), 8, &["a", "b", "c"]).await;
    for isolate in [false, true] {
        let prepared = applier.prepare(&batch).await.unwrap();
        match applier.write(prepared, isolate).await {
            Err(SinkError::Misconfigured(message)) => {
                assert!(message.contains("expected 8, found 4"), "{message}")
            }
            other => panic!("expected a sink-wide refusal, got {other:?}"),
        }
    }
    assert_eq!(sink.count_live(COLLECTION).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn points_the_sink_refuses_in_a_matching_collection_go_to_the_dlq() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(EmbeddedSink::open(dir.path()).unwrap());
    let applier = applier(sink.clone(), 4, 4).await;
    let codec = Codec::local();
    // A write the engine refuses (a 5-d vector past the mapper), alone and among others.
    for keys in [&["a", "b", "c"][..], &["d"][..]] {
        let batch = records(&codec, 4, keys).await;
        let mut prepared = applier.prepare(&batch).await.unwrap();
        let pending = prepared.by_collection.get_mut(COLLECTION).unwrap();
        let bad = pending.iter_mut().find(|p| p.record == 0).unwrap();
        bad.write.vector = Some(vec![0.5; 5]);
        let outcome = applier.write(prepared, false).await.unwrap();
        assert_eq!(outcome.applied, keys.len() as u64 - 1);
        let poisoned: Vec<usize> = outcome.poisoned.iter().map(|(i, _)| *i).collect();
        assert_eq!(poisoned, [0]);
    }
    assert_eq!(sink.count_live(COLLECTION).await.unwrap(), 2);
}

/// The embedded sink, with its version pre-read refused as a sink refuses a bad request
/// (`refuse_versions`), or every write failing with an internal error (`fail_writes`).
struct Faulty {
    inner: Arc<EmbeddedSink>,
    refuse_versions: bool,
    fail_writes: bool,
}

#[async_trait]
impl VectorSink for Faulty {
    fn name(&self) -> &'static str {
        "faulty"
    }
    async fn ensure_collection(&self, spec: &CollectionSpec) -> Result<(), SinkError> {
        self.inner.ensure_collection(spec).await
    }
    async fn versions(&self, c: &str, ids: &[Uuid]) -> Result<HashMap<Uuid, i64>, SinkError> {
        if self.refuse_versions {
            return Err(SinkError::Rejected("injected: versions refused".into()));
        }
        self.inner.versions(c, ids).await
    }
    async fn write(&self, c: &str, points: &[PointWrite], fence: Fence) -> Result<(), SinkError> {
        if self.fail_writes {
            return Err(SinkError::Internal("injected: disk full".into()));
        }
        self.inner.write(c, points, fence).await
    }
    async fn sync(&self) -> Result<(), SinkError> {
        self.inner.sync().await
    }
    async fn purge(&self, c: &str, points: &[(Uuid, i64)]) -> Result<(), SinkError> {
        self.inner.purge(c, points).await
    }
    async fn scan(
        &self,
        c: &str,
        from: Option<ScanCursor>,
        limit: usize,
    ) -> Result<ScanPage, SinkError> {
        self.inner.scan(c, from, limit).await
    }
    async fn get(&self, c: &str, id: Uuid) -> Result<Option<StoredPoint>, SinkError> {
        self.inner.get(c, id).await
    }
    async fn count_live(&self, c: &str) -> Result<u64, SinkError> {
        self.inner.count_live(c).await
    }
    async fn describe(&self, c: &str, v: &str) -> Result<Option<CollectionSpec>, SinkError> {
        self.inner.describe(c, v).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_version_pre_read_falls_back_to_the_fenced_write() {
    let dir = tempfile::tempdir().unwrap();
    let edge = Arc::new(EmbeddedSink::open(dir.path()).unwrap());
    let faulty = Faulty {
        inner: edge.clone(),
        refuse_versions: true,
        fail_writes: false,
    };
    let applier = applier(Arc::new(faulty), 4, 4).await;
    let batch = records(&Codec::local(), 4, &["a", "b", "c"]).await;
    let outcome = applier.apply(&batch).await.unwrap();
    assert_eq!(outcome.applied, 3);
    assert!(outcome.poisoned.is_empty());
    assert_eq!(edge.count_live(COLLECTION).await.unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_internal_error_of_every_point_is_the_sinks_not_the_events() {
    let dir = tempfile::tempdir().unwrap();
    let faulty = Faulty {
        inner: Arc::new(EmbeddedSink::open(dir.path()).unwrap()),
        refuse_versions: false,
        fail_writes: true,
    };
    let applier = applier(Arc::new(faulty), 4, 4).await;
    let codec = Codec::local();
    // Several points, all failing alike even one by one: a sink-wide fault, no poison.
    let batch = records(&codec, 4, &["a", "b", "c"]).await;
    let prepared = applier.prepare(&batch).await.unwrap();
    let result = applier.write(prepared, true).await;
    assert!(matches!(result, Err(SinkError::Internal(_))), "{result:?}");
    // A single point that keeps failing alone is taken as its event's fault.
    let batch = records(&codec, 4, &["d"]).await;
    let prepared = applier.prepare(&batch).await.unwrap();
    let outcome = applier.write(prepared, true).await.unwrap();
    assert_eq!(outcome.poisoned.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mismatch_found_by_one_refused_point_stops_a_mixed_batch() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(EmbeddedSink::open(dir.path()).unwrap());
    // 4-d collection, 8-d mapping: the tombstone is written, the upserts are refused.
    let applier = applier(sink.clone(), 8, 4).await;
    let codec = Codec::local();
    let mut batch = records(&codec, 8, &["a", "b"]).await;
    let delete = ChangeEvent::node("gone", &["Doc"], Op::Delete, 2, 1_000);
    batch.push(Record {
        offset: 2,
        key: Some(b"gone".to_vec()),
        payload: Some(codec.encode_change(&delete, Format::Avro).await.unwrap()),
        ..batch[0].clone()
    });
    let prepared = applier.prepare(&batch).await.unwrap();
    let result = applier.write(prepared, false).await;
    assert!(
        matches!(result, Err(SinkError::Misconfigured(_))),
        "{result:?}"
    );
}
