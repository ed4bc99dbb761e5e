//! The capture side's sections: `[neo4j]` (the Bolt connection of the relay and the
//! backfill), `[relay]`, and `[capture]`: how changes leave Neo4j, kept in step with the
//! trigger's `params` (`deploy/neo4j/outbox-trigger.cypher`), so that the backfill
//! serializes exactly as the trigger does and the reconciler knows whether a state topic
//! exists.

use crate::settings::{invalid, ConfigError, Secret};
use serde::Deserialize;

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

impl Neo4jConfig {
    /// Checks that need no I/O.
    ///
    /// # Errors
    /// The first field found out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.uri.starts_with("bolt") || self.uri.starts_with("neo4j")) {
            return Err(invalid(
                "neo4j.uri",
                format!("{:?} is not a bolt:// or neo4j:// URI", self.uri),
            ));
        }
        Ok(())
    }
}

impl RelayConfig {
    /// Checks that need no I/O.
    ///
    /// # Errors
    /// The first field found out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.batch_size == 0 {
            return Err(invalid("relay.batch_size", "must be at least 1"));
        }
        Ok(())
    }
}

/// Which trigger is installed (`deploy/neo4j/README.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureSetting {
    /// `before`-phase trigger + outbox + `graphcdc relay`: writes the state topic.
    #[default]
    Outbox,
    /// `afterAsync` trigger with `apoc.kafka.publish`: best effort, at most once, no
    /// state topic, so nothing can be reconciled.
    Direct,
}

/// The capture side's settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// Installed trigger.
    pub mode: CaptureSetting,
    /// Business-key property of nodes (`$cdcNodeKey`): relationship endpoints' keys.
    pub node_key: String,
    /// Property names left out of every payload (`$cdcExcludeProps`).
    pub exclude_properties: Vec<String>,
    /// Property the trigger writes on captured relationships (`$cdcRelMarker`); never
    /// part of a relationship's payload.
    pub relationship_marker: String,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            mode: CaptureSetting::Outbox,
            node_key: "uuid".into(),
            exclude_properties: Vec::new(),
            relationship_marker: "_cdc".into(),
        }
    }
}

impl CaptureConfig {
    /// Both names become Cypher property names.
    ///
    /// # Errors
    /// The first field that is not an identifier.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let identifier =
            |s: &str| !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_');
        for (field, value) in [
            ("capture.node_key", &self.node_key),
            ("capture.relationship_marker", &self.relationship_marker),
        ] {
            if !identifier(value) {
                return Err(invalid(
                    field,
                    "use letters, digits and _ (it becomes a Cypher property name)",
                ));
            }
        }
        Ok(())
    }
}
