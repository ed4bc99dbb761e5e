//! Capture from Neo4j: the outbox relay and the backfill of an existing graph.
//!
//! The Cypher the trigger runs lives in `deploy/neo4j/`; the queries here are the
//! relay's and the backfill's own (linted in CI with the rest).

pub mod backfill;
pub mod canonical;
pub mod config;
pub mod context;
pub mod outbox;
pub mod relay;

pub use config::{CaptureConfig, CaptureSetting, Neo4jConfig, RelayConfig};

use crate::error::Context;
use crate::event::{ChangeEvent, EntityKind, Op, PropertyValue, RelationshipEnds, Source};
use neo4rs::{ConfigBuilder, Graph};
use serde::Deserialize;
use std::collections::BTreeMap;

/// A Bolt connection pool from config.
///
/// # Errors
/// When the URI or credentials are malformed.
pub fn connect(config: &Neo4jConfig) -> crate::error::Result<Graph> {
    let mut builder = ConfigBuilder::default()
        .uri(config.uri.as_str())
        .user(config.user.as_str())
        .password(config.password.expose());
    if let Some(db) = &config.database {
        builder = builder.db(db.as_str());
    }
    let built = builder
        .build()
        .context("neo4j: invalid connection settings")?;
    Graph::connect(built).context("neo4j: cannot create the Bolt connection pool")
}

/// End `txn` by what the work done in it came to: commit it (`committing` names the transaction in
/// the error) after success, roll it back (best effort) and return the error otherwise.
///
/// # Errors
/// `work`'s error, or a failed commit.
pub async fn commit_or_roll_back<T>(
    work: crate::error::Result<T>,
    txn: neo4rs::Txn,
    committing: &'static str,
) -> crate::error::Result<T> {
    match work {
        Ok(done) => {
            txn.commit().await.context(committing)?;
            Ok(done)
        }
        Err(e) => {
            txn.rollback().await.ok();
            Err(e)
        }
    }
}

/// One `(:CdcOutbox)` node as the trigger writes it.
#[derive(Debug, Clone, Deserialize)]
pub struct OutboxRow {
    pub event_id: String,
    /// `node` or `relationship`.
    pub kind: String,
    pub key: String,
    #[serde(default)]
    pub labels: Option<Vec<String>>,
    /// Captured labels the node lost while staying in scope (an upsert).
    #[serde(default)]
    pub removed_labels: Option<Vec<String>>,
    /// Names of the properties the transaction assigned or removed on the node, for the
    /// context re-emit of related nodes; absent (entries of older triggers, re-emits) =
    /// unknown, so any property may have changed.
    #[serde(default)]
    pub changed: Option<Vec<String>>,
    /// `upsert` or `delete`.
    pub op: String,
    pub version: i64,
    pub commit_time_ms: i64,
    /// Properties after the change, as JSON text (`apoc.convert.toJson`).
    #[serde(default)]
    pub properties: Option<String>,
    #[serde(default)]
    pub rel_type: Option<String>,
    #[serde(default)]
    pub start_key: Option<String>,
    #[serde(default)]
    pub end_key: Option<String>,
    #[serde(default)]
    pub db: Option<String>,
    /// W3C trace context of the writing transaction (transaction metadata).
    #[serde(default)]
    pub traceparent: Option<String>,
    /// Who wrote the entry when not the trigger: `backfill` or `repair`
    /// ([`outbox::source_mode`]); absent on the trigger's entries.
    #[serde(default)]
    pub source: Option<String>,
}

/// Parse a JSON object of properties into the event's typed map.
///
/// # Errors
/// When the text is not a JSON object of supported values.
pub fn parse_properties(json: &str) -> crate::error::Result<BTreeMap<String, PropertyValue>> {
    serde_json::from_str(json)
        .context("outbox properties are not a JSON object of scalars and lists")
}

/// The change event an outbox entry stands for.
///
/// # Errors
/// When `kind`/`op` are unknown or the properties are not valid JSON.
pub fn outbox_event(row: OutboxRow) -> crate::error::Result<ChangeEvent> {
    let kind = match row.kind.as_str() {
        "node" => EntityKind::Node,
        "relationship" => EntityKind::Relationship,
        other => crate::error::bail!("outbox entry {}: unknown kind {other:?}", row.event_id),
    };
    let op = match row.op.as_str() {
        "upsert" => Op::Upsert,
        "delete" => Op::Delete,
        other => crate::error::bail!("outbox entry {}: unknown op {other:?}", row.event_id),
    };
    let properties = match (&op, row.properties.as_deref()) {
        (Op::Upsert, Some(json)) => parse_properties(json)?,
        _ => BTreeMap::new(),
    };
    let relationship = (kind == EntityKind::Relationship).then(|| RelationshipEnds {
        rel_type: row.rel_type.clone().unwrap_or_default(),
        start_key: row.start_key.clone().unwrap_or_default(),
        end_key: row.end_key.clone().unwrap_or_default(),
    });
    Ok(ChangeEvent {
        event_id: row.event_id,
        kind,
        key: row.key,
        labels: row.labels.unwrap_or_default(),
        removed_labels: row.removed_labels.unwrap_or_default(),
        relationship,
        op,
        version: row.version,
        commit_time_ms: row.commit_time_ms,
        properties,
        vector: None,
        source: Source {
            db: row.db.unwrap_or_else(|| "neo4j".into()),
            mode: outbox::source_mode(row.source.as_deref()),
        },
        traceparent: row.traceparent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::CaptureMode;

    fn row(op: &str, properties: Option<&str>) -> OutboxRow {
        OutboxRow {
            event_id: "e1".into(),
            kind: "node".into(),
            key: "c1".into(),
            labels: Some(vec!["Chunk".into()]),
            removed_labels: None,
            changed: None,
            op: op.into(),
            version: 3,
            commit_time_ms: 1000,
            properties: properties.map(str::to_owned),
            rel_type: None,
            start_key: None,
            end_key: None,
            db: Some("neo4j".into()),
            traceparent: None,
            source: None,
        }
    }

    #[test]
    fn outbox_rows_become_contract_events() {
        let event =
            outbox_event(row("upsert", Some(r#"{"text":"hi","n":2,"emb":[0.5,1]}"#))).unwrap();
        assert_eq!(
            (event.op, event.version, event.source.mode),
            (Op::Upsert, 3, CaptureMode::Outbox)
        );
        assert_eq!(event.properties["text"], PropertyValue::String("hi".into()));
        assert_eq!(
            event.properties["emb"],
            PropertyValue::List(vec![PropertyValue::Double(0.5), PropertyValue::Long(1)])
        );
        let delete = outbox_event(row("delete", Some("{}"))).unwrap();
        assert!(delete.properties.is_empty());
        assert!(outbox_event(row("merge", None)).is_err());
        assert!(outbox_event(row("upsert", Some("[1]"))).is_err());
    }
}
