//! The embedded sink after a process was killed in the middle of a flush.
//!
//! qdrant-edge flushes a segment part by part (id mapping, vectors, payload indexes, payload
//! storage, point versions) and, unlike a Qdrant server, replays no WAL when it loads a
//! shard: a kill between two parts leaves them disagreeing. These tests build such a store
//! from two flushed states, as a kill after the payload indexes and before the payload
//! storage leaves it.

use super::*;
use crate::mapping::Distance;
use crate::mapping::{point_id, DELETED_FIELD, KEY_FIELD, VERSION_FIELD};
use serde_json::{json, Map};
use std::path::Path;

const COLLECTION: &str = "docs";

fn spec() -> CollectionSpec {
    CollectionSpec {
        name: COLLECTION.to_owned(),
        vector_name: "embedding".into(),
        dimension: 4,
        distance: Distance::Cosine,
    }
}

fn upsert(key: &str, version: i64) -> PointWrite {
    let payload = Map::from_iter([
        (KEY_FIELD.to_owned(), json!(key)),
        (VERSION_FIELD.to_owned(), json!(version)),
        (DELETED_FIELD.to_owned(), json!(false)),
        ("text".to_owned(), json!(format!("{key} v{version}"))),
    ]);
    PointWrite {
        collection: COLLECTION.to_owned(),
        id: point_id(COLLECTION, key),
        key: key.to_owned(),
        version,
        commit_time_ms: 0,
        hash: format!("h-{version}"),
        vector_name: "embedding".into(),
        vector: Some(vec![1.0, version as f32, 0.5, -0.5]),
        text: None,
        payload,
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Write `before` and close, then `after` and never close (as a killed process); returns a store with
/// the WAL, the payload indexes and the open marker of the second state and everything else
/// of the first: what a kill between flushing the payload indexes and the payload storage
/// of `after` leaves.
async fn killed_mid_flush(before: &[PointWrite], after: &[PointWrite]) -> tempfile::TempDir {
    let live = tempfile::tempdir().unwrap();
    let killed = tempfile::tempdir().unwrap();
    {
        let sink = EmbeddedSink::open(live.path()).unwrap();
        sink.ensure_collection(&spec()).await.unwrap();
        sink.write(COLLECTION, before, Fence::Newer).await.unwrap();
    }
    copy_dir(live.path(), killed.path());
    // The sync flushes the second state: the kill comes during a later flush.
    let sink = EmbeddedSink::open(live.path()).unwrap();
    sink.write(COLLECTION, after, Fence::Newer).await.unwrap();
    sink.sync().await.unwrap();
    std::mem::forget(sink);
    let (live, killed_docs) = (live.path().join(COLLECTION), killed.path().join(COLLECTION));
    std::fs::copy(
        live.join(recovery::OPEN_MARKER),
        killed_docs.join(recovery::OPEN_MARKER),
    )
    .expect("a process that was not closed leaves its open marker");
    std::fs::remove_dir_all(killed_docs.join("wal")).unwrap();
    copy_dir(&live.join("wal"), &killed_docs.join("wal"));
    for segment in std::fs::read_dir(live.join("segments")).unwrap() {
        let segment = segment.unwrap().path();
        let indexes = segment.join("payload_index");
        let target = killed_docs
            .join("segments")
            .join(segment.file_name().unwrap())
            .join("payload_index");
        std::fs::remove_dir_all(&target).unwrap();
        copy_dir(&indexes, &target);
    }
    killed
}

async fn version_of(sink: &EmbeddedSink, key: &str) -> Option<i64> {
    let point = sink
        .get(COLLECTION, point_id(COLLECTION, key))
        .await
        .unwrap();
    point.map(|p| p.version)
}

/// The events of the killed batch come again (their offsets were not committed): the
/// version index must not refuse them for versions the payloads never reached.
#[tokio::test]
async fn writes_a_kill_mid_flush_left_half_flushed_are_applied_again() {
    let before = [upsert("a", 21), upsert("b", 5)];
    let after = [upsert("a", 23), upsert("b", 6)];
    let store = killed_mid_flush(&before, &after).await;
    let sink = EmbeddedSink::open(store.path()).unwrap();
    assert_eq!(
        version_of(&sink, "a").await,
        Some(21),
        "payloads of the first flush"
    );
    assert_eq!(
        sink.versions(COLLECTION, &[point_id(COLLECTION, "a")])
            .await
            .unwrap()
            .get(&point_id(COLLECTION, "a")),
        Some(&21)
    );
    sink.write(COLLECTION, &[upsert("a", 22)], Fence::Newer)
        .await
        .unwrap();
    sink.write(COLLECTION, &[upsert("a", 23), upsert("b", 6)], Fence::Newer)
        .await
        .unwrap();
    assert_eq!(version_of(&sink, "a").await, Some(23));
    assert_eq!(version_of(&sink, "b").await, Some(6));
    assert_eq!(sink.count_live(COLLECTION).await.unwrap(), 2);
}

/// A closed shard is marked closed: the next process loads it without rebuilding anything.
#[tokio::test]
async fn the_open_marker_lives_as_long_as_the_shard_is_open() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join(COLLECTION).join(recovery::OPEN_MARKER);
    {
        let sink = EmbeddedSink::open(dir.path()).unwrap();
        sink.ensure_collection(&spec()).await.unwrap();
        sink.write(COLLECTION, &[upsert("a", 1)], Fence::Newer)
            .await
            .unwrap();
        assert!(marker.exists(), "open");
    }
    assert!(!marker.exists(), "closed after a flush");
    let sink = EmbeddedSink::open(dir.path()).unwrap();
    assert_eq!(version_of(&sink, "a").await, Some(1));
    assert!(marker.exists(), "open again");
}
