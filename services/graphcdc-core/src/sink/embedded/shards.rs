//! Opening the shard of each collection under the sink's root, running calls on it on
//! the blocking pool, and the tools that drive a shard into the states a server reaches
//! (optimized segments, points written by other tools, failing flushes).

use super::errors::classify;
use super::request::point_id;
use super::shard::Shard;
use super::EmbeddedSink;
use crate::sink::error::SinkError;
use crate::sink::{ScanCursor, StoredPoint};
use qdrant_edge::{
    EdgeOptimizersConfig, Filter, Payload, PointInsertOperations, PointOperations,
    PointStructPersisted, UpdateOperation, VectorPersisted, VectorStructPersisted,
};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

impl EmbeddedSink {
    /// A sink storing collections under `root` (created when missing).
    ///
    /// # Errors
    /// When `root` cannot be created.
    pub fn open(root: &Path) -> crate::error::Result<Self> {
        std::fs::create_dir_all(root).map_err(|e| {
            crate::error::err!(External, "sink.path: cannot create {}: {e}", root.display())
        })?;
        Ok(EmbeddedSink {
            root: root.to_owned(),
            shards: Mutex::new(HashMap::new()),
        })
    }

    pub(super) fn shard(&self, collection: &str) -> Result<Arc<Shard>, SinkError> {
        // Held through the load: two first uses at once would both open the shard, and
        // the second fails on the WAL's file lock.
        let mut shards = self.shards.lock().unwrap();
        if let Some(shard) = shards.get(collection) {
            return Ok(shard.clone());
        }
        let dir = self.root.join(collection);
        if !dir.join("edge_config.json").exists() {
            return Err(SinkError::Misconfigured(format!(
                "collection {collection:?} does not exist"
            )));
        }
        let shard = super::recovery::load(&dir)?;
        let shard = Arc::new(Shard {
            shard,
            dir,
            write_lock: Mutex::new(()),
            // The load's own updates (indexes) are flushed before the first use.
            dirty: AtomicBool::new(true),
            #[cfg(test)]
            failing_flushes: Default::default(),
        });
        shards.insert(collection.to_owned(), shard.clone());
        Ok(shard)
    }

    /// Run `f` on the blocking pool with the shard of `collection`.
    pub(super) async fn with_shard<T: Send + 'static>(
        &self,
        collection: &str,
        f: impl FnOnce(&Shard) -> Result<T, SinkError> + Send + 'static,
    ) -> Result<T, SinkError> {
        let shard = self.shard(collection)?;
        tokio::task::spawn_blocking(move || f(&shard))
            .await
            .map_err(|e| SinkError::Unavailable(format!("embedded shard task failed: {e}")))?
    }

    /// Optimize `collection` as a Qdrant server's optimizer would (merge, index, vacuum),
    /// with segments above `indexing_threshold_kb` indexed: afterwards its points sit in
    /// non-appendable segments, the state of any real collection on a server.
    ///
    /// # Errors
    /// When the collection does not exist or the optimizer fails.
    pub async fn optimize(
        &self,
        collection: &str,
        indexing_threshold_kb: usize,
    ) -> Result<bool, SinkError> {
        self.with_shard(collection, move |s| {
            let _guard = s.lock();
            s.shard
                .set_optimizers_config(EdgeOptimizersConfig {
                    indexing_threshold: Some(indexing_threshold_kb),
                    ..Default::default()
                })
                .map_err(classify)?;
            let optimized = s.shard.optimize().map_err(classify)?;
            s.dirty.store(true, Ordering::SeqCst);
            s.flush()?;
            Ok(optimized)
        })
        .await
    }

    /// Write a point as another tool would (any id kind, any payload, no version fence):
    /// what a collection holds when it existed before graphcdc. For tests and
    /// migrations; the pipeline never calls it.
    ///
    /// # Errors
    /// When the collection does not exist or the write fails.
    pub async fn put_foreign(
        &self,
        collection: &str,
        id: ScanCursor,
        vector_name: &str,
        vector: Vec<f32>,
        payload: serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), SinkError> {
        let point = PointStructPersisted {
            id: point_id(id),
            vector: VectorStructPersisted::Named(HashMap::from([(
                vector_name.to_owned(),
                VectorPersisted::Dense(vector),
            )])),
            payload: Some(Payload(payload)),
        };
        self.with_shard(collection, move |s| {
            s.update_durably(vec![UpdateOperation::PointOperation(
                PointOperations::UpsertPoints(PointInsertOperations::PointsList(vec![point])),
            )])
        })
        .await
    }

    /// Every point of `collection` matching `filter`, with the fields a scan reads.
    pub(super) async fn scroll_all(
        &self,
        collection: &str,
        filter: Filter,
    ) -> Result<Vec<StoredPoint>, SinkError> {
        self.with_shard(collection, move |s| {
            let mut found = Vec::new();
            let mut offset = None;
            loop {
                let page = s.scroll_page(Some(filter.clone()), offset, 1_000)?;
                found.extend(page.points);
                match page.next {
                    Some(next) => offset = Some(point_id(next)),
                    None => return Ok(found),
                }
            }
        })
        .await
    }

    /// Make the next `n` flushes of `collection` fail as an I/O error inside qdrant-edge
    /// does (a panic).
    #[cfg(test)]
    pub(crate) fn fail_flushes(&self, collection: &str, n: usize) {
        let shard = self.shard(collection).unwrap();
        shard.failing_flushes.store(n, Ordering::SeqCst);
    }
}
