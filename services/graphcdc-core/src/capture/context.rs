//! Relationship-aware payloads: graph context denormalised into a node's properties
//! (e.g. a chunk's mentioned entities), and re-emission of a node when a relationship
//! its context follows changes, with a new version written to the outbox in the same
//! transaction as its bump, so the payload follows the graph.
//!
//! Each `[[mappings.context]]` property becomes a list field `{field}_{property}`,
//! ordered by the first listed property (so the lists line up).

use crate::config::{ContextConfig, Direction, MappingConfig};
use crate::event::{ChangeEvent, EntityKind, Op, PropertyValue};
use anyhow::Context;
use neo4rs::{query, BoltType, Graph, Txn};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

const COLLECT: &str = include_str!("../../../../deploy/neo4j/queries/context-collect.cypher");
const REEMIT: &str = include_str!("../../../../deploy/neo4j/queries/context-reemit.cypher");
const REEMIT_OUTBOX: &str =
    include_str!("../../../../deploy/neo4j/queries/context-reemit-outbox.cypher");

/// A node mapping that has context, with its label.
fn with_context(mappings: &[MappingConfig]) -> impl Iterator<Item = (&str, &MappingConfig)> {
    mappings
        .iter()
        .filter(|m| !m.context.is_empty())
        .filter_map(|m| Some((m.label.as_deref()?, m)))
}

fn collect_query(label: &str, key: &str, context: &ContextConfig, property: &str) -> String {
    let (left, right) = match context.direction {
        Direction::Out => ("-", "->"),
        Direction::In => ("<-", "-"),
    };
    COLLECT
        .replace("__LABEL__", label)
        .replace("__KEY__", key)
        .replace("__LEFT__", left)
        .replace("__RIGHT__", right)
        .replace("__REL__", &context.relationship)
        .replace("__SORT__", &context.properties[0])
        .replace("__PROP__", property)
}

#[derive(Deserialize)]
struct ValuesRow {
    key: String,
    values: Vec<serde_json::Value>,
}

/// Add the configured context to every node upsert in `events`.
///
/// # Errors
/// When Neo4j cannot be queried or returns values a property cannot hold.
pub async fn enrich(
    graph: &Graph,
    mappings: &[MappingConfig],
    events: &mut [ChangeEvent],
) -> anyhow::Result<()> {
    for (label, mapping) in with_context(mappings) {
        let keys: Vec<String> = events
            .iter()
            .filter(|e| {
                e.kind == EntityKind::Node
                    && e.op == Op::Upsert
                    && e.labels.iter().any(|l| l == label)
            })
            .map(|e| e.key.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if keys.is_empty() {
            continue;
        }
        for context in &mapping.context {
            for property in &context.properties {
                let q = query(&collect_query(
                    label,
                    &mapping.key_property,
                    context,
                    property,
                ))
                .param("keys", keys.clone());
                let mut rows = graph.execute(q).await.context("reading graph context")?;
                let mut found: BTreeMap<String, PropertyValue> = BTreeMap::new();
                while let Some(row) = rows.next().await? {
                    let row: ValuesRow = row.to().context("context row of unexpected shape")?;
                    let list = serde_json::from_value(serde_json::Value::Array(row.values))
                        .context("context values must be scalars")?;
                    found.insert(row.key, list);
                }
                let field = format!("{}_{property}", context.field);
                for event in events
                    .iter_mut()
                    .filter(|e| e.labels.iter().any(|l| l == label))
                {
                    if let Some(values) = found.get(&event.key) {
                        event.properties.insert(field.clone(), values.clone());
                    }
                }
            }
        }
    }
    Ok(())
}

#[derive(Deserialize)]
struct NodeRow {
    key: String,
    labels: Vec<String>,
    props: serde_json::Map<String, serde_json::Value>,
    version: i64,
}

/// Re-emit, inside `txn`, the nodes whose context a relationship in `events` changed:
/// each gets a new version from its `CdcVersion` counter and an outbox entry with its
/// current state, in the same transaction, so the relay publishes it like any change
/// (in version order with the node's other entries) and graph.state never holds a
/// version without an outbox entry. Returns how many entries were written.
///
/// # Errors
/// When Neo4j cannot be queried or written.
pub async fn reemit(
    txn: &mut Txn,
    mappings: &[MappingConfig],
    events: &[ChangeEvent],
    db: &str,
) -> anyhow::Result<usize> {
    let mut written = 0;
    for (label, mapping) in with_context(mappings) {
        let keys: BTreeSet<String> = events
            .iter()
            .filter_map(|e| e.relationship.as_ref())
            .flat_map(|ends| {
                mapping
                    .context
                    .iter()
                    .filter(|c| c.relationship == ends.rel_type)
                    .map(|c| match c.direction {
                        Direction::Out => ends.start_key.clone(),
                        Direction::In => ends.end_key.clone(),
                    })
            })
            .filter(|k| !k.is_empty())
            .collect();
        if keys.is_empty() {
            continue;
        }
        let text = REEMIT
            .replace("__LABEL__", label)
            .replace("__KEY__", &mapping.key_property);
        let q = query(&text).param("keys", keys.into_iter().collect::<Vec<_>>());
        let mut rows = txn
            .execute(q)
            .await
            .context("re-emitting nodes whose context changed")?;
        let mut entries: Vec<HashMap<String, BoltType>> = Vec::new();
        while let Some(row) = rows.next(txn.handle()).await? {
            let row: NodeRow = row.to().context("node row of unexpected shape")?;
            entries.push(HashMap::from([
                (
                    "event_id".to_owned(),
                    uuid::Uuid::new_v4().to_string().into(),
                ),
                ("key".to_owned(), row.key.into()),
                ("labels".to_owned(), row.labels.into()),
                ("version".to_owned(), row.version.into()),
                (
                    "properties".to_owned(),
                    serde_json::Value::Object(row.props).to_string().into(),
                ),
                ("db".to_owned(), db.into()),
            ]));
        }
        if entries.is_empty() {
            continue;
        }
        written += entries.len();
        txn.run(query(REEMIT_OUTBOX).param("rows", entries))
            .await
            .context("writing the outbox entries of re-emitted nodes")?;
    }
    Ok(written)
}
