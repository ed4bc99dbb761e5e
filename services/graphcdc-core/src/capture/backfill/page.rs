//! One backfill page: select it, then in one write transaction bump the trigger's
//! `CdcVersion` counter of every entity in it, read the properties after the lock,
//! serialized as the trigger serializes them ([`super::super::canonical`]), and write
//! them as outbox entries that the relay publishes ([`super::super::outbox`]).

use super::super::{canonical, outbox, parse_properties};
use crate::capture::config::CaptureConfig;
use crate::error::Context;
use crate::event::{CaptureMode, ChangeEvent, EntityKind, Op, RelationshipEnds, Source};
use crate::mapping::MappingConfig;
use neo4rs::{query, BoltMap, BoltType, Graph, Query, Row};
use std::collections::{BTreeMap, HashMap};

const NODES_FIRST: &str =
    include_str!("../../../../../deploy/neo4j/queries/backfill-nodes-first.cypher");
const NODES_NEXT: &str =
    include_str!("../../../../../deploy/neo4j/queries/backfill-nodes-next.cypher");
const NODES_READ: &str =
    include_str!("../../../../../deploy/neo4j/queries/backfill-nodes-read.cypher");
const BUMP: &str = include_str!("../../../../../deploy/neo4j/queries/backfill-bump.cypher");
const RELS: &str = include_str!("../../../../../deploy/neo4j/queries/backfill-rels.cypher");

/// What a mapping backfills: the nodes of a label or the relationships of a type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Label { label: String, key: String },
    Type { rel_type: String, key: String },
}

impl Target {
    /// The target of `mapping`.
    pub fn of(mapping: &MappingConfig) -> Option<Target> {
        match (&mapping.label, &mapping.relationship_type) {
            (Some(label), _) => Some(Target::Label {
                label: label.clone(),
                key: mapping.key_property.clone(),
            }),
            (None, Some(t)) => Some(Target::Type {
                rel_type: t.clone(),
                key: mapping.key_property.clone(),
            }),
            _ => None,
        }
    }

    /// Name in the checkpoint: the label, or `[:TYPE]`.
    pub fn name(&self) -> String {
        match self {
            Target::Label { label, .. } => label.clone(),
            Target::Type { rel_type, .. } => format!("[:{rel_type}]"),
        }
    }

    /// The entity kind of the target, as the trigger prefixes its counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Label { .. } => "node",
            Target::Type { .. } => "relationship",
        }
    }
}

/// A key as read: string or integer (the trigger keys by `toString`).
pub fn key_text(key: &serde_json::Value) -> String {
    match key {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A key as a Bolt parameter, of its own type.
pub fn key_param(key: &serde_json::Value) -> BoltType {
    match key {
        serde_json::Value::String(s) => s.as_str().into(),
        serde_json::Value::Number(n) if n.is_i64() => n.as_i64().unwrap_or_default().into(),
        serde_json::Value::Number(n) => n.as_f64().unwrap_or_default().into(),
        serde_json::Value::Bool(b) => (*b).into(),
        _ => BoltType::Null(neo4rs::BoltNull),
    }
}

/// The key column of a page row.
pub fn key_of(row: &Row) -> crate::error::Result<serde_json::Value> {
    match row.get::<BoltType>("key").context("page row without key")? {
        BoltType::String(s) => Ok(s.value.into()),
        BoltType::Integer(n) => Ok(n.value.into()),
        other => crate::error::bail!(
            Invalid,
            "unsupported key {other:?}: use string or integer keys"
        ),
    }
}

/// One entity of a page, as selected (before the lock).
#[derive(Debug, Clone)]
pub struct Selected {
    pub key: serde_json::Value,
    pub version: i64,
}

/// The query texts of `target`, identifiers quoted (validated by the config).
pub fn text(template: &str, target: &Target, capture: &CaptureConfig) -> String {
    match target {
        Target::Label { label, key } => {
            template.replace("__LABEL__", label).replace("__KEY__", key)
        }
        Target::Type { rel_type, key } => template
            .replace("__REL__", rel_type)
            .replace("__KEY__", key)
            .replace("__PROP__", &capture.node_key),
    }
}

fn page_query(
    target: &Target,
    capture: &CaptureConfig,
    after: Option<&serde_json::Value>,
    limit: usize,
) -> Query {
    let template = match (target, after) {
        (Target::Label { .. }, None) => NODES_FIRST,
        (Target::Label { .. }, Some(_)) => NODES_NEXT,
        (Target::Type { .. }, _) => RELS,
    };
    let after = after.map_or(BoltType::Null(neo4rs::BoltNull), key_param);
    query(&text(template, target, capture))
        .param("limit", limit as i64)
        .param("after", after)
}

/// The next page after `after` (no lock): keys and the versions they have now.
///
/// # Errors
/// When Neo4j fails or a key is neither a string nor an integer.
pub async fn select(
    graph: &Graph,
    target: &Target,
    capture: &CaptureConfig,
    after: Option<&serde_json::Value>,
    limit: usize,
) -> crate::error::Result<Vec<Selected>> {
    let mut rows = graph
        .execute(page_query(target, capture, after, limit))
        .await
        .with_context(|| format!("selecting a page of {}", target.name()))?;
    let mut page = Vec::new();
    while let Some(row) = rows.next().await? {
        page.push(Selected {
            key: key_of(&row)?,
            version: row.get("version").unwrap_or(0),
        });
    }
    Ok(page)
}

/// An entity of the page that cannot become an event (e.g. a point property).
#[derive(Debug)]
pub struct Failed {
    pub key: String,
    pub error: String,
}

/// What a page transaction wrote.
#[derive(Debug, Default)]
pub struct Written {
    /// Outbox entries written (one per entity of the page that became an event).
    pub entries: usize,
    /// Their event ids.
    pub ids: Vec<String>,
    /// Entities of the page that cannot become an event.
    pub failed: Vec<Failed>,
}

/// In one write transaction: bump the counters of `keys`, read their entities after
/// that lock, and write each as an outbox entry (source `mode`) at its new version
/// ([`outbox::write`]). The relay publishes the entries, in version order with the key's
/// other entries: a change that commits after this transaction has a higher version and
/// its entry is published after this one.
///
/// # Errors
/// When Neo4j fails; the transaction is rolled back then, nothing is written.
#[allow(clippy::too_many_arguments)]
pub async fn write_locked(
    graph: &Graph,
    target: &Target,
    capture: &CaptureConfig,
    after: Option<&serde_json::Value>,
    limit: usize,
    keys: &[serde_json::Value],
    db: &str,
    mode: CaptureMode,
) -> crate::error::Result<Written> {
    let mut txn = graph
        .start_txn()
        .await
        .context("starting a page transaction")?;
    let work = async {
        let mut written = Written::default();
        let counters: Vec<String> = keys
            .iter()
            .map(|k| format!("{}:{}", target.kind(), key_text(k)))
            .collect();
        let mut versions = HashMap::new();
        let mut rows = txn.execute(query(BUMP).param("keys", counters)).await?;
        while let Some(row) = rows.next(txn.handle()).await? {
            let counter: String = row.get("key")?;
            let key = counter
                .split_once(':')
                .map_or(counter.clone(), |(_, k)| k.to_owned());
            versions.insert(key, row.get::<i64>("version")?);
        }
        drop(rows);
        let read = match target {
            Target::Label { .. } => query(&text(NODES_READ, target, capture))
                .param("keys", keys.iter().map(key_param).collect::<Vec<_>>()),
            Target::Type { .. } => page_query(target, capture, after, limit),
        };
        let mut rows = txn.execute(read).await?;
        let mut events = Vec::new();
        while let Some(row) = rows.next(txn.handle()).await? {
            let key = key_text(&key_of(&row)?);
            let Some(version) = versions.get(&key).copied() else {
                continue; // appeared after the page was selected: the trigger has it
            };
            match event(target, capture, &row, &key, version, db) {
                Ok(mut event) => {
                    event.source.mode = mode;
                    events.push(event);
                }
                Err(e) => written.failed.push(Failed {
                    key,
                    error: format!("{e:#}"),
                }),
            }
        }
        drop(rows);
        written.entries = outbox::write(&mut txn, &events).await?;
        written.ids = events.into_iter().map(|e| e.event_id).collect();
        Ok::<_, crate::error::Error>(written)
    };
    crate::capture::commit_or_roll_back(work.await, txn, "committing a page transaction").await
}

/// The capture's event for one page row at `version` (source: backfill).
///
/// # Errors
/// When the row's properties cannot become an event (a point property).
pub fn event(
    target: &Target,
    capture: &CaptureConfig,
    row: &Row,
    key: &str,
    version: i64,
    db: &str,
) -> crate::error::Result<ChangeEvent> {
    let props: BoltMap = row.get("props")?;
    let mut exclude = capture.exclude_properties.clone();
    if matches!(target, Target::Type { .. }) {
        exclude.push(capture.relationship_marker.clone());
    }
    let json = canonical::properties_json(&props, &exclude)?;
    let properties: BTreeMap<_, _> = parse_properties(&json)?;
    let labels: Vec<String> = row.get("labels").unwrap_or_default();
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    let mut event = ChangeEvent::node(key, &labels, Op::Upsert, version, crate::unix_ms());
    if let Target::Type { rel_type, .. } = target {
        event.kind = EntityKind::Relationship;
        event.relationship = Some(RelationshipEnds {
            rel_type: rel_type.clone(),
            start_key: row.get::<Option<String>>("start_key")?.unwrap_or_default(),
            end_key: row.get::<Option<String>>("end_key")?.unwrap_or_default(),
        });
    }
    event.properties = properties;
    event.source = Source {
        db: db.to_owned(),
        mode: CaptureMode::Backfill,
    };
    Ok(event)
}

/// A page as it stands, read without a lock and without bumping a counter (the audit,
/// [`crate::audit`]).
#[derive(Debug, Default)]
pub struct Observed {
    /// The entities of the page, each at the version its counter has now.
    pub events: Vec<ChangeEvent>,
    /// Entities of the page that cannot become an event.
    pub failed: Vec<Failed>,
    /// The last key of the page (where the next page starts); `None` when the page is
    /// empty.
    pub last: Option<serde_json::Value>,
}

/// The page after `after`, read only: keys and versions as [`select`] finds them, then
/// the properties serialized as the capture serializes them. A commit between the two
/// reads can pair a version with newer content: the audit looks again before it reports.
///
/// # Errors
/// When Neo4j fails or a key is neither a string nor an integer.
pub async fn observe(
    graph: &Graph,
    target: &Target,
    capture: &CaptureConfig,
    after: Option<&serde_json::Value>,
    limit: usize,
    db: &str,
) -> crate::error::Result<Observed> {
    let mut observed = Observed::default();
    let rows = match target {
        Target::Label { .. } => {
            let selected = select(graph, target, capture, after, limit).await?;
            observed.last = selected.last().map(|s| s.key.clone());
            if selected.is_empty() {
                return Ok(observed);
            }
            let versions: HashMap<String, i64> = selected
                .iter()
                .map(|s| (key_text(&s.key), s.version))
                .collect();
            let keys: Vec<BoltType> = selected.iter().map(|s| key_param(&s.key)).collect();
            let read = query(&text(NODES_READ, target, capture)).param("keys", keys);
            let mut rows = graph
                .execute(read)
                .await
                .with_context(|| format!("reading a page of {}", target.name()))?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().await? {
                let key = key_text(&key_of(&row)?);
                let version = versions.get(&key).copied().unwrap_or(0);
                out.push((row, key, version));
            }
            out
        }
        Target::Type { .. } => {
            let mut rows = graph
                .execute(page_query(target, capture, after, limit))
                .await
                .with_context(|| format!("reading a page of {}", target.name()))?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().await? {
                let key = key_of(&row)?;
                observed.last = Some(key.clone());
                let version = row.get("version").unwrap_or(0);
                out.push((row, key_text(&key), version));
            }
            out
        }
    };
    for (row, key, version) in rows {
        match event(target, capture, &row, &key, version, db) {
            Ok(event) => observed.events.push(event),
            Err(e) => observed.failed.push(Failed {
                key,
                error: format!("{e:#}"),
            }),
        }
    }
    Ok(observed)
}
