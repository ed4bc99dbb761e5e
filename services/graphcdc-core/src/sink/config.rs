//! `[sink]`: which vector store the processor writes to (`kind`), and its settings.

use crate::settings::{invalid, ConfigError, Secret};
use serde::Deserialize;
use std::path::PathBuf;

/// Which vector store the processor writes to.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SinkConfig {
    /// Embedded Qdrant (qdrant-edge) in a local directory: demo, tests, small setups.
    Embedded {
        /// Directory holding one sub-directory per collection.
        path: PathBuf,
    },
    /// JSON Lines audit/export files (one directory per collection, rotated).
    Jsonl {
        /// Directory holding one sub-directory per collection.
        path: PathBuf,
        /// A new file is started once the current one reaches this size.
        #[serde(default = "default_max_file_bytes")]
        max_file_bytes: u64,
    },
    /// A Qdrant server over gRPC: the production path.
    Qdrant {
        /// gRPC URL, e.g. `http://localhost:6334`.
        url: String,
        #[serde(default)]
        api_key: Option<Secret>,
        /// Per-request timeout.
        #[serde(default = "default_timeout_ms")]
        timeout_ms: u64,
    },
}

fn default_max_file_bytes() -> u64 {
    64 << 20
}

fn default_timeout_ms() -> u64 {
    10_000
}

impl Default for SinkConfig {
    fn default() -> Self {
        SinkConfig::Embedded {
            path: PathBuf::from(".graphcdc-data/qdrant"),
        }
    }
}

impl SinkConfig {
    /// Checks that need no I/O.
    ///
    /// # Errors
    /// The first field found out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let SinkConfig::Qdrant { url, .. } = self {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(
                    "sink.url",
                    format!("{url:?} is not an http(s) URL"),
                ));
            }
        }
        Ok(())
    }
}
