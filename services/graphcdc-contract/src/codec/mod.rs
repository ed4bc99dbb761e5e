//! Encoding and decoding of the event contract.
//!
//! A record value is either Confluent wire format (byte 0 = magic 0, 4-byte big-endian
//! schema id, Avro binary) or plain JSON of the same shape; [`Codec::decode_change`]
//! tells them apart by the first byte. Writer schemas come from a [`SchemaRegistry`]:
//! the bundled schemas under fixed local ids, extra local files, or a
//! Confluent-compatible registry over HTTP. Change events written with the current
//! schema are read by [`change_reader`] straight into the event; other writer schemas
//! through apache-avro's generic values, resolved against the current schema.

pub mod avro;
pub mod change_reader;
mod registry;

pub use registry::{
    RegistryConfig, SchemaRegistry, CHANGE_EVENT_ID, CHANGE_EVENT_V1_ID, ENTITY_STATE_ID,
};

use crate::error::{PoisonError, PoisonKind};
use crate::event::{ChangeEvent, EntityState};
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::Schema;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Text of `schemas/change-event.avsc`.
pub const CHANGE_EVENT_SCHEMA: &str = include_str!("../../../../schemas/change-event.avsc");
/// Text of `schemas/history/change-event-1.avsc`: the change event as earlier releases
/// wrote it (local id [`CHANGE_EVENT_V1_ID`]), read by resolving against the current one.
pub const CHANGE_EVENT_SCHEMA_V1: &str =
    include_str!("../../../../schemas/history/change-event-1.avsc");
/// Text of `schemas/entity-state.avsc`.
pub const ENTITY_STATE_SCHEMA: &str = include_str!("../../../../schemas/entity-state.avsc");

/// Subject names used with a Confluent-compatible registry (TopicNameStrategy style).
pub const CHANGE_EVENT_SUBJECT: &str = "graphcdc.ChangeEvent";
/// Subject of the entity state schema.
pub const ENTITY_STATE_SUBJECT: &str = "graphcdc.EntityState";

/// Magic byte of the Confluent wire format.
const MAGIC: u8 = 0;

/// Which serialisation a producer writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Confluent wire format: magic byte, schema id, Avro binary.
    Avro,
    /// Plain JSON.
    Json,
}

/// Decoder/encoder of change events and entity states.
pub struct Codec {
    registry: SchemaRegistry,
    change_schema: Arc<Schema>,
    state_schema: Arc<Schema>,
    /// (schema id, reader schema address) → the writer schema equals the reader's.
    identical: RwLock<HashMap<(u32, usize), bool>>,
}

impl Codec {
    /// A codec over `registry`, reading with the bundled schemas.
    pub fn new(registry: SchemaRegistry) -> Self {
        Codec {
            registry,
            change_schema: Arc::new(
                Schema::parse_str(CHANGE_EVENT_SCHEMA).expect("bundled schema"),
            ),
            state_schema: Arc::new(Schema::parse_str(ENTITY_STATE_SCHEMA).expect("bundled schema")),
            identical: RwLock::default(),
        }
    }

    /// A codec with only the bundled schemas and no HTTP registry.
    pub fn local() -> Self {
        Codec::new(SchemaRegistry::local())
    }

    /// Decode a change event from a record value.
    ///
    /// # Errors
    /// A [`PoisonError`] for bytes that are neither format, an unknown schema id, or data
    /// that does not resolve against the reader schema. A registry that cannot be reached
    /// is reported as `Err(Err(..))`: retry, do not DLQ.
    pub async fn decode_change(&self, bytes: &[u8]) -> Result<ChangeEvent, DecodeError> {
        match Self::detect(bytes)? {
            Format::Json => decode_json_change(bytes),
            Format::Avro => {
                let id = schema_id(bytes);
                let writer = self.registry.schema(id).await?;
                if !self.is_reader_schema(id, &writer, &self.change_schema) {
                    return self.decode_change_generic(bytes).await;
                }
                let mut body = &bytes[5..];
                let event = change_reader::read_change(&mut body)
                    .map_err(|e| schema_mismatch(format!("schema id {id}: {e}")))?;
                trailing_bytes(id, body)?;
                Ok(event)
            }
        }
    }

    /// Decode a change event through apache-avro's generic value tree, whatever the
    /// writer schema: what [`Codec::decode_change`] does for writer schemas other than
    /// the current one, and the reference its schema-specific reader is tested and
    /// benchmarked against.
    ///
    /// # Errors
    /// As [`Codec::decode_change`].
    pub async fn decode_change_generic(&self, bytes: &[u8]) -> Result<ChangeEvent, DecodeError> {
        match Self::detect(bytes)? {
            Format::Json => decode_json_change(bytes),
            Format::Avro => {
                let value = self.read_avro(bytes, &self.change_schema).await?;
                avro::change_from_value(value).map_err(schema_mismatch)
            }
        }
    }

    /// Decode an entity state (a non-null value of the state topic).
    ///
    /// # Errors
    /// As [`Codec::decode_change`].
    pub async fn decode_state(&self, bytes: &[u8]) -> Result<EntityState, DecodeError> {
        match Self::detect(bytes)? {
            Format::Json => serde_json::from_slice(bytes).map_err(|e| {
                DecodeError::Poison(PoisonError::new(
                    PoisonKind::Undecodable,
                    format!("invalid JSON entity state: {e}"),
                ))
            }),
            Format::Avro => {
                let value = self.read_avro(bytes, &self.state_schema).await?;
                avro::state_from_value(value).map_err(schema_mismatch)
            }
        }
    }

    /// Encode a change event in `format`.
    ///
    /// # Errors
    /// Fails only when an HTTP registry refuses or cannot register the schema.
    pub async fn encode_change(
        &self,
        event: &ChangeEvent,
        format: Format,
    ) -> Result<Vec<u8>, EncodeError> {
        match format {
            Format::Json => Ok(serde_json::to_vec(event)?),
            Format::Avro => {
                let id = self
                    .registry
                    .id_for(CHANGE_EVENT_SUBJECT, CHANGE_EVENT_SCHEMA)
                    .await?;
                write_wire(id, &self.change_schema, avro::change_to_value(event))
            }
        }
    }

    /// Encode an entity state in `format`.
    ///
    /// # Errors
    /// As [`Codec::encode_change`].
    pub async fn encode_state(
        &self,
        state: &EntityState,
        format: Format,
    ) -> Result<Vec<u8>, EncodeError> {
        match format {
            Format::Json => Ok(serde_json::to_vec(state)?),
            Format::Avro => {
                let id = self
                    .registry
                    .id_for(ENTITY_STATE_SUBJECT, ENTITY_STATE_SCHEMA)
                    .await?;
                write_wire(id, &self.state_schema, avro::state_to_value(state))
            }
        }
    }

    /// Which format `bytes` is in, by its first byte.
    pub fn detect(bytes: &[u8]) -> Result<Format, PoisonError> {
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(&MAGIC) if bytes.len() > 5 => Ok(Format::Avro),
            Some(b'{') => Ok(Format::Json),
            Some(first) => Err(PoisonError::new(
                PoisonKind::Undecodable,
                format!(
                    "neither Confluent wire format nor JSON: first byte 0x{first:02x}, {} bytes",
                    bytes.len()
                ),
            )),
            None => Err(PoisonError::new(
                PoisonKind::Undecodable,
                "empty record value",
            )),
        }
    }

    /// Whether schema `id` (`writer`) is `reader` itself, remembered per id.
    fn is_reader_schema(&self, id: u32, writer: &Schema, reader: &Schema) -> bool {
        let slot = (id, std::ptr::from_ref(reader) as usize);
        if let Some(same) = self.identical.read().unwrap().get(&slot) {
            return *same;
        }
        let same = writer.canonical_form() == reader.canonical_form();
        self.identical.write().unwrap().insert(slot, same);
        same
    }

    async fn read_avro(
        &self,
        bytes: &[u8],
        reader_schema: &Schema,
    ) -> Result<apache_avro::types::Value, DecodeError> {
        let id = schema_id(bytes);
        let writer = self.registry.schema(id).await?;
        let mut body = &bytes[5..];
        // Resolving copies the whole value: skip it when the writer wrote with the reader
        // schema itself (the common case, and most of the decoding time otherwise).
        let resolve = !self.is_reader_schema(id, &writer, reader_schema);
        let value = GenericDatumReader::builder(&writer)
            .maybe_reader_schema(resolve.then_some(reader_schema))
            .build()
            .and_then(|reader| reader.read_value(&mut body))
            .map_err(|e| schema_mismatch(format!("schema id {id}: {e}")))?;
        trailing_bytes(id, body)?;
        Ok(value)
    }
}

/// The schema id of a Confluent wire-format record (at least 5 bytes, checked by
/// [`Codec::detect`]).
fn schema_id(bytes: &[u8]) -> u32 {
    u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]])
}

/// Poison when bytes are left after the record.
fn trailing_bytes(id: u32, body: &[u8]) -> Result<(), DecodeError> {
    if body.is_empty() {
        return Ok(());
    }
    Err(schema_mismatch(format!(
        "schema id {id}: {} trailing bytes after the record",
        body.len()
    )))
}

/// Why a record value could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are bad: send the record to the DLQ.
    #[error(transparent)]
    Poison(#[from] PoisonError),
    /// The schema registry could not be reached: retry later.
    #[error("schema registry unavailable: {0}")]
    RegistryUnavailable(String),
}

/// Why an event or a state could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The schema registry refused the schema or could not be reached.
    #[error("schema registry: {0}")]
    Registry(String),
    /// The value does not fit the Avro schema.
    #[error(transparent)]
    Avro(#[from] apache_avro::Error),
    /// JSON serialization failed.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// A JSON change event, plain or wrapped as `{"payload": …}` (what `apoc.kafka.publish`
/// writes in direct capture mode).
fn decode_json_change(bytes: &[u8]) -> Result<ChangeEvent, DecodeError> {
    #[derive(serde::Deserialize)]
    struct Wrapped {
        payload: ChangeEvent,
    }
    serde_json::from_slice::<ChangeEvent>(bytes)
        .or_else(|plain| {
            serde_json::from_slice::<Wrapped>(bytes)
                .map(|w| w.payload)
                .map_err(|_| plain)
        })
        .map_err(|e| {
            DecodeError::Poison(PoisonError::new(
                PoisonKind::Undecodable,
                format!("invalid JSON change event: {e}"),
            ))
        })
}

fn schema_mismatch(message: impl Into<String>) -> DecodeError {
    DecodeError::Poison(PoisonError::new(PoisonKind::SchemaMismatch, message))
}

fn write_wire(
    id: u32,
    schema: &Schema,
    value: apache_avro::types::Value,
) -> Result<Vec<u8>, EncodeError> {
    let body = GenericDatumWriter::builder(schema)
        .build()?
        .write_value_to_vec(value)?;
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(MAGIC);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

#[cfg(test)]
mod tests;
