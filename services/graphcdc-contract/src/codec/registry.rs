//! Schema ids for the Confluent wire format: local (no registry needed) or a
//! Confluent-compatible registry over HTTP.

use super::{
    DecodeError, EncodeError, CHANGE_EVENT_SCHEMA, CHANGE_EVENT_SCHEMA_V1, ENTITY_STATE_SCHEMA,
};
use crate::error::{PoisonError, PoisonKind};
use crate::settings::{invalid, ConfigError};
use apache_avro::Schema;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

/// Local schema id of the bundled `change-event.avsc` (with `removed_labels`).
pub const CHANGE_EVENT_ID: u32 = 3;
/// Local schema id earlier releases wrote change events under: `schemas/history/
/// change-event-1.avsc`, without `removed_labels`. Still bundled, so their records decode.
pub const CHANGE_EVENT_V1_ID: u32 = 1;
/// Local schema id of the bundled `entity-state.avsc`.
pub const ENTITY_STATE_ID: u32 = 2;

/// Where schema ids come from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Base URL of a Confluent-compatible schema registry; unset = local ids only.
    #[serde(default)]
    pub url: Option<String>,
    /// Extra local schemas: id → path of an `.avsc` file (older or newer writers).
    #[serde(default)]
    pub local_schemas: HashMap<u32, PathBuf>,
}

/// Resolves schema ids to writer schemas and subjects to ids, caching both.
pub struct SchemaRegistry {
    /// Base URL and client of the HTTP registry, when one is configured.
    http: Option<(String, reqwest::Client)>,
    by_id: RwLock<HashMap<u32, Arc<Schema>>>,
    by_subject: RwLock<HashMap<String, u32>>,
}

#[derive(Deserialize)]
struct SchemaResponse {
    schema: String,
}

#[derive(Deserialize)]
struct IdResponse {
    id: u32,
}

impl SchemaRegistry {
    /// Only the bundled schemas, under [`CHANGE_EVENT_ID`], [`CHANGE_EVENT_V1_ID`] and
    /// [`ENTITY_STATE_ID`].
    pub fn local() -> Self {
        let bundled = [
            (CHANGE_EVENT_ID, CHANGE_EVENT_SCHEMA),
            (CHANGE_EVENT_V1_ID, CHANGE_EVENT_SCHEMA_V1),
            (ENTITY_STATE_ID, ENTITY_STATE_SCHEMA),
        ];
        SchemaRegistry {
            http: None,
            by_id: RwLock::new(
                bundled
                    .iter()
                    .map(|(id, text)| {
                        (
                            *id,
                            Arc::new(Schema::parse_str(text).expect("bundled schema")),
                        )
                    })
                    .collect(),
            ),
            by_subject: RwLock::new(HashMap::new()),
        }
    }

    /// A registry from config: local files are read and parsed now.
    ///
    /// # Errors
    /// Names the `registry.local_schemas` entry that cannot be read or parsed.
    pub fn from_config(config: &RegistryConfig) -> Result<Self, ConfigError> {
        let mut registry = SchemaRegistry::local();
        if let Some(url) = &config.url {
            // reqwest is built without a default TLS crypto provider; use ring.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let client = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(10))
                .build()
                .map_err(|e| invalid("registry.url", e.to_string()))?;
            registry.http = Some((url.trim_end_matches('/').to_owned(), client));
        }
        for (id, path) in &config.local_schemas {
            let field = format!("registry.local_schemas.{id}");
            let text = std::fs::read_to_string(path)
                .map_err(|e| invalid(&field, format!("cannot read {}: {e}", path.display())))?;
            let schema = Schema::parse_str(&text).map_err(|e| {
                invalid(
                    &field,
                    format!("invalid Avro schema in {}: {e}", path.display()),
                )
            })?;
            registry.add(*id, schema);
        }
        Ok(registry)
    }

    /// Register `schema` under `id` locally.
    pub fn add(&self, id: u32, schema: Schema) {
        self.by_id.write().unwrap().insert(id, Arc::new(schema));
    }

    /// The writer schema with `id`.
    ///
    /// # Errors
    /// Poison when no registry knows the id; `RegistryUnavailable` when the HTTP registry
    /// cannot be reached (retry).
    pub async fn schema(&self, id: u32) -> Result<Arc<Schema>, DecodeError> {
        if let Some(schema) = self.by_id.read().unwrap().get(&id) {
            return Ok(schema.clone());
        }
        let unknown = || {
            DecodeError::Poison(PoisonError::new(
                PoisonKind::SchemaMismatch,
                format!("unknown schema id {id}"),
            ))
        };
        let Some((url, http)) = &self.http else {
            return Err(unknown());
        };
        let response = http
            .get(format!("{url}/schemas/ids/{id}"))
            .send()
            .await
            .map_err(|e| DecodeError::RegistryUnavailable(e.to_string()))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(unknown());
        }
        if !response.status().is_success() {
            return Err(DecodeError::RegistryUnavailable(format!(
                "GET /schemas/ids/{id}: HTTP {}",
                response.status()
            )));
        }
        let body: SchemaResponse = response
            .json()
            .await
            .map_err(|e| DecodeError::RegistryUnavailable(e.to_string()))?;
        let schema = Schema::parse_str(&body.schema).map_err(|e| {
            DecodeError::Poison(PoisonError::new(
                PoisonKind::SchemaMismatch,
                format!("schema id {id} is not valid Avro: {e}"),
            ))
        })?;
        let schema = Arc::new(schema);
        self.by_id.write().unwrap().insert(id, schema.clone());
        Ok(schema)
    }

    /// The id to write `schema_text` under: registered under `subject` over HTTP when a
    /// registry is configured, else the bundled local id.
    ///
    /// # Errors
    /// When the HTTP registry refuses or cannot be reached.
    pub async fn id_for(&self, subject: &str, schema_text: &str) -> Result<u32, EncodeError> {
        let Some((url, http)) = &self.http else {
            return Ok(if schema_text == CHANGE_EVENT_SCHEMA {
                CHANGE_EVENT_ID
            } else {
                ENTITY_STATE_ID
            });
        };
        if let Some(id) = self.by_subject.read().unwrap().get(subject) {
            return Ok(*id);
        }
        let response = http
            .post(format!("{url}/subjects/{subject}/versions"))
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .json(&serde_json::json!({ "schema": schema_text }))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| EncodeError::Registry(e.to_string()))?;
        let IdResponse { id } = response
            .json()
            .await
            .map_err(|e| EncodeError::Registry(e.to_string()))?;
        self.by_subject
            .write()
            .unwrap()
            .insert(subject.to_owned(), id);
        self.add(id, Schema::parse_str(schema_text)?);
        Ok(id)
    }
}
