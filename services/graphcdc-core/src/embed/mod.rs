//! Embeddings on the way: upserts of mappings with `[mappings.embedding]` that carry no
//! vector leave the mapper with their text ([`PointWrite::text`]); [`Embeddings::complete`]
//! gives them a vector just before the sink write.
//!
//! - Unchanged text is never embedded again: the point's stored text hash
//!   ([`crate::mapping::TEXT_HASH_FIELD`]) is read back with its vector
//!   ([`VectorSink::stored_embeddings`]), and a write whose text hash equals it keeps the
//!   stored vector (a metadata-only change costs no model call). Equal texts in one batch
//!   are embedded once.
//! - The rest goes to the model in batches of `batch_size`, `concurrency` calls at a
//!   time, each within `timeout_ms`.
//! - Errors keep the pipeline's classes ([`EmbedError`]): an unreachable, overloaded or
//!   slow model is [`SinkError::Unavailable`] (the partitions pause and the batch is
//!   retried with backoff), a refused key or unknown model is
//!   [`SinkError::Misconfigured`] (the stream stops, nothing goes to the DLQ), and only a
//!   text the model refuses on its own goes to the DLQ
//!   ([`PoisonKind::EmbeddingRejected`]).
//!
//! Providers: [`local`] (all-MiniLM-L6-v2 in-process, candle) and [`openai`] (any
//! OpenAI-compatible `/v1/embeddings`).

#[cfg(feature = "local-embeddings")]
pub mod local;
#[cfg(feature = "local-embeddings")]
pub mod model_files;
pub mod openai;
pub mod search;

use crate::error::{PoisonError, PoisonKind};
use crate::mapping::PointWrite;
use crate::mapping::{EmbeddingConfig, EmbeddingProvider, MappingConfig};
use crate::sink::SinkError;
use crate::sink::VectorSink;
use crate::stats::EmbeddingStats;
use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A failed model call, by what the pipeline does about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmbedError {
    /// Unreachable, overloaded (429, 5xx) or too slow: retry with backoff.
    #[error("embedding model unavailable: {0}")]
    Unavailable(String),
    /// Refused credentials, unknown model, wrong dimension: every call would fail alike.
    #[error("embedding model misconfigured: {0}")]
    Misconfigured(String),
    /// The model refused the input itself (a 4xx about the texts).
    #[error("embedding model refused the input: {0}")]
    Rejected(String),
}

impl From<EmbedError> for SinkError {
    fn from(e: EmbedError) -> Self {
        match e {
            EmbedError::Unavailable(_) => SinkError::Unavailable(e.to_string()),
            EmbedError::Misconfigured(_) => SinkError::Misconfigured(e.to_string()),
            EmbedError::Rejected(_) => SinkError::Rejected(e.to_string()),
        }
    }
}

/// A sentence-embedding model.
#[async_trait]
pub trait Embedder: Send + Sync {
    /// Provider and model, for logs.
    fn describe(&self) -> String;

    /// One vector per text, in order.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// The embedding step of one collection.
struct CollectionEmbedding {
    embedder: Arc<dyn Embedder>,
    vector_name: String,
    dimension: usize,
    batch_size: usize,
    concurrency: usize,
    timeout: Duration,
    stats: EmbeddingStats,
}

/// The embedding steps of the mappings that have one, by collection.
#[derive(Default)]
pub struct Embeddings {
    by_collection: HashMap<String, Arc<CollectionEmbedding>>,
}

impl Embeddings {
    /// The steps of `mappings` (none when no mapping embeds). The local model is loaded
    /// once per model directory and shared.
    ///
    /// # Errors
    /// When a provider cannot be set up (the local model cannot be found or loaded, or
    /// this build left it out), naming the mapping.
    pub async fn from_mappings(mappings: &[MappingConfig]) -> crate::error::Result<Self> {
        let mut shared: HashMap<String, Arc<dyn Embedder>> = HashMap::new();
        let mut embeddings = Embeddings::default();
        for (i, m) in mappings.iter().enumerate() {
            let Some(config) = &m.embedding else {
                continue;
            };
            let identity = format!(
                "{:?} {} {:?} {:?}",
                config.provider, config.model, config.model_dir, config.url
            );
            let embedder = match shared.get(&identity) {
                Some(embedder) => embedder.clone(),
                None => {
                    let embedder = provider(config).await.map_err(|e| {
                        crate::error::err!(
                            "mappings[{i}].embedding (collection {:?}): {e:#}",
                            m.collection
                        )
                    })?;
                    shared.insert(identity, embedder.clone());
                    embedder
                }
            };
            tracing::info!(collection = %m.collection, model = %embedder.describe(), "embedding on the way");
            embeddings.insert(m, embedder);
        }
        Ok(embeddings)
    }

    /// Embed the texts of `mapping` (which has `[mappings.embedding]`) with `embedder`:
    /// a provider of your own.
    pub fn insert(&mut self, mapping: &MappingConfig, embedder: Arc<dyn Embedder>) {
        let Some(config) = &mapping.embedding else {
            return;
        };
        self.by_collection.insert(
            mapping.collection.clone(),
            Arc::new(CollectionEmbedding {
                embedder,
                vector_name: mapping.vector_name.clone(),
                dimension: mapping.dimension,
                batch_size: config.batch_size,
                concurrency: config.concurrency,
                timeout: Duration::from_millis(config.timeout_ms),
                stats: EmbeddingStats::for_collection(&mapping.collection),
            }),
        );
    }

    /// The vector of `text` by `collection`'s model: a search query.
    ///
    /// # Errors
    /// When `collection` does not embed, or the model fails or refuses the text.
    pub async fn embed_query(&self, collection: &str, text: &str) -> Result<Vec<f32>, SinkError> {
        let step = self.by_collection.get(collection).ok_or_else(|| {
            SinkError::Misconfigured(format!(
                "collection {collection:?} has no [mappings.embedding]"
            ))
        })?;
        Ok(step.call(&[text.to_owned()]).await?.remove(0))
    }

    /// The counts of `collection`'s embedding step, if it has one.
    pub fn stats(&self, collection: &str) -> Option<&EmbeddingStats> {
        self.by_collection.get(collection).map(|c| &c.stats)
    }

    /// Give every write of `collection` that needs one a vector: the stored one when the
    /// text is unchanged, else the model's. Returns the indices of the writes whose text
    /// the model refused (they stay without a vector and must not be written).
    ///
    /// # Errors
    /// A retriable [`SinkError`] when the sink cannot be read or the model is
    /// unavailable or misconfigured: nothing was written; retry the batch.
    pub async fn complete(
        &self,
        sink: &dyn VectorSink,
        collection: &str,
        writes: &mut [PointWrite],
    ) -> Result<Vec<(usize, PoisonError)>, SinkError> {
        let waiting: Vec<usize> = (0..writes.len())
            .filter(|&i| writes[i].needs_embedding())
            .collect();
        if waiting.is_empty() {
            return Ok(Vec::new());
        }
        let Some(step) = self.by_collection.get(collection) else {
            return Err(SinkError::Misconfigured(format!(
                "collection {collection:?} got writes to embed but has no embedding step"
            )));
        };
        let ids: Vec<_> = waiting.iter().map(|&i| writes[i].id).collect();
        let stored = match sink
            .stored_embeddings(collection, &step.vector_name, &ids)
            .await
        {
            Ok(stored) => stored,
            Err(e) if e.is_retriable() => return Err(e),
            Err(e) => {
                tracing::warn!(%collection, error = %e, "cannot read stored vectors; embedding every text");
                HashMap::new()
            }
        };
        // Text hash → the writes that need its vector, in first-seen order.
        let mut to_embed: Vec<(String, String)> = Vec::new();
        let mut readers: HashMap<String, Vec<usize>> = HashMap::new();
        for &i in &waiting {
            let write = &mut writes[i];
            let text = write.text.as_ref().expect("waiting writes have text");
            match stored.get(&write.id) {
                Some(s) if s.text_hash == text.hash && s.vector.len() == step.dimension => {
                    write.vector = Some(s.vector.clone());
                    step.stats.cache_hits.add(1);
                }
                _ => {
                    let readers = readers.entry(text.hash.clone()).or_default();
                    if readers.is_empty() {
                        to_embed.push((text.hash.clone(), text.text.clone()));
                    }
                    readers.push(i);
                }
            }
        }
        let texts = to_embed.len();
        let (vectors, refused) = step.embed_all(to_embed).await?;
        // Every text refused, one by one: the request is what the endpoint refuses (an
        // option it does not know, a model name it lacks), not the texts. Stop the stream
        // rather than empty it into the DLQ, as the sink does when all of a split fails.
        if texts > 1 && refused.len() == texts {
            return Err(SinkError::Misconfigured(format!(
                "the model refused all {texts} texts of a batch, each alone: {}",
                refused[0].1
            )));
        }
        for (hash, vector) in vectors {
            for &i in &readers[&hash] {
                writes[i].vector = Some(vector.clone());
            }
        }
        Ok(refused
            .into_iter()
            .flat_map(|(hash, message)| {
                readers[&hash].iter().map(move |&i| {
                    (
                        i,
                        PoisonError::new(PoisonKind::EmbeddingRejected, message.clone()),
                    )
                })
            })
            .collect())
    }
}

/// A vector per text hash, and the texts the model refused with its message.
type Embedded = (Vec<(String, Vec<f32>)>, Vec<(String, String)>);

impl CollectionEmbedding {
    /// Embed `(hash, text)` pairs in batches, `concurrency` calls at a time. A batch the
    /// model refuses is sent again one text at a time, so only the texts it refuses alone
    /// are reported.
    async fn embed_all(&self, texts: Vec<(String, String)>) -> Result<Embedded, SinkError> {
        let batches: Vec<Vec<(String, String)>> =
            texts.chunks(self.batch_size).map(<[_]>::to_vec).collect();
        let results: Vec<Embedded> = futures::stream::iter(batches)
            .map(|batch| self.embed_batch(batch))
            .buffer_unordered(self.concurrency)
            .try_collect()
            .await?;
        let mut embedded = (Vec::new(), Vec::new());
        for (vectors, refused) in results {
            embedded.0.extend(vectors);
            embedded.1.extend(refused);
        }
        Ok(embedded)
    }

    async fn embed_batch(&self, batch: Vec<(String, String)>) -> Result<Embedded, SinkError> {
        let texts: Vec<String> = batch.iter().map(|(_, text)| text.clone()).collect();
        match self.call(&texts).await {
            Ok(vectors) => Ok((
                batch
                    .into_iter()
                    .map(|(hash, _)| hash)
                    .zip(vectors)
                    .collect(),
                Vec::new(),
            )),
            Err(EmbedError::Rejected(message)) if batch.len() == 1 => {
                self.stats.rejected.add(1);
                Ok((Vec::new(), vec![(batch[0].0.clone(), message)]))
            }
            Err(EmbedError::Rejected(_)) => {
                let mut embedded = (Vec::new(), Vec::new());
                for (hash, text) in batch {
                    match self.call(std::slice::from_ref(&text)).await {
                        Ok(mut vectors) => embedded.0.push((hash, vectors.remove(0))),
                        Err(EmbedError::Rejected(message)) => {
                            self.stats.rejected.add(1);
                            embedded.1.push((hash, message));
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Ok(embedded)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// One model call within the timeout, its answer checked against the mapping.
    async fn call(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let started = Instant::now();
        self.stats.model_calls.add(1);
        let vectors = tokio::time::timeout(self.timeout, self.embedder.embed(texts))
            .await
            .map_err(|_| {
                EmbedError::Unavailable(format!(
                    "{} did not answer within {} ms",
                    self.embedder.describe(),
                    self.timeout.as_millis()
                ))
            })??;
        self.stats
            .call_duration
            .record(started.elapsed().as_secs_f64());
        if vectors.len() != texts.len() {
            return Err(EmbedError::Misconfigured(format!(
                "{} returned {} vectors for {} texts",
                self.embedder.describe(),
                vectors.len(),
                texts.len()
            )));
        }
        if let Some(v) = vectors.iter().find(|v| v.len() != self.dimension) {
            return Err(EmbedError::Misconfigured(format!(
                "{} makes {}-d vectors, the mapping's dimension is {}",
                self.embedder.describe(),
                v.len(),
                self.dimension
            )));
        }
        if vectors.iter().flatten().any(|x| !x.is_finite()) {
            return Err(EmbedError::Misconfigured(format!(
                "{} returned a non-finite vector component",
                self.embedder.describe()
            )));
        }
        self.stats.embedded.add(texts.len() as u64);
        Ok(vectors)
    }
}

/// A client builder for model calls and the model download. reqwest is built without a
/// default TLS crypto provider: ring is installed first (once per process).
pub(crate) fn http_client_builder() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

/// The provider `config` names.
async fn provider(config: &EmbeddingConfig) -> crate::error::Result<Arc<dyn Embedder>> {
    Ok(match config.provider {
        #[cfg(feature = "local-embeddings")]
        EmbeddingProvider::Local => {
            let dir = match &config.model_dir {
                Some(dir) => dir.clone(),
                None => model_files::cached_model().await?,
            };
            Arc::new(local::LocalEmbedder::load(&dir)?)
        }
        #[cfg(not(feature = "local-embeddings"))]
        EmbeddingProvider::Local => crate::error::bail!(
            Invalid,
            "provider \"local\" needs the in-process model, which this build left out \
             (built without the `local-embeddings` feature); use provider = \"openai\""
        ),
        EmbeddingProvider::Openai => Arc::new(openai::OpenAiEmbedder::new(config)?),
    })
}

#[cfg(test)]
mod tests;
