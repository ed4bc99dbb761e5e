//! The `local` provider: all-MiniLM-L6-v2 in this process (candle's BERT, the model's
//! own `tokenizer.json`), so the demo and small deployments need no embedding service.
//!
//! Computed as sentence-transformers does: at most 256 tokens (the model's
//! `max_seq_length`; its `tokenizer.json` says 128, which would cut long texts short),
//! mean pooling over the attention mask, then L2 normalisation. Checked against an
//! independent numpy implementation (`tests/fixtures/minilm_reference.py`).

use super::{EmbedError, Embedder};
use crate::error::Context;
use async_trait::async_trait;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use std::path::Path;
use std::sync::Arc;
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// Tokens per text, as sentence-transformers' `max_seq_length` for this model.
pub const MAX_TOKENS: usize = 256;

/// all-MiniLM-L6-v2 loaded from a directory with `config.json`, `tokenizer.json` and
/// `model.safetensors`.
pub struct LocalEmbedder {
    model: Arc<Model>,
}

struct Model {
    bert: BertModel,
    tokenizer: Tokenizer,
    device: Device,
}

impl LocalEmbedder {
    /// Load the model in `dir`.
    ///
    /// # Errors
    /// When a file is missing or does not hold this model.
    pub fn load(dir: &Path) -> crate::error::Result<Self> {
        let device = Device::Cpu;
        let config_file = dir.join("config.json");
        let config: BertConfig = serde_json::from_slice(
            &std::fs::read(&config_file)
                .with_context(|| format!("reading {}", config_file.display()))?,
        )
        .with_context(|| format!("{} is not a BERT config", config_file.display()))?;
        let tokenizer_file = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&tokenizer_file).map_err(|e| {
            crate::error::err!(External, "loading {}: {e}", tokenizer_file.display())
        })?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..TruncationParams::default()
            }))
            .map_err(|e| crate::error::err!(External, "tokenizer truncation: {e}"))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..PaddingParams::default()
        }));
        let weights = dir.join("model.safetensors");
        // SAFETY: the file is only read, and not changed while mapped (it lives in the
        // model cache or a directory the operator named for this model).
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &device) }
            .with_context(|| format!("loading {}", weights.display()))?;
        let bert = BertModel::load(vb, &config)
            .with_context(|| format!("{} does not hold a BERT model", weights.display()))?;
        Ok(LocalEmbedder {
            model: Arc::new(Model {
                bert,
                tokenizer,
                device,
            }),
        })
    }

    /// Embed `texts` on this thread (CPU-bound: call it off the async runtime).
    ///
    /// # Errors
    /// When tokenising or the forward pass fails.
    pub fn embed_blocking(&self, texts: &[String]) -> crate::error::Result<Vec<Vec<f32>>> {
        self.model.embed(texts.to_vec())
    }
}

impl Model {
    fn embed(&self, texts: Vec<String>) -> crate::error::Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = self
            .tokenizer
            .encode_batch(texts, true)
            .map_err(|e| crate::error::err!(External, "tokenising: {e}"))?;
        let rows = |f: fn(&tokenizers::Encoding) -> &[u32]| -> candle_core::Result<Tensor> {
            let rows = encodings
                .iter()
                .map(|e| Tensor::new(f(e), &self.device))
                .collect::<candle_core::Result<Vec<_>>>()?;
            Tensor::stack(&rows, 0)
        };
        let ids = rows(|e| e.get_ids())?;
        let mask = rows(|e| e.get_attention_mask())?;
        let token_types = ids.zeros_like()?;
        let hidden = self.bert.forward(&ids, &token_types, Some(&mask))?;
        // Mean over the real tokens, then unit length.
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let mean = summed.broadcast_div(&mask.sum(1)?)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?;
        Ok(mean.broadcast_div(&norm)?.to_vec2::<f32>()?)
    }
}

#[async_trait]
impl Embedder for LocalEmbedder {
    fn describe(&self) -> String {
        format!("local {}", crate::mapping::LOCAL_MODEL)
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let model = self.model.clone();
        let texts = texts.to_vec();
        tokio::task::spawn_blocking(move || model.embed(texts))
            .await
            .map_err(|e| EmbedError::Unavailable(format!("local model task: {e}")))?
            .map_err(|e| EmbedError::Rejected(format!("{e:#}")))
    }
}
