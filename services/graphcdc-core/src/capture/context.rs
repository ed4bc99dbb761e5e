//! Relationship-aware payloads: graph context denormalised into a node's properties
//! (e.g. a chunk's mentioned entities), and re-emission of a node when its context
//! changes, with a new version written to the outbox in the same transaction as its bump,
//! so the payload follows the graph. Context changes when a relationship it follows
//! changes, or when a related node's listed property changes (a renamed entity): then the
//! nodes that list it are re-emitted, at most `max_fanout` of them per related node.
//!
//! Each `[[mappings.context]]` property becomes a list field `{field}_{property}`,
//! ordered by the first listed property (so the lists line up). A re-emitted node's own
//! properties take the trigger's canonical form ([`super::canonical`]), without
//! `capture.exclude_properties`, like the backfill's.

use super::{canonical, outbox};
use crate::error::Context;
use crate::event::{ChangeEvent, EntityKind, Op, PropertyValue};
use crate::mapping::{ContextConfig, Direction, MappingConfig};
use neo4rs::{query, BoltMap, BoltType, Graph, Txn};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

const COLLECT: &str = include_str!("../../../../deploy/neo4j/queries/context-collect.cypher");
const REEMIT: &str = include_str!("../../../../deploy/neo4j/queries/context-reemit.cypher");
const RELATED: &str = include_str!("../../../../deploy/neo4j/queries/context-related.cypher");

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
) -> crate::error::Result<()> {
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

/// A related node whose listed property changed is in the context of more nodes than the
/// context's `max_fanout`: only that many were re-emitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanoutOverflow {
    /// Label of the nodes re-emitted (the mapping's).
    pub label: String,
    /// The context's payload field prefix.
    pub field: String,
    /// Key of the related node that changed.
    pub related: String,
    /// The context's `max_fanout`: how many were re-emitted.
    pub max_fanout: usize,
}

/// What a re-emit did.
#[derive(Debug, Default)]
pub struct Reemitted {
    /// Outbox entries written.
    pub written: usize,
    /// Related-node changes whose fan-out was cut at `max_fanout`.
    pub overflows: Vec<FanoutOverflow>,
    /// Keys of nodes whose version was bumped but whose properties have no JSON form (a
    /// temporal value out of chrono's range): no entry was written for them (logged).
    pub unserializable: Vec<String>,
}

#[derive(Deserialize)]
struct RelatedRow {
    related: String,
    keys: Vec<String>,
}

/// Whether `event` is a node upsert that may have changed one of `properties`: the
/// trigger lists the properties a transaction assigned or removed (`changed`); without
/// that list (entries of an older trigger) any may have.
fn may_change(event: &ChangeEvent, changed: Option<&[String]>, properties: &[String]) -> bool {
    event.kind == EntityKind::Node
        && event.op == Op::Upsert
        && changed.is_none_or(|names| names.iter().any(|n| properties.contains(n)))
}

/// Keys of `label` nodes whose `context` lists a node of `events` that may have changed a
/// listed property (at most `max_fanout` per such node), and the nodes past that limit.
async fn related_keys(
    txn: &mut Txn,
    label: &str,
    mapping: &MappingConfig,
    context: &ContextConfig,
    events: &[ChangeEvent],
    changed: &[Option<Vec<String>>],
    out: &mut Reemitted,
) -> crate::error::Result<BTreeSet<String>> {
    // Related nodes by one of their labels (the key lookup then uses its index).
    let mut by_label: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (event, names) in events.iter().zip(changed) {
        if let (true, Some(first)) = (
            may_change(event, names.as_deref(), &context.properties),
            event.labels.first(),
        ) {
            by_label.entry(first).or_default().push(event.key.clone());
        }
    }
    let (left, right) = match context.direction {
        Direction::Out => ("-", "->"),
        Direction::In => ("<-", "-"),
    };
    let mut keys = BTreeSet::new();
    for (related_label, related) in by_label {
        let text = RELATED
            .replace("__RELATED__", related_label)
            .replace("__LABEL__", label)
            .replace("__KEY__", &mapping.key_property)
            .replace("__LEFT__", left)
            .replace("__RIGHT__", right)
            .replace("__REL__", &context.relationship);
        let q = query(&text)
            .param("keys", related)
            .param("limit", (context.max_fanout + 1) as i64);
        let mut rows = txn
            .execute(q)
            .await
            .context("finding the nodes whose context lists a changed node")?;
        while let Some(row) = rows.next(txn.handle()).await? {
            let mut row: RelatedRow = row.to().context("related row of unexpected shape")?;
            if row.keys.len() > context.max_fanout {
                row.keys.truncate(context.max_fanout);
                out.overflows.push(FanoutOverflow {
                    label: label.to_owned(),
                    field: context.field.clone(),
                    related: row.related,
                    max_fanout: context.max_fanout,
                });
            }
            keys.extend(row.keys);
        }
    }
    Ok(keys)
}

/// Re-emit, inside `txn`, the nodes whose context changed: a relationship in `events`
/// that a context follows, or a node of `events` whose listed property may have changed
/// (`changed[i]`: the property names of `events[i]`'s outbox entry, `None` = unknown).
/// Each gets a new version from its `CdcVersion` counter and an outbox entry with its
/// current state, in the same transaction, so the relay publishes it like any change
/// (in version order with the node's other entries) and graph.state never holds a
/// version without an outbox entry. The state is serialized as the trigger and the
/// backfill serialize it ([`canonical::properties_json`]), without `exclude`
/// (`capture.exclude_properties`), so a re-emitted node hashes equal to the same node
/// captured live or backfilled.
///
/// # Errors
/// When Neo4j cannot be queried or written.
pub async fn reemit(
    txn: &mut Txn,
    mappings: &[MappingConfig],
    exclude: &[String],
    events: &[ChangeEvent],
    changed: &[Option<Vec<String>>],
    db: &str,
) -> crate::error::Result<Reemitted> {
    let mut out = Reemitted::default();
    for (label, mapping) in with_context(mappings) {
        let mut keys: BTreeSet<String> = events
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
        for context in &mapping.context {
            let related =
                related_keys(txn, label, mapping, context, events, changed, &mut out).await?;
            keys.extend(related);
        }
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
            let key: String = row.get("key").context("node row without key")?;
            let labels: Vec<String> = row.get("labels").context("node row without labels")?;
            let version: i64 = row.get("version").context("node row without version")?;
            let props: BoltMap = row.get("props").context("node row without properties")?;
            let properties = match canonical::properties_json(&props, exclude) {
                Ok(json) => json,
                Err(e) => {
                    tracing::warn!(%key, error = %format!("{e:#}"), "re-emitted node cannot become an event; skipped");
                    out.unserializable.push(key);
                    continue;
                }
            };
            let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
            let mut event = ChangeEvent::node(&key, &labels, Op::Upsert, version, 0);
            event.source.db = db.to_owned();
            entries.push(outbox::entry_with_json(&event, Some(properties)));
        }
        if entries.is_empty() {
            continue;
        }
        out.written += outbox::write_entries(txn, entries)
            .await
            .context("writing the outbox entries of re-emitted nodes")?;
    }
    Ok(out)
}
