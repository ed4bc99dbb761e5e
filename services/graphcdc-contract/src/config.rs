//! Configuration: a TOML file plus `GRAPHCDC_…` environment overrides, validated at
//! start so that a bad field fails the process with its name in the error.
//!
//! Environment overrides use `__` between levels, e.g.
//! `GRAPHCDC_KAFKA__BOOTSTRAP_SERVERS=broker:9092` or `GRAPHCDC_SINK__URL=http://q:6334`.

use crate::codec::RegistryConfig;
use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

mod capture;
mod embedding;
pub use capture::{CaptureConfig, CaptureSetting};
pub use embedding::{
    parse_template, EmbeddingConfig, EmbeddingProvider, TemplatePart, LOCAL_MODEL,
};

/// The whole configuration of a graphcdc process.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub kafka: KafkaConfig,
    #[serde(default)]
    pub processor: ProcessorConfig,
    #[serde(default)]
    pub sink: SinkConfig,
    #[serde(default)]
    pub registry: RegistryConfig,
    /// Bolt connection of the relay and the backfill.
    #[serde(default)]
    pub neo4j: Neo4jConfig,
    #[serde(default)]
    pub relay: RelayConfig,
    /// Which trigger is installed and how it serializes (`[capture]`).
    #[serde(default)]
    pub capture: CaptureConfig,
    /// Which labels / relationship types go to which collection, and how.
    #[serde(default)]
    pub mappings: Vec<MappingConfig>,
}

/// Kafka connection and topic names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    pub bootstrap_servers: String,
    /// Consumer group of the processor; one group per sink.
    pub group_id: String,
    /// History of changes (cleanup.policy=delete).
    pub changes_topic: String,
    /// Latest state per key (cleanup.policy=compact).
    pub state_topic: String,
    /// Poison events with Kafka Connect error headers.
    pub dlq_topic: String,
    /// Extra librdkafka properties (SASL, TLS, timeouts), passed through as given.
    pub properties: BTreeMap<String, Secret>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            bootstrap_servers: "localhost:9092".into(),
            group_id: "graphcdc-qdrant".into(),
            changes_topic: "graph.changes".into(),
            state_topic: "graph.state".into(),
            dlq_topic: "graph.changes.dlq".into(),
            properties: BTreeMap::new(),
        }
    }
}

/// Bolt connection to Neo4j (or any Bolt 4.x server).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Neo4jConfig {
    /// `bolt://host:7687` or `neo4j://…`.
    pub uri: String,
    pub user: String,
    pub password: Secret,
    /// Database name; the server's default when unset.
    pub database: Option<String>,
}

impl Default for Neo4jConfig {
    fn default() -> Self {
        Neo4jConfig {
            uri: "bolt://localhost:7687".into(),
            user: "neo4j".into(),
            password: Secret::new(""),
            database: None,
        }
    }
}

/// The outbox relay.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// Outbox entries published per round.
    pub batch_size: usize,
    /// Wait between rounds when the outbox is empty.
    pub poll_interval_ms: u64,
    /// Lease time: another relay takes over when it is not renewed this long (on the
    /// database's clock). Must exceed the producer's delivery timeout
    /// (`message.timeout.ms`, 30 s by default); the relay refuses to start otherwise.
    pub lease_ttl_ms: u64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            batch_size: 500,
            poll_interval_ms: 200,
            lease_ttl_ms: 45_000,
        }
    }
}

/// Batching, limits and retry policy of the processor.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessorConfig {
    /// A batch is applied once it holds this many events…
    pub batch_max_events: usize,
    /// …or once its first event has waited this long.
    pub batch_max_wait_ms: u64,
    /// Mapped payloads larger than this (JSON bytes) go to the DLQ.
    pub max_payload_bytes: usize,
    /// First retry delay after a transient failure.
    pub retry_initial_ms: u64,
    /// Cap of the exponential backoff.
    pub retry_max_ms: u64,
    /// Consecutive failures after which the circuit opens (process reports not ready).
    pub breaker_threshold: u32,
    /// Failed attempts of a batch, with an error one event may cause (an internal sink
    /// error), after which the batch is split and the events that keep failing go to
    /// the DLQ. Sink-wide failures (unavailable, misconfigured) are never split.
    pub isolate_after_retries: u32,
    /// How often the sink is made durable (`VectorSink::sync`: the embedded sink flushes)
    /// and the offsets of what it holds are committed; 0 (default): after every batch.
    /// Writes are visible in the sink as soon as they are applied; a crash or rebalance
    /// redoes at most this much. Above 0 the embedded sink's freshness improves, but a
    /// commit that falls into a stall of the group coordinator holds the group's rejoin
    /// until it times out (`socket.timeout.ms`, 60 s): seen against tansu in
    /// `tests/chaos.rs`.
    pub commit_interval_ms: u64,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        ProcessorConfig {
            batch_max_events: 500,
            batch_max_wait_ms: 50,
            max_payload_bytes: 64 * 1024,
            retry_initial_ms: 100,
            retry_max_ms: 10_000,
            breaker_threshold: 5,
            isolate_after_retries: 5,
            commit_interval_ms: 0,
        }
    }
}

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

/// A value that never prints: `Debug` and `Display` show `***`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// A secret holding `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value, for handing to a client library.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A config error that names the offending field.
#[derive(Debug, thiserror::Error)]
#[error("invalid config: {field}: {message}")]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        message: message.into(),
    }
}

/// Whether a `GRAPHCDC_` variable (prefix removed) names a file holding a field's value.
fn is_file_override(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.contains("__") && name.ends_with("_file")
}

/// `GRAPHCDC_SECTION__FIELD_FILE=/path` sets `section.field` to the file's content
/// without its trailing newline: secrets mounted as files (Docker and Kubernetes secrets).
fn file_overrides(
    vars: impl Iterator<Item = (String, String)>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut overrides = Vec::new();
    for (name, path) in vars {
        let Some(rest) = name.strip_prefix("GRAPHCDC_") else {
            continue;
        };
        if !is_file_override(rest) {
            continue;
        }
        let field = &rest[..rest.len() - "_FILE".len()];
        let value = std::fs::read_to_string(&path)
            .map_err(|e| invalid(name.as_str(), format!("cannot read {path}: {e}")))?;
        let field = field.to_lowercase().replace("__", ".");
        overrides.push((field, value.trim_end_matches(['\r', '\n']).to_owned()));
    }
    Ok(overrides)
}

impl Config {
    /// Load `file` (when given) and `GRAPHCDC_…` environment overrides, then validate.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the field that is missing, mistyped or out of range.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// [`Config::load`] with the `GRAPHCDC_…_FILE` variables taken from `vars` (tests).
    fn load_with_env(
        file: Option<&Path>,
        vars: impl Iterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut figment = Figment::new();
        if let Some(file) = file {
            if !file.exists() {
                return Err(invalid(
                    "--config",
                    format!("{} does not exist", file.display()),
                ));
            }
            figment = figment.merge(Toml::file(file));
        }
        // Only `GRAPHCDC_SECTION__FIELD` variables are overrides; others with the prefix
        // (GRAPHCDC_CONFIG, GRAPHCDC_TEST_…) belong to someone else.
        let overrides = Env::prefixed("GRAPHCDC_")
            .filter(|key| key.as_str().contains("__") && !is_file_override(key.as_str()))
            .split("__");
        figment = figment.merge(overrides);
        for (field, value) in file_overrides(vars)? {
            figment = figment.merge((field, value));
        }
        Self::from_figment(figment)
    }

    /// Parse and validate config from TOML text (tests, embedded defaults).
    ///
    /// # Errors
    /// As [`Config::load`].
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Self::from_figment(Figment::from(Toml::string(text)))
    }

    fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let config: Config = figment.extract().map_err(|e| {
            let field = if e.path.is_empty() {
                "config".to_owned()
            } else {
                e.path.join(".")
            };
            invalid(field, e.kind.to_string())
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks that need no I/O.
    ///
    /// # Errors
    /// The first field found out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let k = &self.kafka;
        for (field, value) in [
            ("kafka.bootstrap_servers", &k.bootstrap_servers),
            ("kafka.group_id", &k.group_id),
            ("kafka.changes_topic", &k.changes_topic),
            ("kafka.state_topic", &k.state_topic),
            ("kafka.dlq_topic", &k.dlq_topic),
        ] {
            if value.trim().is_empty() {
                return Err(invalid(field, "must not be empty"));
            }
        }
        if k.dlq_topic == k.changes_topic {
            return Err(invalid(
                "kafka.dlq_topic",
                "must differ from kafka.changes_topic",
            ));
        }
        let p = &self.processor;
        if p.batch_max_events == 0 {
            return Err(invalid("processor.batch_max_events", "must be at least 1"));
        }
        if p.retry_initial_ms == 0 || p.retry_max_ms < p.retry_initial_ms {
            return Err(invalid(
                "processor.retry_max_ms",
                "need 0 < retry_initial_ms <= retry_max_ms",
            ));
        }
        if p.breaker_threshold == 0 {
            return Err(invalid("processor.breaker_threshold", "must be at least 1"));
        }
        if p.isolate_after_retries == 0 {
            return Err(invalid(
                "processor.isolate_after_retries",
                "must be at least 1",
            ));
        }
        if let SinkConfig::Qdrant { url, .. } = &self.sink {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(
                    "sink.url",
                    format!("{url:?} is not an http(s) URL"),
                ));
            }
        }
        if self.relay.batch_size == 0 {
            return Err(invalid("relay.batch_size", "must be at least 1"));
        }
        if !(self.neo4j.uri.starts_with("bolt") || self.neo4j.uri.starts_with("neo4j")) {
            return Err(invalid(
                "neo4j.uri",
                format!("{:?} is not a bolt:// or neo4j:// URI", self.neo4j.uri),
            ));
        }
        self.capture.validate()?;
        if self.mappings.is_empty() {
            return Err(invalid("mappings", "at least one mapping is needed"));
        }
        for (i, m) in self.mappings.iter().enumerate() {
            m.validate(&format!("mappings[{i}]"))?;
        }
        Ok(())
    }
}

impl MappingConfig {
    fn validate(&self, at: &str) -> Result<(), ConfigError> {
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
            if to.starts_with(crate::mapping::RESERVED_PREFIX) {
                return Err(invalid(
                    format!("{at}.rename.{from}"),
                    format!(
                        "{to:?} uses the reserved prefix {:?}",
                        crate::mapping::RESERVED_PREFIX
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_can_come_from_files_named_by_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("password");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let config_file = dir.path().join("graphcdc.toml");
        std::fs::write(&config_file, MINIMAL).unwrap();
        let vars = |path: &Path| {
            vec![
                (
                    "GRAPHCDC_NEO4J__PASSWORD_FILE".to_owned(),
                    path.display().to_string(),
                ),
                (
                    "GRAPHCDC_CONFIG_FILE".to_owned(),
                    "not an override".to_owned(),
                ),
            ]
            .into_iter()
        };
        let config = Config::load_with_env(Some(&config_file), vars(&secret)).unwrap();
        assert_eq!(config.neo4j.password.expose(), "s3cret");
        assert!(!format!("{config:?}").contains("s3cret"), "masked in Debug");
        let missing =
            Config::load_with_env(Some(&config_file), vars(&dir.path().join("nope"))).unwrap_err();
        assert_eq!(missing.field, "GRAPHCDC_NEO4J__PASSWORD_FILE");
    }

    const MINIMAL: &str = r#"
        [[mappings]]
        label = "Chunk"
        collection = "chunks"
        dimension = 4
    "#;

    fn error_field(text: &str) -> String {
        Config::from_toml(text).unwrap_err().field
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let config = Config::from_toml(MINIMAL).unwrap();
        assert_eq!(config.kafka.changes_topic, "graph.changes");
        assert_eq!(config.processor.batch_max_events, 500);
        assert_eq!(config.mappings[0].vector_name, "embedding");
        assert!(matches!(config.sink, SinkConfig::Embedded { .. }));
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            error_field(&format!(
                "[processor]\nbatch_max_events = \"many\"\n{MINIMAL}"
            )),
            "processor.batch_max_events"
        );
        assert_eq!(
            error_field(&format!("[processor]\nbatch_max_events = 0\n{MINIMAL}")),
            "processor.batch_max_events"
        );
        assert_eq!(
            error_field(&MINIMAL.replace("= 4", "= 0")),
            "mappings[0].dimension"
        );
        assert_eq!(
            error_field(&MINIMAL.replace("chunks", "a b")),
            "mappings[0].collection"
        );
        assert_eq!(error_field(""), "mappings");
        assert_eq!(
            error_field(&format!(
                "[sink]\nkind = \"qdrant\"\nurl = \"localhost:6334\"\n{MINIMAL}"
            )),
            "sink.url"
        );
        let unknown =
            Config::from_toml(&format!("[kafka]\nbootstrap = \"x\"\n{MINIMAL}")).unwrap_err();
        assert_eq!(unknown.field, "kafka.bootstrap");
        assert!(unknown.message.contains("bootstrap"), "{unknown}");
    }

    #[test]
    fn context_fanout_has_a_default_and_a_range() {
        let context = |extra: &str| {
            format!("{MINIMAL}\n[[mappings.context]]\nfield = \"m\"\nrelationship = \"MENTIONS\"\nproperties = [\"name\"]\n{extra}")
        };
        let config = Config::from_toml(&context("")).unwrap();
        assert_eq!(config.mappings[0].context[0].max_fanout, 1_000);
        for bad in ["0", "100001"] {
            assert_eq!(
                error_field(&context(&format!("max_fanout = {bad}"))),
                "mappings[0].context[0].max_fanout"
            );
        }
        let set = Config::from_toml(&context("max_fanout = 3")).unwrap();
        assert_eq!(set.mappings[0].context[0].max_fanout, 3);
    }

    #[test]
    fn secrets_never_print() {
        let config = Config::from_toml(&format!(
            "[sink]\nkind = \"qdrant\"\nurl = \"http://q:6334\"\napi_key = \"hunter2\"\n{MINIMAL}"
        ))
        .unwrap();
        let printed = format!("{config:?}");
        assert!(!printed.contains("hunter2"), "{printed}");
        assert!(printed.contains("***"));
    }
}
