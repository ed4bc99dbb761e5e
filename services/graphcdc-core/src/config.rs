//! Configuration: a TOML file plus `GRAPHCDC_…` environment overrides, validated at
//! start so that a bad field fails the process with its name in the error.
//!
//! Environment overrides use `__` between levels, e.g.
//! `GRAPHCDC_KAFKA__BOOTSTRAP_SERVERS=broker:9092` or `GRAPHCDC_SINK__URL=http://q:6334`.

//!
//! Each section is defined next to the code it configures ([`KafkaConfig`] in `kafka`,
//! [`ProcessorConfig`] in `processor`, [`SinkConfig`] in `sink`, the Neo4j side in
//! `capture`, the mappings and the registry in the contract crate); this module puts
//! them together, reads them and validates each.

use crate::capture::config::{CaptureConfig, Neo4jConfig, RelayConfig};
use crate::codec::RegistryConfig;
use crate::kafka::config::KafkaConfig;
use crate::mapping::MappingConfig;
use crate::processor::config::ProcessorConfig;
use crate::settings::invalid;
pub use crate::settings::{ConfigError, Secret};
use crate::sink::config::SinkConfig;
use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::Deserialize;
use std::path::Path;

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

    /// Checks that need no I/O, section by section.
    ///
    /// # Errors
    /// The first field found out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.kafka.validate()?;
        self.processor.validate()?;
        self.sink.validate()?;
        self.relay.validate()?;
        self.neo4j.validate()?;
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
        assert_eq!(config.processor.max_batches_in_flight, 1);
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
            error_field(&format!(
                "[processor]\nmax_batches_in_flight = 0\n{MINIMAL}"
            )),
            "processor.max_batches_in_flight"
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
