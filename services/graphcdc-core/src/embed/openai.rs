//! The `openai` provider: any OpenAI-compatible `POST {url}/embeddings` (OpenAI, Azure
//! OpenAI, Hugging Face TEI, Ollama, vLLM).
//!
//! How an answer is classified ([`EmbedError`]): no answer, a timeout, 408, 429 and 5xx
//! are `Unavailable` (the processor pauses the partitions and retries with backoff);
//! 401, 403 and 404 are `Misconfigured` (key or model or URL wrong: the stream stops,
//! nothing goes to the DLQ); any other 4xx is about the input (`Rejected`: the text that
//! the model refuses alone goes to the DLQ).

use super::{EmbedError, Embedder};
use crate::mapping::EmbeddingConfig;
use crate::settings::Secret;
use async_trait::async_trait;
use reqwest::StatusCode;
use serde::Deserialize;

/// A client of one endpoint and model.
pub struct OpenAiEmbedder {
    client: reqwest::Client,
    endpoint: String,
    model: String,
    api_key: Option<Secret>,
}

#[derive(Deserialize)]
struct Response {
    data: Vec<Embedding>,
}

#[derive(Deserialize)]
struct Embedding {
    index: usize,
    embedding: Vec<f32>,
}

impl OpenAiEmbedder {
    /// A client for `config` (provider `openai`, URL validated at start).
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(config: &EmbeddingConfig) -> crate::error::Result<Self> {
        let client = super::http_client_builder()
            .timeout(std::time::Duration::from_millis(config.timeout_ms))
            .build()?;
        let base = config.url.as_deref().unwrap_or_default();
        Ok(OpenAiEmbedder {
            client,
            endpoint: format!("{}/embeddings", base.trim_end_matches('/')),
            model: config.model.clone(),
            api_key: config.api_key.clone(),
        })
    }
}

/// What an error status means for the pipeline.
pub fn classify(status: StatusCode, body: &str) -> EmbedError {
    let message = format!("{status}: {}", body.chars().take(300).collect::<String>());
    match status.as_u16() {
        408 | 429 | 500..=599 => EmbedError::Unavailable(message),
        401 | 403 | 404 => EmbedError::Misconfigured(message),
        _ => EmbedError::Rejected(message),
    }
}

#[async_trait]
impl Embedder for OpenAiEmbedder {
    fn describe(&self) -> String {
        format!("openai {} at {}", self.model, self.endpoint)
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut request = self.client.post(&self.endpoint).json(&serde_json::json!({
            "model": self.model,
            "input": texts,
            "encoding_format": "float",
        }));
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key.expose());
        }
        let response = request
            .send()
            .await
            .map_err(|e| EmbedError::Unavailable(format!("{}: {e}", self.endpoint)))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(classify(status, &body));
        }
        let mut answer: Response = response.json().await.map_err(|e| {
            EmbedError::Misconfigured(format!(
                "{} did not answer as an OpenAI embeddings endpoint: {e}",
                self.endpoint
            ))
        })?;
        answer.data.sort_by_key(|e| e.index);
        Ok(answer.data.into_iter().map(|e| e.embedding).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_what_the_pipeline_does() {
        let kind = |code| match classify(StatusCode::from_u16(code).unwrap(), "") {
            EmbedError::Unavailable(_) => "retry",
            EmbedError::Misconfigured(_) => "stop",
            EmbedError::Rejected(_) => "dlq",
        };
        for code in [408, 429, 500, 502, 503] {
            assert_eq!(kind(code), "retry", "{code}");
        }
        for code in [401, 403, 404] {
            assert_eq!(kind(code), "stop", "{code}");
        }
        for code in [400, 413, 422] {
            assert_eq!(kind(code), "dlq", "{code}");
        }
    }
}
