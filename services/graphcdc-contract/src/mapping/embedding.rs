//! `[mappings.embedding]`: embed on the way. An upsert of a mapping with this section and
//! no vector gets one from a model, computed from a text made of the entity's
//! properties; the text's hash is kept in the payload so unchanged text is never embedded
//! again.

use crate::settings::{invalid, ConfigError, Secret};
use serde::Deserialize;
use std::path::PathBuf;

/// Who computes the vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmbeddingProvider {
    /// An in-process sentence-embedding model (all-MiniLM-L6-v2, 384-d): no service.
    Local,
    /// Any OpenAI-compatible `/v1/embeddings` endpoint (OpenAI, Azure, TEI, Ollama,
    /// vLLM).
    Openai,
}

/// How a mapping's text becomes its vector.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingConfig {
    /// The text: `{property}` is replaced by the property's value (lists joined by
    /// `", "`, a missing property by nothing), `{{` and `}}` are literal braces, e.g.
    /// `"{title}: {text}"`.
    pub template: String,
    pub provider: EmbeddingProvider,
    /// Model name: sent to an `openai` endpoint; for `local` the one model it ships
    /// (`all-MiniLM-L6-v2`).
    #[serde(default = "default_model")]
    pub model: String,
    /// `local`: directory with `model.safetensors`, `config.json` and `tokenizer.json`;
    /// when unset the model is taken from (or fetched once into) the model cache
    /// (`GRAPHCDC_MODEL_CACHE`, else `~/.cache/graphcdc/models`).
    #[serde(default)]
    pub model_dir: Option<PathBuf>,
    /// `openai`: base URL up to `/v1`, e.g. `https://api.openai.com/v1`.
    #[serde(default)]
    pub url: Option<String>,
    /// `openai`: sent as `Authorization: Bearer …`; a [`Secret`], printed as `***`.
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// Texts per model call.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Model calls in flight at once (per batch of events).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Per model call; a call that takes longer is retried (the partitions pause).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

/// The model `local` ships.
pub const LOCAL_MODEL: &str = "all-MiniLM-L6-v2";

fn default_model() -> String {
    LOCAL_MODEL.into()
}

fn default_batch_size() -> usize {
    32
}

fn default_concurrency() -> usize {
    2
}

fn default_timeout_ms() -> u64 {
    30_000
}

impl EmbeddingConfig {
    pub(super) fn validate(&self, at: &str, dimension: usize) -> Result<(), ConfigError> {
        let field = |name: &str| format!("{at}.embedding.{name}");
        let parts = parse_template(&self.template).map_err(|e| invalid(field("template"), e))?;
        if !parts.iter().any(|p| matches!(p, TemplatePart::Property(_))) {
            return Err(invalid(
                field("template"),
                "names no property: use {property}",
            ));
        }
        if !(1..=2048).contains(&self.batch_size) {
            return Err(invalid(field("batch_size"), "must be 1..=2048"));
        }
        if !(1..=64).contains(&self.concurrency) {
            return Err(invalid(field("concurrency"), "must be 1..=64"));
        }
        if self.timeout_ms == 0 {
            return Err(invalid(field("timeout_ms"), "must be above 0"));
        }
        match self.provider {
            EmbeddingProvider::Local => {
                if self.model != LOCAL_MODEL {
                    return Err(invalid(
                        field("model"),
                        format!("the local provider ships only {LOCAL_MODEL:?}"),
                    ));
                }
                if dimension != 384 {
                    return Err(invalid(
                        format!("{at}.dimension"),
                        format!("{LOCAL_MODEL} makes 384-d vectors, not {dimension}"),
                    ));
                }
            }
            EmbeddingProvider::Openai => {
                let url = self.url.as_deref().unwrap_or_default();
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(invalid(
                        field("url"),
                        "the openai provider needs an http(s) URL up to /v1",
                    ));
                }
                if self.model.is_empty() {
                    return Err(invalid(field("model"), "must not be empty"));
                }
            }
        }
        Ok(())
    }
}

/// A piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart<'a> {
    Literal(&'a str),
    /// `{{` or `}}`.
    Brace(char),
    Property(&'a str),
}

/// Split a template into literals and `{property}` references.
///
/// # Errors
/// A message naming the position of an unbalanced brace or an empty name.
pub fn parse_template(template: &str) -> Result<Vec<TemplatePart<'_>>, String> {
    let mut parts = Vec::new();
    let mut rest = template;
    let mut at = 0;
    while let Some(i) = rest.find(['{', '}']) {
        if i > 0 {
            parts.push(TemplatePart::Literal(&rest[..i]));
        }
        let brace = rest.as_bytes()[i] as char;
        if rest[i + 1..].starts_with(brace) {
            parts.push(TemplatePart::Brace(brace));
            rest = &rest[i + 2..];
            at += i + 2;
            continue;
        }
        if brace == '}' {
            return Err(format!("unmatched '}}' at byte {}", at + i));
        }
        let Some(end) = rest[i + 1..].find('}') else {
            return Err(format!("unclosed '{{' at byte {}", at + i));
        };
        let name = rest[i + 1..i + 1 + end].trim();
        if name.is_empty() || name.contains('{') {
            return Err(format!("empty or nested property name at byte {}", at + i));
        }
        parts.push(TemplatePart::Property(name));
        rest = &rest[i + 2 + end..];
        at += i + 2 + end;
    }
    if !rest.is_empty() {
        parts.push(TemplatePart::Literal(rest));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_name_their_properties_and_keep_literal_braces() {
        let parts = parse_template("{title}: {{x}} {text}").unwrap();
        assert_eq!(
            parts,
            vec![
                TemplatePart::Property("title"),
                TemplatePart::Literal(": "),
                TemplatePart::Brace('{'),
                TemplatePart::Literal("x"),
                TemplatePart::Brace('}'),
                TemplatePart::Literal(" "),
                TemplatePart::Property("text"),
            ]
        );
        for bad in ["{title", "title}", "{}", "{ }", "{a{b}"] {
            assert!(parse_template(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
