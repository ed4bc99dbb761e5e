//! Setting up the connection (from `[sink]`), the server-version check the version fence
//! relies on, and administration: aliases, collection names, indexing, deletion.

use super::errors::classify;
use super::QdrantSink;
use crate::sink::config::SinkConfig;
use crate::sink::error::SinkError;
use qdrant_client::{Qdrant, QdrantError};
use std::collections::HashMap;
use std::time::Duration;

impl QdrantSink {
    /// A client for the `[sink]` section, which must be `kind = "qdrant"`.
    ///
    /// # Errors
    /// When the section is another kind or the URL is invalid.
    pub fn from_config(sink: &SinkConfig) -> crate::error::Result<Self> {
        match sink {
            SinkConfig::Qdrant {
                url,
                api_key,
                timeout_ms,
            } => Self::connect(
                url,
                api_key.as_ref().map(|k| k.expose().to_owned()),
                *timeout_ms,
            ),
            _ => crate::error::bail!(Invalid, "sink.kind: a Qdrant server is needed here"),
        }
    }

    /// A client for `url`; no connection is made until the first call.
    ///
    /// # Errors
    /// When `url` is not a valid URI.
    pub fn connect(
        url: &str,
        api_key: Option<String>,
        timeout_ms: u64,
    ) -> crate::error::Result<Self> {
        let client = Qdrant::from_url(url)
            .api_key(api_key)
            .timeout(Duration::from_millis(timeout_ms))
            .skip_compatibility_check()
            .build()
            .map_err(|e| crate::error::err!(Invalid, "sink.url: {e}"))?;
        Ok(QdrantSink {
            client,
            fence_checked: tokio::sync::OnceCell::new(),
        })
    }

    /// Server version, for the start-up log.
    ///
    /// # Errors
    /// When the server cannot be reached.
    pub async fn server_version(&self) -> Result<String, SinkError> {
        Ok(self.client.health_check().await.map_err(classify)?.version)
    }

    /// Every alias of the server and the collection it points at.
    ///
    /// # Errors
    /// When the server cannot be reached or refuses.
    pub async fn aliases(&self) -> Result<HashMap<String, String>, SinkError> {
        let response = self.client.list_aliases().await.map_err(classify)?;
        Ok(response
            .aliases
            .into_iter()
            .map(|a| (a.alias_name, a.collection_name))
            .collect())
    }

    /// Names of the collections (aliases not included).
    ///
    /// # Errors
    /// When the server cannot be reached or refuses.
    pub async fn collection_names(&self) -> Result<Vec<String>, SinkError> {
        let response = self.client.list_collections().await.map_err(classify)?;
        Ok(response.collections.into_iter().map(|c| c.name).collect())
    }

    /// Point each `(alias, collection)` alias at its collection in one `UpdateAliases`
    /// request (a `DeleteAlias` for each alias that exists, then a `CreateAlias` for each),
    /// which Qdrant applies atomically: a reader sees all old or all new targets, never a
    /// missing alias. Returns the collection each alias pointed at before.
    ///
    /// `qdrant-client` sends one alias action per request only, so this talks to the
    /// generated gRPC client on a channel of its own (same URL, API key and timeouts).
    ///
    /// # Errors
    /// When the server cannot be reached or refuses (e.g. a collection is missing, or an
    /// alias has the name of a collection).
    pub async fn swap_aliases(
        &self,
        swaps: &[(String, String)],
    ) -> Result<Vec<Option<String>>, SinkError> {
        use qdrant_client::qdrant::alias_operations::Action;
        use qdrant_client::qdrant::collections_client::CollectionsClient;
        use qdrant_client::qdrant::{AliasOperations, ChangeAliases, CreateAlias, DeleteAlias};
        use tonic::transport::{Channel, ClientTlsConfig};

        let before = self.aliases().await?;
        let previous: Vec<Option<String>> = swaps
            .iter()
            .map(|(alias, _)| before.get(alias).cloned())
            .collect();
        let mut actions = Vec::with_capacity(swaps.len() * 2);
        for ((alias, _), previous) in swaps.iter().zip(&previous) {
            if previous.is_some() {
                actions.push(AliasOperations {
                    action: Some(Action::DeleteAlias(DeleteAlias {
                        alias_name: alias.clone(),
                    })),
                });
            }
        }
        for (alias, collection) in swaps {
            actions.push(AliasOperations {
                action: Some(Action::CreateAlias(CreateAlias {
                    collection_name: collection.clone(),
                    alias_name: alias.clone(),
                })),
            });
        }

        let config = &self.client.config;
        let mut endpoint = Channel::from_shared(config.uri.clone())
            .map_err(|e| SinkError::Rejected(format!("sink.url: {e}")))?
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout);
        if config.uri.starts_with("https:") {
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().with_native_roots())
                .map_err(|e| SinkError::Rejected(format!("sink.url: TLS: {e}")))?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| SinkError::Unavailable(format!("connecting to {}: {e}", config.uri)))?;
        let api_key = config.api_key.clone();
        let mut api = CollectionsClient::with_interceptor(
            channel,
            move |mut request: tonic::Request<()>| -> Result<tonic::Request<()>, tonic::Status> {
                if let Some(key) = &api_key {
                    request.metadata_mut().insert(
                        "api-key",
                        key.parse()
                            .map_err(|_| tonic::Status::invalid_argument("malformed API key"))?,
                    );
                }
                Ok(request)
            },
        );
        let response = api
            .update_aliases(ChangeAliases {
                actions,
                timeout: None,
            })
            .await
            .map_err(|status| classify(QdrantError::ResponseError { status }))?
            .into_inner();
        if !response.result {
            return Err(SinkError::Rejected(
                "the server did not apply the alias change".to_owned(),
            ));
        }
        Ok(previous)
    }

    /// Have the server index every segment of `collection` now (indexing threshold of
    /// 1 kB) and wait until its optimizer is done: the points then sit in indexed,
    /// non-appendable segments, as in any collection of real size. For tests.
    ///
    /// # Errors
    /// When the server cannot be reached or refuses.
    pub async fn index_now(&self, collection: &str) -> Result<(), SinkError> {
        use qdrant_client::qdrant::{
            CollectionStatus, OptimizersConfigDiffBuilder, UpdateCollectionBuilder,
        };
        self.client
            .update_collection(
                UpdateCollectionBuilder::new(collection).optimizers_config(
                    OptimizersConfigDiffBuilder::default().indexing_threshold(1),
                ),
            )
            .await
            .map_err(classify)?;
        for _ in 0..600 {
            let info = self
                .client
                .collection_info(collection)
                .await
                .map_err(classify)?
                .result;
            let done = info.as_ref().is_some_and(|i| {
                i.status() == CollectionStatus::Green && i.indexed_vectors_count.unwrap_or(0) > 0
            });
            if done {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(SinkError::Unavailable(format!(
            "{collection} was not indexed within 60 s"
        )))
    }

    /// Delete `collection` and its points for good.
    ///
    /// # Errors
    /// When the server cannot be reached or refuses.
    pub async fn delete_collection(&self, collection: &str) -> Result<(), SinkError> {
        self.client
            .delete_collection(collection)
            .await
            .map_err(classify)?;
        Ok(())
    }
}

/// Whether a Qdrant server of `version` ("1.16.0") applies the `update_filter` of an
/// upsert, which the version fence relies on (1.16 or newer). Unparsable: assume yes.
pub(super) fn fences_writes(version: &str) -> bool {
    let mut parts = version.trim_start_matches('v').split('.');
    let number = |p: Option<&str>| p.and_then(|p| p.parse::<u32>().ok());
    match (number(parts.next()), number(parts.next())) {
        (Some(major), Some(minor)) => (major, minor) >= (1, 16),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_servers_that_fence_writes_are_accepted() {
        for (version, ok) in [
            ("1.16.0", true),
            ("v1.17.2", true),
            ("2.0.0", true),
            ("1.15.5", false),
            ("1.9.0", false),
            ("dev", true),
        ] {
            assert_eq!(fences_writes(version), ok, "{version}");
        }
    }
}
