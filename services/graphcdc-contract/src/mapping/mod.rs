//! From a change event to the point writes of the collections it maps to.
//!
//! Every point carries reserved payload fields (prefix `cdc_`): the entity key, the
//! version that fences later writes, a content hash the reconciler compares, and the
//! tombstone flag. A delete becomes a tombstone: a point with no vector (so vector search
//! never returns it) that keeps the deleted version, so an older upsert arriving later
//! cannot bring the entity back.
//!
//! An upsert without a vector of a mapping with `[mappings.embedding]` leaves here with
//! its text instead ([`PointWrite::text`]); the processor embeds it before the write. Its
//! content hash covers the text's hash instead of the vector, so the reconciler compares
//! it without a model call.

use crate::error::{PoisonError, PoisonKind};
use crate::event::{ChangeEvent, EntityKind, Op, PropertyValue, MAX_VERSION};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use uuid::Uuid;

pub mod config;
pub mod embedding;
pub use config::{
    mappings_from_toml, ContextConfig, Direction, Distance, MappingConfig, MAX_CONTEXT_FANOUT,
};
pub use embedding::{
    parse_template, EmbeddingConfig, EmbeddingProvider, TemplatePart, LOCAL_MODEL,
};

/// Prefix of payload fields written by graphcdc itself.
pub const RESERVED_PREFIX: &str = "cdc_";
/// Payload field: entity key.
pub const KEY_FIELD: &str = "cdc_key";
/// Payload field: entity version (integer index).
pub const VERSION_FIELD: &str = "cdc_version";
/// Payload field: content hash of mapped payload and vector.
pub const HASH_FIELD: &str = "cdc_hash";
/// Payload field: `true` on tombstones.
pub const DELETED_FIELD: &str = "cdc_deleted";
/// Payload field: hash of the text the vector was embedded from ([`text_hash`]); only on
/// points of mappings with `[mappings.embedding]` whose vector came from a model.
pub const TEXT_HASH_FIELD: &str = "cdc_text_hash";
/// Payload field: source commit time in ms.
pub const COMMIT_TIME_FIELD: &str = "cdc_commit_ms";
/// Payload field (integer index): the point's reconcile bucket, [`bucket_of`] its id, so
/// the reconciler can count a collection's points per bucket in one request and rescan
/// only the buckets that changed (points written before this field existed are checked
/// as unbucketed).
pub const BUCKET_FIELD: &str = "cdc_bucket";
/// Number of reconcile buckets: [`bucket_of`] is the top 16 bits of a point id.
pub const BUCKETS: usize = 1 << 16;

/// Reconcile bucket of a point: the top 16 bits of its id. UUIDv5 ids are uniform there,
/// and a bucket is a contiguous range of ids in Qdrant's scroll order.
pub fn bucket_of(id: &Uuid) -> u16 {
    let b = id.as_bytes();
    u16::from_be_bytes([b[0], b[1]])
}

/// Namespace of the UUIDv5 point ids.
const POINT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x5b7e_0c1d_8a4f_4e3b_9a51_2f6d_c0de_cdc1);

/// Stable point id of `key` in `collection`: UUIDv5 of `"{collection}/{key}"`.
pub fn point_id(collection: &str, key: &str) -> Uuid {
    Uuid::new_v5(
        &POINT_ID_NAMESPACE,
        format!("{collection}/{key}").as_bytes(),
    )
}

/// One point to write: a live point (with vector) or a tombstone (without).
#[derive(Debug, Clone, PartialEq)]
pub struct PointWrite {
    pub collection: String,
    pub id: Uuid,
    pub key: String,
    pub version: i64,
    /// Commit time of the source change (ms), for freshness.
    pub commit_time_ms: i64,
    /// Content hash (hex) of the mapped payload and vector; empty for tombstones.
    pub hash: String,
    /// Name of the dense vector in the collection.
    pub vector_name: String,
    /// `None` for a tombstone, and for a write still waiting for its embedding.
    pub vector: Option<Vec<f32>>,
    /// The text to embed into `vector`, for mappings with `[mappings.embedding]`; kept
    /// after the vector was filled in.
    pub text: Option<EmbeddingText>,
    /// Full payload including the reserved `cdc_` fields.
    pub payload: Map<String, Value>,
}

/// The text of a point whose vector comes from a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingText {
    pub text: String,
    /// [`text_hash`] of the model and the text: stored as [`TEXT_HASH_FIELD`].
    pub hash: String,
}

impl PointWrite {
    /// Whether this write is a tombstone.
    pub fn is_tombstone(&self) -> bool {
        self.vector.is_none() && self.text.is_none()
    }

    /// Whether this write still needs its vector from a model.
    pub fn needs_embedding(&self) -> bool {
        self.vector.is_none() && self.text.is_some()
    }
}

/// Maps events to point writes with the configured mappings.
#[derive(Debug, Clone)]
pub struct Mapper {
    mappings: Vec<MappingConfig>,
    max_payload_bytes: usize,
}

impl Mapper {
    /// A mapper over validated `mappings`.
    pub fn new(mappings: Vec<MappingConfig>, max_payload_bytes: usize) -> Self {
        Mapper {
            mappings,
            max_payload_bytes,
        }
    }

    /// The mappings, in config order.
    pub fn mappings(&self) -> &[MappingConfig] {
        &self.mappings
    }

    /// The point writes for `event`: one per matching mapping, none when unmapped. A node
    /// that lost a mapped label in this change (`removed_labels`) also gets a tombstone of
    /// the event's version in that label's collection: the entity is no longer there.
    ///
    /// # Errors
    /// A [`PoisonError`] when the event can never be applied (no key, bad version,
    /// missing/mis-sized/non-finite vector, payload too large).
    pub fn map(&self, event: &ChangeEvent) -> Result<Vec<PointWrite>, PoisonError> {
        if !(0..=MAX_VERSION).contains(&event.version) {
            return Err(PoisonError::new(
                PoisonKind::InvalidVersion,
                format!("version {} outside 0..=2^53-1", event.version),
            ));
        }
        let mut writes: Vec<PointWrite> = self
            .mappings
            .iter()
            .filter(|m| applies(m, event))
            .map(|m| self.map_one(m, event))
            .collect::<Result<_, _>>()?;
        let mut lost = self.mappings.iter().filter(|m| left(m, event)).peekable();
        if lost.peek().is_some() {
            let gone = ChangeEvent {
                op: Op::Delete,
                ..event.clone()
            };
            for m in lost {
                writes.push(self.map_one(m, &gone)?);
            }
        }
        Ok(writes)
    }

    fn map_one(&self, m: &MappingConfig, event: &ChangeEvent) -> Result<PointWrite, PoisonError> {
        let key = entity_key(m, event)?;
        let mut payload = Map::new();
        payload.insert(KEY_FIELD.into(), Value::String(key.clone()));
        payload.insert(VERSION_FIELD.into(), Value::from(event.version));
        payload.insert(COMMIT_TIME_FIELD.into(), Value::from(event.commit_time_ms));
        let id = point_id(&m.collection, &key);
        payload.insert(BUCKET_FIELD.into(), Value::from(bucket_of(&id)));
        if event.op == Op::Delete {
            payload.insert(DELETED_FIELD.into(), Value::Bool(true));
            payload.insert(HASH_FIELD.into(), Value::String(String::new()));
            return Ok(PointWrite {
                collection: m.collection.clone(),
                id,
                key,
                version: event.version,
                commit_time_ms: event.commit_time_ms,
                hash: String::new(),
                vector_name: m.vector_name.clone(),
                vector: None,
                text: None,
                payload,
            });
        }
        let (vector, text) = match m.embedding.as_ref().filter(|_| !has_vector(m, event)) {
            Some(embedding) => {
                let Some(text) = render_template(&embedding.template, &event.properties) else {
                    return Err(PoisonError::new(
                        PoisonKind::MissingText,
                        format!(
                            "no vector, and the template {:?} gives no text",
                            embedding.template
                        ),
                    ));
                };
                let hash = text_hash(&embedding.model, &text);
                (None, Some(EmbeddingText { text, hash }))
            }
            None => (Some(vector(m, event)?), None),
        };
        let fields = payload_fields(m, &event.properties);
        let (hash, size) = match &text {
            Some(text) => {
                let (content, size) = hash_and_size(&fields, &[], text.hash.as_bytes());
                (embedded_hash(&content, &text.hash), size)
            }
            None => hash_and_size(&fields, vector.as_deref().unwrap_or_default(), &[]),
        };
        if size > self.max_payload_bytes {
            return Err(PoisonError::new(
                PoisonKind::PayloadTooLarge,
                format!(
                    "payload of {size} bytes exceeds {} bytes",
                    self.max_payload_bytes
                ),
            ));
        }
        payload.insert(DELETED_FIELD.into(), Value::Bool(false));
        payload.insert(HASH_FIELD.into(), Value::String(hash.clone()));
        if let Some(text) = &text {
            payload.insert(TEXT_HASH_FIELD.into(), Value::String(text.hash.clone()));
        }
        payload.extend(fields);
        Ok(PointWrite {
            collection: m.collection.clone(),
            id,
            key,
            version: event.version,
            commit_time_ms: event.commit_time_ms,
            hash,
            vector_name: m.vector_name.clone(),
            vector,
            text,
            payload,
        })
    }
}

/// Whether the node of `event` left `m`'s label in this change (and does not have it).
fn left(m: &MappingConfig, event: &ChangeEvent) -> bool {
    event.kind == EntityKind::Node
        && m.label.as_ref().is_some_and(|label| {
            event.removed_labels.contains(label) && !event.labels.contains(label)
        })
}

fn applies(m: &MappingConfig, event: &ChangeEvent) -> bool {
    match event.kind {
        EntityKind::Node => m
            .label
            .as_ref()
            .is_some_and(|label| event.labels.iter().any(|l| l == label)),
        EntityKind::Relationship => m.relationship_type.as_ref().is_some_and(|t| {
            event
                .relationship
                .as_ref()
                .is_some_and(|ends| &ends.rel_type == t)
        }),
    }
}

fn entity_key(m: &MappingConfig, event: &ChangeEvent) -> Result<String, PoisonError> {
    if !event.key.is_empty() {
        return Ok(event.key.clone());
    }
    match event.properties.get(&m.key_property) {
        Some(PropertyValue::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(PropertyValue::Long(n)) => Ok(n.to_string()),
        _ => Err(PoisonError::new(
            PoisonKind::MissingKey,
            format!("empty key and no property {:?}", m.key_property),
        )),
    }
}

/// Whether the event carries its own vector (which wins over embedding).
fn has_vector(m: &MappingConfig, event: &ChangeEvent) -> bool {
    event.vector.is_some()
        || m.vector_property
            .as_ref()
            .is_some_and(|p| event.properties.contains_key(p))
}

/// The text of `template` over `properties`: a string as is, a list joined by `", "`,
/// a missing or null property as nothing; `None` when no property gives any text (the
/// template's literals alone are no text).
pub fn render_template(
    template: &str,
    properties: &BTreeMap<String, PropertyValue>,
) -> Option<String> {
    fn write_value(out: &mut String, value: &PropertyValue) {
        match value {
            PropertyValue::Null => {}
            PropertyValue::String(s) => out.push_str(s),
            PropertyValue::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    write_value(out, item);
                }
            }
            other => out.push_str(&to_json(other).to_string()),
        }
    }
    let mut out = String::new();
    let mut from_properties = false;
    // Validated at start: a template that does not parse never gets here.
    for part in parse_template(template).unwrap_or_default() {
        match part {
            TemplatePart::Literal(s) => out.push_str(s),
            TemplatePart::Brace(c) => out.push(c),
            TemplatePart::Property(name) => {
                if let Some(value) = properties.get(name) {
                    let start = out.len();
                    write_value(&mut out, value);
                    from_properties |= !out[start..].trim().is_empty();
                }
            }
        }
    }
    from_properties.then_some(out)
}

/// Bits of an embedded point's content hash that are its text hash: the last
/// [`TEXT_HASH_BITS`] bits of `cdc_hash` are the first of `cdc_text_hash`, so the
/// reconciler can tell a changed text (the vector must be embedded again) from another
/// payload change.
pub const TEXT_HASH_BITS: u32 = 32;

/// The content hash of an embedded point: the first 96 bits of its content digest (over
/// the fields and the text hash), then the first [`TEXT_HASH_BITS`] of its text hash.
pub fn embedded_hash(content: &str, text_hash: &str) -> String {
    format!("{}{}", &content[..24], &text_hash[..8])
}

/// The text-hash bits of an embedded point's content hash (as a number).
pub fn text_part_of(content_hash: u128) -> u32 {
    content_hash as u32
}

/// The first [`TEXT_HASH_BITS`] of a text hash, as [`text_part_of`] gives them.
pub fn text_hash_prefix(text_hash: &str) -> u32 {
    text_hash
        .get(..8)
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .unwrap_or(0)
}

/// Hex SHA-256 (first 16 bytes) of the model name and the text: equal hashes mean the
/// stored vector is still the text's embedding.
pub fn text_hash(model: &str, text: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(model.as_bytes());
    hasher.update([0]);
    hasher.update(text.as_bytes());
    hex16(&hasher.finalize())
}

fn hex16(digest: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(32);
    for b in &digest[..16] {
        hex.push(char::from(HEX[usize::from(b >> 4)]));
        hex.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    hex
}

fn vector(m: &MappingConfig, event: &ChangeEvent) -> Result<Vec<f32>, PoisonError> {
    let vector = match (&event.vector, &m.vector_property) {
        (Some(v), _) => v.clone(),
        (None, Some(property)) => match event.properties.get(property) {
            Some(PropertyValue::List(items)) => items
                .iter()
                .map(|item| match item {
                    PropertyValue::Double(x) => Ok(*x as f32),
                    PropertyValue::Long(n) => Ok(*n as f32),
                    _ => Err(PoisonError::new(
                        PoisonKind::VectorDimension,
                        format!("property {property:?} holds a non-number"),
                    )),
                })
                .collect::<Result<_, _>>()?,
            _ => {
                return Err(PoisonError::new(
                    PoisonKind::VectorDimension,
                    format!("no vector and no list property {property:?}"),
                ))
            }
        },
        (None, None) => {
            return Err(PoisonError::new(
                PoisonKind::VectorDimension,
                format!("upsert without a vector for collection {:?}", m.collection),
            ))
        }
    };
    if vector.len() != m.dimension {
        return Err(PoisonError::new(
            PoisonKind::VectorDimension,
            format!(
                "vector has {} dimensions, collection {:?} expects {}",
                vector.len(),
                m.collection,
                m.dimension
            ),
        ));
    }
    if let Some(i) = vector.iter().position(|x| !x.is_finite()) {
        return Err(PoisonError::new(
            PoisonKind::NonFiniteVector,
            format!("vector component {i} is {}", vector[i]),
        ));
    }
    Ok(vector)
}

/// Properties after include/exclude/rename, the vector property and reserved names left out.
fn payload_fields(
    m: &MappingConfig,
    properties: &BTreeMap<String, PropertyValue>,
) -> BTreeMap<String, Value> {
    properties
        .iter()
        .filter(|(name, _)| m.include.as_ref().is_none_or(|inc| inc.contains(name)))
        .filter(|(name, _)| !m.exclude.contains(name))
        .filter(|(name, _)| m.vector_property.as_ref() != Some(name))
        .map(|(name, value)| {
            let target = m.rename.get(name).unwrap_or(name);
            (target.clone(), to_json(value))
        })
        .filter(|(name, _)| !name.starts_with(RESERVED_PREFIX))
        .collect()
}

fn to_json(value: &PropertyValue) -> Value {
    match value {
        PropertyValue::Null => Value::Null,
        PropertyValue::Bool(b) => Value::Bool(*b),
        PropertyValue::Long(n) => Value::from(*n),
        PropertyValue::Double(x) => {
            serde_json::Number::from_f64(*x).map_or(Value::Null, Value::Number)
        }
        PropertyValue::String(s) => Value::String(s.clone()),
        PropertyValue::List(items) => Value::Array(items.iter().map(to_json).collect()),
    }
}

/// Hex SHA-256 (first 16 bytes) of the mapped fields in key order and the vector bits.
pub fn content_hash(fields: &BTreeMap<String, Value>, vector: &[f32]) -> String {
    hash_and_size(fields, vector, &[]).0
}

/// [`content_hash`], and the payload size the mapper checks against `max_payload_bytes`
/// (name + JSON text + 4 per field), from the same JSON text of each field. `text_hash`
/// (empty unless the vector comes from a model, then `vector` is empty) is hashed last.
fn hash_and_size(
    fields: &BTreeMap<String, Value>,
    vector: &[f32],
    text_hash: &[u8],
) -> (String, usize) {
    let mut hasher = Sha256::new();
    let mut size = 0;
    let mut text = Vec::new();
    for (name, value) in fields {
        text.clear();
        // The bytes of `value.to_string()`, into a reused buffer; writing into a Vec
        // cannot fail.
        let _ = serde_json::to_writer(&mut text, value);
        hasher.update(name.as_bytes());
        hasher.update([0]);
        hasher.update(&text);
        hasher.update([0]);
        size += name.len() + text.len() + 4;
    }
    // The vector's little-endian bytes, a stack buffer at a time: the same bytes as one
    // update over the whole vector, without allocating them.
    let mut buffer = [0u8; 1024];
    for floats in vector.chunks(buffer.len() / 4) {
        for (bytes, x) in buffer.chunks_exact_mut(4).zip(floats) {
            bytes.copy_from_slice(&x.to_le_bytes());
        }
        hasher.update(&buffer[..floats.len() * 4]);
    }
    if !text_hash.is_empty() {
        hasher.update(b"text\0");
        hasher.update(text_hash);
    }
    (hex16(&hasher.finalize()), size)
}

#[cfg(test)]
mod tests;
