//! `[kafka]`: the broker, the group, the three topics and librdkafka pass-through
//! properties (TLS, SASL, timeouts).

use crate::settings::{invalid, ConfigError, Secret};
use serde::Deserialize;
use std::collections::BTreeMap;

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

impl KafkaConfig {
    /// Checks that need no I/O.
    ///
    /// # Errors
    /// The first field found out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, value) in [
            ("kafka.bootstrap_servers", &self.bootstrap_servers),
            ("kafka.group_id", &self.group_id),
            ("kafka.changes_topic", &self.changes_topic),
            ("kafka.state_topic", &self.state_topic),
            ("kafka.dlq_topic", &self.dlq_topic),
        ] {
            if value.trim().is_empty() {
                return Err(invalid(field, "must not be empty"));
            }
        }
        if self.dlq_topic == self.changes_topic {
            return Err(invalid(
                "kafka.dlq_topic",
                "must differ from kafka.changes_topic",
            ));
        }
        Ok(())
    }
}
