//! `[capture]`: how changes leave Neo4j, kept in step with the trigger's `params`
//! (`deploy/neo4j/outbox-trigger.cypher`), so that the backfill serializes exactly as
//! the trigger does and the reconciler knows whether a state topic exists.

use serde::Deserialize;

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
    pub fn validate(&self) -> Result<(), super::ConfigError> {
        let identifier =
            |s: &str| !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_');
        for (field, value) in [
            ("capture.node_key", &self.node_key),
            ("capture.relationship_marker", &self.relationship_marker),
        ] {
            if !identifier(value) {
                return Err(super::ConfigError {
                    field: field.into(),
                    message: "use letters, digits and _ (it becomes a Cypher property name)".into(),
                });
            }
        }
        Ok(())
    }
}
