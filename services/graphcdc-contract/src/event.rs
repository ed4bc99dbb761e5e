//! The one event model: a change of one graph entity, as carried on the change topic,
//! and the latest state of an entity, as carried on the compacted state topic.
//!
//! The JSON shape of these types is the plain-JSON form of the contract
//! (`schemas/change-event.avsc`); the Avro form is produced by [`crate::codec`].

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Versions must stay below 2^53: Qdrant range filters compare numbers as f64.
pub const MAX_VERSION: i64 = (1 << 53) - 1;

/// Whether the entity is a node or a relationship.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntityKind {
    Node,
    Relationship,
}

/// What happened to the entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Upsert,
    Delete,
}

/// How the event left the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptureMode {
    /// `before`-phase trigger writing an outbox, published by the relay.
    Outbox,
    /// `afterAsync` trigger calling `apoc.kafka.publish`.
    Direct,
    /// Snapshot of an existing graph.
    Backfill,
    /// Corrective event written by the reconciler.
    Repair,
}

/// A property value: null, bool, long, double, string, or a list of scalars.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PropertyValue {
    Null,
    Bool(bool),
    Long(i64),
    Double(f64),
    String(String),
    List(Vec<PropertyValue>),
}

/// Start, end and type of a relationship.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelationshipEnds {
    #[serde(rename = "type")]
    pub rel_type: String,
    pub start_key: String,
    pub end_key: String,
}

/// Where the event came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// Neo4j database name.
    pub db: String,
    pub mode: CaptureMode,
}

/// One change of one entity; the Kafka key of its record is `key`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// Unique id of this event (UUID).
    pub event_id: String,
    pub kind: EntityKind,
    /// Stable business key of the entity.
    pub key: String,
    /// Node labels (empty for relationships).
    #[serde(default)]
    pub labels: Vec<String>,
    /// Mapped labels the node lost in this change while keeping another captured one (an
    /// upsert): the entity left those collections, and the mapper writes a tombstone of
    /// this version there. Empty for relationships, and from producers that never say.
    #[serde(default)]
    pub removed_labels: Vec<String>,
    /// Set for relationships.
    #[serde(default)]
    pub relationship: Option<RelationshipEnds>,
    pub op: Op,
    /// Per-entity monotonic version.
    pub version: i64,
    /// Commit time of the source transaction in ms since the epoch.
    pub commit_time_ms: i64,
    /// Full property state after the change (empty for deletes).
    #[serde(default)]
    pub properties: BTreeMap<String, PropertyValue>,
    /// Embedding, when the capture side carries it outside the properties.
    #[serde(default)]
    pub vector: Option<Vec<f32>>,
    pub source: Source,
    /// W3C trace context of the producing transaction.
    #[serde(default)]
    pub traceparent: Option<String>,
}

/// Latest state of one entity: the value on the compacted state topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityState {
    pub kind: EntityKind,
    pub key: String,
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default)]
    pub relationship: Option<RelationshipEnds>,
    pub version: i64,
    pub commit_time_ms: i64,
    #[serde(default)]
    pub properties: BTreeMap<String, PropertyValue>,
    #[serde(default)]
    pub vector: Option<Vec<f32>>,
}

impl ChangeEvent {
    /// The state this event leaves behind, or `None` for a delete (a tombstone).
    pub fn to_state(&self) -> Option<EntityState> {
        (self.op == Op::Upsert).then(|| EntityState {
            kind: self.kind,
            key: self.key.clone(),
            labels: self.labels.clone(),
            relationship: self.relationship.clone(),
            version: self.version,
            commit_time_ms: self.commit_time_ms,
            properties: self.properties.clone(),
            vector: self.vector.clone(),
        })
    }
}

impl ChangeEvent {
    /// A node event with a fresh event id, no properties, source `neo4j`/outbox.
    pub fn node(key: &str, labels: &[&str], op: Op, version: i64, commit_time_ms: i64) -> Self {
        ChangeEvent {
            event_id: uuid::Uuid::new_v4().to_string(),
            kind: EntityKind::Node,
            key: key.to_owned(),
            labels: labels.iter().map(|l| l.to_string()).collect(),
            removed_labels: Vec::new(),
            relationship: None,
            op,
            version,
            commit_time_ms,
            properties: BTreeMap::new(),
            vector: None,
            source: Source {
                db: "neo4j".into(),
                mode: CaptureMode::Outbox,
            },
            traceparent: None,
        }
    }

    /// This event with property `name` set to `value`.
    pub fn with_property(mut self, name: &str, value: PropertyValue) -> Self {
        self.properties.insert(name.to_owned(), value);
        self
    }

    /// This event with `removed_labels` (labels the node left in this change).
    pub fn with_removed_labels(mut self, labels: &[&str]) -> Self {
        self.removed_labels = labels.iter().map(|l| l.to_string()).collect();
        self
    }

    /// This event with `vector`.
    pub fn with_vector(mut self, vector: Vec<f32>) -> Self {
        self.vector = Some(vector);
        self
    }
}

impl EntityState {
    /// The upsert event that recreates this state (used for repairs and backfills).
    pub fn to_event(&self, event_id: String, source: Source) -> ChangeEvent {
        ChangeEvent {
            event_id,
            kind: self.kind,
            key: self.key.clone(),
            labels: self.labels.clone(),
            removed_labels: Vec::new(),
            relationship: self.relationship.clone(),
            op: Op::Upsert,
            version: self.version,
            commit_time_ms: self.commit_time_ms,
            properties: self.properties.clone(),
            vector: self.vector.clone(),
            source,
            traceparent: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_reads_integers_as_long_and_fractions_as_double() {
        let json = r#"{"event_id":"e1","kind":"node","key":"k1","labels":["Chunk"],
            "op":"upsert","version":3,"commit_time_ms":1700000000000,
            "properties":{"n":1,"x":1.5,"s":"a","b":true,"z":null,"l":[1,"a"]},
            "source":{"db":"neo4j","mode":"outbox"}}"#;
        let event: ChangeEvent = serde_json::from_str(json).unwrap();
        assert_eq!(event.properties["n"], PropertyValue::Long(1));
        assert_eq!(event.properties["x"], PropertyValue::Double(1.5));
        assert_eq!(event.properties["z"], PropertyValue::Null);
        assert_eq!(
            event.properties["l"],
            PropertyValue::List(vec![
                PropertyValue::Long(1),
                PropertyValue::String("a".into())
            ])
        );
        assert_eq!(event.vector, None);
        assert_eq!(event.to_state().unwrap().version, 3);
    }
}
