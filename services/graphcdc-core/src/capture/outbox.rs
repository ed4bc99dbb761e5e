//! Outbox entries written by graphcdc itself, in the caller's transaction: the backfill's
//! pages ([`super::backfill::page`]), the audit's repair ([`crate::audit::repair`]) and the
//! relay's context re-emit ([`super::context`]) write them in the transaction that bumped each entity's `CdcVersion` counter, as the
//! trigger does. The relay ([`super::relay`]) then publishes them like the trigger's
//! entries: fenced by its lease, and in version order with the key's other entries, so
//! a live change committed after the bump is always published after it and graph.state
//! never goes backwards. The entry's `source` (the event's capture mode) tells consumers
//! a backfill or a repair from a live change.

use crate::error::Context;
use crate::event::{CaptureMode, ChangeEvent, EntityKind, Op};
use neo4rs::{query, BoltType, Txn};
use std::collections::HashMap;

const WRITE: &str = include_str!("../../../../deploy/neo4j/queries/outbox-write.cypher");

/// Entries per statement.
const CHUNK: usize = 500;

/// The `source` an entry carries for `mode` (absent on the trigger's own entries).
pub fn source_name(mode: CaptureMode) -> &'static str {
    match mode {
        CaptureMode::Outbox => "outbox",
        CaptureMode::Direct => "direct",
        CaptureMode::Backfill => "backfill",
        CaptureMode::Repair => "repair",
    }
}

/// The capture mode of an entry's `source` (`None`, or one written by no version of
/// graphcdc: the trigger's, [`CaptureMode::Outbox`]).
pub fn source_mode(source: Option<&str>) -> CaptureMode {
    match source {
        Some("backfill") => CaptureMode::Backfill,
        Some("repair") => CaptureMode::Repair,
        Some("direct") => CaptureMode::Direct,
        _ => CaptureMode::Outbox,
    }
}

/// The outbox entry of `event`: properties as the canonical JSON the trigger writes
/// (the event's, already in that form: [`super::canonical`]).
///
/// # Errors
/// When the properties cannot be serialized.
pub fn entry(event: &ChangeEvent) -> crate::error::Result<HashMap<String, BoltType>> {
    let properties = match event.op {
        Op::Upsert => Some(
            serde_json::to_string(&event.properties)
                .context("serializing an outbox entry's properties")?,
        ),
        Op::Delete => None,
    };
    Ok(entry_with_json(event, properties))
}

/// The outbox entry of `event` with `properties` already serialized (canonical JSON, or
/// `None` for a delete); the event's own properties are not read.
pub fn entry_with_json(
    event: &ChangeEvent,
    properties: Option<String>,
) -> HashMap<String, BoltType> {
    let null = || BoltType::Null(neo4rs::BoltNull);
    let kind = match event.kind {
        EntityKind::Node => "node",
        EntityKind::Relationship => "relationship",
    };
    let op = match event.op {
        Op::Upsert => "upsert",
        Op::Delete => "delete",
    };
    let properties = properties.map_or_else(null, Into::into);
    let ends = event.relationship.as_ref();
    HashMap::from([
        ("event_id".to_owned(), event.event_id.as_str().into()),
        ("kind".to_owned(), kind.into()),
        ("key".to_owned(), event.key.as_str().into()),
        ("labels".to_owned(), event.labels.clone().into()),
        ("op".to_owned(), op.into()),
        ("version".to_owned(), event.version.into()),
        ("properties".to_owned(), properties),
        (
            "rel_type".to_owned(),
            ends.map_or_else(null, |e| e.rel_type.as_str().into()),
        ),
        (
            "start_key".to_owned(),
            ends.map_or_else(null, |e| e.start_key.as_str().into()),
        ),
        (
            "end_key".to_owned(),
            ends.map_or_else(null, |e| e.end_key.as_str().into()),
        ),
        ("db".to_owned(), event.source.db.as_str().into()),
        ("source".to_owned(), source_name(event.source.mode).into()),
    ])
}

/// Write the outbox entries of `events` inside `txn` (which bumped their counters);
/// returns how many were written.
///
/// # Errors
/// When Neo4j fails (the caller rolls the transaction back).
pub async fn write(txn: &mut Txn, events: &[ChangeEvent]) -> crate::error::Result<usize> {
    let entries = events
        .iter()
        .map(entry)
        .collect::<crate::error::Result<Vec<_>>>()?;
    write_entries(txn, entries).await
}

/// Write `entries` ([`entry`], [`entry_with_json`]) inside `txn`; returns how many were
/// written.
///
/// # Errors
/// When Neo4j fails (the caller rolls the transaction back).
pub async fn write_entries(
    txn: &mut Txn,
    entries: Vec<HashMap<String, BoltType>>,
) -> crate::error::Result<usize> {
    let written = entries.len();
    let mut entries = entries.into_iter().peekable();
    while entries.peek().is_some() {
        let rows: Vec<_> = entries.by_ref().take(CHUNK).collect();
        txn.run(query(WRITE).param("rows", rows))
            .await
            .context("writing outbox entries")?;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{outbox_event, OutboxRow};
    use crate::event::{PropertyValue, RelationshipEnds, Source};

    fn text(entry: &HashMap<String, BoltType>, field: &str) -> Option<String> {
        match &entry[field] {
            BoltType::String(s) => Some(s.value.clone()),
            _ => None,
        }
    }

    /// What this module writes, read back by the relay, is the same event (mode kept).
    #[test]
    fn an_entry_reads_back_as_its_event() {
        let mut event = ChangeEvent::node("m-1", &[], Op::Upsert, 7, 1);
        event.kind = EntityKind::Relationship;
        event.relationship = Some(RelationshipEnds {
            rel_type: "MENTIONS".into(),
            start_key: "c1".into(),
            end_key: "e1".into(),
        });
        event
            .properties
            .insert("w".into(), PropertyValue::Double(0.5));
        event.source = Source {
            db: "neo4j".into(),
            mode: CaptureMode::Backfill,
        };
        let e = entry(&event).unwrap();
        let row = OutboxRow {
            event_id: text(&e, "event_id").unwrap(),
            kind: text(&e, "kind").unwrap(),
            key: text(&e, "key").unwrap(),
            labels: Some(vec![]),
            removed_labels: None,
            changed: Some(vec![]),
            op: text(&e, "op").unwrap(),
            version: 7,
            commit_time_ms: 1,
            properties: text(&e, "properties"),
            rel_type: text(&e, "rel_type"),
            start_key: text(&e, "start_key"),
            end_key: text(&e, "end_key"),
            db: text(&e, "db"),
            source: text(&e, "source"),
            traceparent: None,
        };
        let back = outbox_event(row).unwrap();
        assert_eq!(
            (back.kind, back.op, back.version, back.source.mode),
            (
                EntityKind::Relationship,
                Op::Upsert,
                7,
                CaptureMode::Backfill
            )
        );
        assert_eq!(back.relationship, event.relationship);
        assert_eq!(back.properties, event.properties);
        let mut delete = ChangeEvent::node("d-1", &["Doc"], Op::Delete, 9, 1);
        delete.source.mode = CaptureMode::Repair;
        let e = entry(&delete).unwrap();
        assert_eq!(text(&e, "properties"), None);
        assert_eq!(
            source_mode(text(&e, "source").as_deref()),
            CaptureMode::Repair
        );
        assert_eq!(source_mode(None), CaptureMode::Outbox);
    }
}
