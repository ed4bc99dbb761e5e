//! The shadow target a replay writes to.

use crate::config::Config;
use crate::error::bail;
use crate::mapping::PointWrite;
use crate::sink::SinkConfig;
use crate::sink::SinkError;
use crate::sink::{self, CollectionSpec, Fence, ScanCursor, ScanPage, StoredPoint, VectorSink};
use async_trait::async_trait;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use uuid::Uuid;
/// Where a replay writes: never the live store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShadowTarget {
    /// Directory sinks (embedded, jsonl): this directory instead of `[sink] path`.
    Directory(PathBuf),
    /// Qdrant server: collection `c` of the mappings is written to `{c}_{suffix}`.
    Suffix(String),
}

impl ShadowTarget {
    /// The config and the sink a replay of `config` into this target uses.
    ///
    /// With a suffix, the mappings keep their collection names and the sink renames
    /// collections on the way out: point ids derive from the collection name in the
    /// mappings, so the shadow collection holds the ids a processor writing to `c` (for
    /// instance through an alias `c`) computes.
    ///
    /// # Errors
    /// When the target does not fit the sink kind, the directory is the live one, or the
    /// sink cannot be opened.
    pub fn open(&self, config: &Config) -> crate::error::Result<(Config, Arc<dyn VectorSink>)> {
        let mut shadow = config.clone();
        let suffix = match (&mut shadow.sink, self) {
            (
                SinkConfig::Embedded { path } | SinkConfig::Jsonl { path, .. },
                ShadowTarget::Directory(dir),
            ) => {
                if same_path(path, dir) {
                    bail!(Invalid,
                        "replay: --target-path {} is the live store ([sink] path): give a new directory",
                        dir.display()
                    );
                }
                *path = dir.clone();
                None
            }
            (SinkConfig::Qdrant { .. }, ShadowTarget::Suffix(suffix)) => {
                if suffix.is_empty() {
                    bail!(Invalid, "replay: --target-suffix is empty");
                }
                Some(suffix.clone())
            }
            (sink, _) => return Err(target_mismatch(sink)),
        };
        let inner = sink::open(&shadow.sink)?;
        let sink: Arc<dyn VectorSink> = match suffix {
            Some(suffix) => Arc::new(ShadowCollections { inner, suffix }),
            None => inner,
        };
        Ok((shadow, sink))
    }
}

/// The error for a shadow target of the wrong kind for `sink`.
pub(super) fn target_mismatch(sink: &SinkConfig) -> crate::error::Error {
    match sink {
        SinkConfig::Qdrant { .. } => {
            crate::error::err!(
                Invalid,
                "replay: give --target-suffix for the Qdrant server sink"
            )
        }
        SinkConfig::Embedded { .. } | SinkConfig::Jsonl { .. } => {
            crate::error::err!(
                Invalid,
                "replay: give --target-path for a directory sink (embedded, jsonl)"
            )
        }
    }
}

/// The shadow collection of live collection `collection`.
pub fn shadow_collection(collection: &str, suffix: &str) -> String {
    format!("{collection}_{suffix}")
}

/// Whether `a` and `b` name the same file (or are equal when either does not exist).
pub(super) fn same_path(a: &Path, b: &Path) -> bool {
    a == b
        || matches!(
            (std::fs::canonicalize(a), std::fs::canonicalize(b)),
            (Ok(x), Ok(y)) if x == y
        )
}

/// A sink writing collection `c` to `{c}_{suffix}` of `inner` (ids unchanged).
pub(super) struct ShadowCollections {
    inner: Arc<dyn VectorSink>,
    suffix: String,
}

impl ShadowCollections {
    fn shadow(&self, collection: &str) -> String {
        shadow_collection(collection, &self.suffix)
    }
}

#[async_trait]
impl VectorSink for ShadowCollections {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn ensure_collection(&self, spec: &CollectionSpec) -> Result<(), SinkError> {
        let spec = CollectionSpec {
            name: self.shadow(&spec.name),
            ..spec.clone()
        };
        self.inner.ensure_collection(&spec).await
    }

    async fn versions(
        &self,
        collection: &str,
        ids: &[Uuid],
    ) -> Result<HashMap<Uuid, i64>, SinkError> {
        self.inner.versions(&self.shadow(collection), ids).await
    }

    async fn write(
        &self,
        collection: &str,
        points: &[PointWrite],
        fence: Fence,
    ) -> Result<(), SinkError> {
        self.inner
            .write(&self.shadow(collection), points, fence)
            .await
    }

    async fn sync(&self) -> Result<(), SinkError> {
        self.inner.sync().await
    }

    async fn purge(&self, collection: &str, points: &[(Uuid, i64)]) -> Result<(), SinkError> {
        self.inner.purge(&self.shadow(collection), points).await
    }

    async fn scan(
        &self,
        collection: &str,
        from: Option<ScanCursor>,
        limit: usize,
    ) -> Result<ScanPage, SinkError> {
        self.inner.scan(&self.shadow(collection), from, limit).await
    }

    async fn get(&self, collection: &str, id: Uuid) -> Result<Option<StoredPoint>, SinkError> {
        self.inner.get(&self.shadow(collection), id).await
    }

    async fn count_live(&self, collection: &str) -> Result<u64, SinkError> {
        self.inner.count_live(&self.shadow(collection)).await
    }

    async fn describe(
        &self,
        collection: &str,
        vector_name: &str,
    ) -> Result<Option<CollectionSpec>, SinkError> {
        let shadow = self.shadow(collection);
        Ok(self
            .inner
            .describe(&shadow, vector_name)
            .await?
            .map(|spec| CollectionSpec {
                name: collection.to_owned(),
                ..spec
            }))
    }

    async fn tombstones_with_vector(
        &self,
        collection: &str,
        vector_name: &str,
    ) -> Result<Vec<StoredPoint>, SinkError> {
        self.inner
            .tombstones_with_vector(&self.shadow(collection), vector_name)
            .await
    }

    async fn nearest(
        &self,
        collection: &str,
        vector_name: &str,
        vector: &[f32],
        limit: usize,
    ) -> Result<Vec<Uuid>, SinkError> {
        self.inner
            .nearest(&self.shadow(collection), vector_name, vector, limit)
            .await
    }
}
