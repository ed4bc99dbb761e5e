//! `[[mappings]]`: which labels and relationship types go to which collection, and how
//! their properties become the payload (and, with `[mappings.embedding]`, the vector).

use super::embedding::EmbeddingConfig;
use crate::settings::{invalid, ConfigError};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Vector distance of a collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Distance {
    Cosine,
    Dot,
    Euclid,
    Manhattan,
}

/// How entities with one label (or relationships of one type) become points.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingConfig {
    /// Node label this mapping applies to (exactly one of `label`, `relationship_type`).
    #[serde(default)]
    pub label: Option<String>,
    /// Relationship type this mapping applies to.
    #[serde(default)]
    pub relationship_type: Option<String>,
    /// Target collection.
    pub collection: String,
    /// Property holding the entity key, used when the event's `key` is empty.
    #[serde(default = "default_key_property")]
    pub key_property: String,
    /// Property holding the embedding, used when the event has no `vector`; never copied
    /// into the payload.
    #[serde(default)]
    pub vector_property: Option<String>,
    /// Name of the dense vector in the collection.
    #[serde(default = "default_vector_name")]
    pub vector_name: String,
    /// Vector dimension; other lengths go to the DLQ.
    pub dimension: usize,
    #[serde(default = "default_distance")]
    pub distance: Distance,
    /// Only these properties go into the payload (all when unset).
    #[serde(default)]
    pub include: Option<Vec<String>>,
    /// These properties never go into the payload.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Property name → payload field name.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,
    /// Graph context denormalised into the payload by the relay and the backfill.
    #[serde(default)]
    pub context: Vec<ContextConfig>,
    /// Vectors computed on the way for upserts that carry none.
    #[serde(default)]
    pub embedding: Option<EmbeddingConfig>,
}

/// Properties of related nodes copied into a node's payload, e.g. a chunk's mentioned
/// entities. Each listed property becomes a list field `{field}_{property}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextConfig {
    /// Payload field prefix, e.g. `mentioned_entities`.
    pub field: String,
    /// Relationship type to follow, e.g. `MENTIONS`.
    pub relationship: String,
    /// `out`: (node)-[:TYPE]->(related); `in`: (node)<-[:TYPE]-(related).
    #[serde(default = "default_direction")]
    pub direction: Direction,
    /// Properties of the related nodes to collect (sorted by the first).
    pub properties: Vec<String>,
    /// When a listed property of a related node changes, the relay re-emits at most this
    /// many of the nodes that list it (a hub entity renamed); past that, the change is
    /// counted (`graphcdc_relay_context_fanout_overflow_total`) and logged, and the nodes
    /// not re-emitted keep the old value until `graphcdc backfill` re-publishes them.
    #[serde(default = "default_max_fanout")]
    pub max_fanout: usize,
}

/// Upper bound of [`ContextConfig::max_fanout`]: every re-emit is a version bump and an
/// outbox entry in the relay's one transaction.
pub const MAX_CONTEXT_FANOUT: usize = 100_000;

fn default_max_fanout() -> usize {
    1_000
}

/// Direction of a context relationship, seen from the mapped node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Out,
    In,
}

fn default_direction() -> Direction {
    Direction::Out
}

fn default_key_property() -> String {
    "uuid".into()
}

fn default_vector_name() -> String {
    "embedding".into()
}

fn default_distance() -> Distance {
    Distance::Cosine
}

impl MappingConfig {
    /// Checks that need no I/O; `at` is the mapping's place, e.g. `mappings[0]`.
    ///
    /// # Errors
    /// The first field found out of range.
    pub fn validate(&self, at: &str) -> Result<(), ConfigError> {
        match (&self.label, &self.relationship_type) {
            (Some(_), None) | (None, Some(_)) => {}
            _ => {
                return Err(invalid(
                    format!("{at}.label"),
                    "set exactly one of label and relationship_type",
                ))
            }
        }
        let valid_name = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        };
        if !valid_name(&self.collection) {
            return Err(invalid(
                format!("{at}.collection"),
                format!("{:?}: use letters, digits, _ - .", self.collection),
            ));
        }
        if self.dimension == 0 || self.dimension > 65_536 {
            return Err(invalid(format!("{at}.dimension"), "must be 1..=65536"));
        }
        let identifier =
            |s: &str| !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_');
        if !identifier(&self.key_property) {
            return Err(invalid(
                format!("{at}.key_property"),
                "use letters, digits and _ (it becomes a Cypher property name)",
            ));
        }
        for (field, name) in [
            ("label", &self.label),
            ("relationship_type", &self.relationship_type),
        ] {
            if name.as_deref().is_some_and(|n| !identifier(n)) {
                return Err(invalid(
                    format!("{at}.{field}"),
                    "use letters, digits and _ (it becomes a Cypher label or type)",
                ));
            }
        }
        if self.vector_name.is_empty() {
            return Err(invalid(format!("{at}.vector_name"), "must not be empty"));
        }
        if let Some(embedding) = &self.embedding {
            embedding.validate(at, self.dimension)?;
        }
        for (i, c) in self.context.iter().enumerate() {
            let names = std::iter::once(&c.field)
                .chain(std::iter::once(&c.relationship))
                .chain(&c.properties);
            if c.properties.is_empty() || names.into_iter().any(|n| !identifier(n)) {
                return Err(invalid(
                    format!("{at}.context[{i}]"),
                    "field, relationship and at least one property, as letters, digits and _",
                ));
            }
            if !(1..=MAX_CONTEXT_FANOUT).contains(&c.max_fanout) {
                return Err(invalid(
                    format!("{at}.context[{i}].max_fanout"),
                    format!("must be 1..={MAX_CONTEXT_FANOUT}"),
                ));
            }
        }
        for (from, to) in &self.rename {
            if to.starts_with(super::RESERVED_PREFIX) {
                return Err(invalid(
                    format!("{at}.rename.{from}"),
                    format!(
                        "{to:?} uses the reserved prefix {:?}",
                        super::RESERVED_PREFIX
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The `[[mappings]]` of a TOML text, each validated (the fuzz targets' set-up).
///
/// # Errors
/// A [`ConfigError`] naming the field that is missing, mistyped or out of range.
pub fn mappings_from_toml(text: &str) -> Result<Vec<MappingConfig>, ConfigError> {
    #[derive(Deserialize)]
    struct Mappings {
        mappings: Vec<MappingConfig>,
    }
    use figment::providers::Format as _;
    let parsed: Mappings = figment::Figment::from(figment::providers::Toml::string(text))
        .extract()
        .map_err(|e| invalid(e.path.join("."), e.kind.to_string()))?;
    for (i, m) in parsed.mappings.iter().enumerate() {
        m.validate(&format!("mappings[{i}]"))?;
    }
    Ok(parsed.mappings)
}
