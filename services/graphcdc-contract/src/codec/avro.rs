//! Conversion between the event model and Avro values of `schemas/*.avsc`.

use crate::event::{
    CaptureMode, ChangeEvent, EntityKind, EntityState, Op, PropertyValue, RelationshipEnds, Source,
};
use apache_avro::types::Value;
use std::collections::{BTreeMap, HashMap};

/// Avro value of a change event, in the field order of `change-event.avsc`.
pub fn change_to_value(event: &ChangeEvent) -> Value {
    Value::Record(vec![
        ("event_id".into(), Value::String(event.event_id.clone())),
        ("kind".into(), kind_value(event.kind)),
        ("key".into(), Value::String(event.key.clone())),
        ("labels".into(), labels_value(&event.labels)),
        (
            "relationship".into(),
            relationship_value(&event.relationship),
        ),
        ("op".into(), op_value(event.op)),
        ("version".into(), Value::Long(event.version)),
        ("commit_time_ms".into(), Value::Long(event.commit_time_ms)),
        ("properties".into(), properties_value(&event.properties)),
        ("vector".into(), vector_value(&event.vector)),
        (
            "source".into(),
            Value::Record(vec![
                ("db".into(), Value::String(event.source.db.clone())),
                ("mode".into(), mode_value(event.source.mode)),
            ]),
        ),
        (
            "traceparent".into(),
            optional_string(event.traceparent.as_deref()),
        ),
        ("removed_labels".into(), labels_value(&event.removed_labels)),
    ])
}

/// Avro value of an entity state, in the field order of `entity-state.avsc`.
pub fn state_to_value(state: &EntityState) -> Value {
    Value::Record(vec![
        ("kind".into(), kind_value(state.kind)),
        ("key".into(), Value::String(state.key.clone())),
        ("labels".into(), labels_value(&state.labels)),
        (
            "relationship".into(),
            relationship_value(&state.relationship),
        ),
        ("version".into(), Value::Long(state.version)),
        ("commit_time_ms".into(), Value::Long(state.commit_time_ms)),
        ("properties".into(), properties_value(&state.properties)),
        ("vector".into(), vector_value(&state.vector)),
    ])
}

/// Change event from an Avro value already resolved against the reader schema.
pub fn change_from_value(value: Value) -> Result<ChangeEvent, String> {
    let mut fields = record_fields(value)?;
    let source = record_fields(take(&mut fields, "source")?)?.into_iter();
    let source: HashMap<String, Value> = source.collect();
    Ok(ChangeEvent {
        event_id: string(take(&mut fields, "event_id")?)?,
        kind: kind_from(take(&mut fields, "kind")?)?,
        key: string(take(&mut fields, "key")?)?,
        labels: labels_from(take(&mut fields, "labels")?)?,
        // Data of older writers gets the schema's default ([]) from resolution.
        removed_labels: labels_from(take(&mut fields, "removed_labels")?)?,
        relationship: relationship_from(take(&mut fields, "relationship")?)?,
        op: match symbol(take(&mut fields, "op")?)?.as_str() {
            "upsert" => Op::Upsert,
            "delete" => Op::Delete,
            other => return Err(format!("unknown op {other:?}")),
        },
        version: long(take(&mut fields, "version")?)?,
        commit_time_ms: long(take(&mut fields, "commit_time_ms")?)?,
        properties: properties_from(take(&mut fields, "properties")?)?,
        vector: vector_from(take(&mut fields, "vector")?)?,
        source: Source {
            db: string(source.get("db").cloned().ok_or("source.db missing")?)?,
            mode: mode_from(source.get("mode").cloned().ok_or("source.mode missing")?)?,
        },
        traceparent: optional_string_from(take(&mut fields, "traceparent")?)?,
    })
}

/// Entity state from an Avro value already resolved against the reader schema.
pub fn state_from_value(value: Value) -> Result<EntityState, String> {
    let mut fields = record_fields(value)?;
    Ok(EntityState {
        kind: kind_from(take(&mut fields, "kind")?)?,
        key: string(take(&mut fields, "key")?)?,
        labels: labels_from(take(&mut fields, "labels")?)?,
        relationship: relationship_from(take(&mut fields, "relationship")?)?,
        version: long(take(&mut fields, "version")?)?,
        commit_time_ms: long(take(&mut fields, "commit_time_ms")?)?,
        properties: properties_from(take(&mut fields, "properties")?)?,
        vector: vector_from(take(&mut fields, "vector")?)?,
    })
}

fn kind_value(kind: EntityKind) -> Value {
    match kind {
        EntityKind::Node => Value::Enum(0, "node".into()),
        EntityKind::Relationship => Value::Enum(1, "relationship".into()),
    }
}

fn op_value(op: Op) -> Value {
    match op {
        Op::Upsert => Value::Enum(0, "upsert".into()),
        Op::Delete => Value::Enum(1, "delete".into()),
    }
}

fn mode_value(mode: CaptureMode) -> Value {
    let (index, symbol) = match mode {
        CaptureMode::Outbox => (0, "outbox"),
        CaptureMode::Direct => (1, "direct"),
        CaptureMode::Backfill => (2, "backfill"),
        CaptureMode::Repair => (3, "repair"),
    };
    Value::Enum(index, symbol.into())
}

fn labels_value(labels: &[String]) -> Value {
    Value::Array(labels.iter().cloned().map(Value::String).collect())
}

fn optional_string(value: Option<&str>) -> Value {
    match value {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(s) => Value::Union(1, Box::new(Value::String(s.to_owned()))),
    }
}

fn relationship_value(ends: &Option<RelationshipEnds>) -> Value {
    match ends {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(ends) => Value::Union(
            1,
            Box::new(Value::Record(vec![
                ("type".into(), Value::String(ends.rel_type.clone())),
                ("start_key".into(), Value::String(ends.start_key.clone())),
                ("end_key".into(), Value::String(ends.end_key.clone())),
            ])),
        ),
    }
}

fn vector_value(vector: &Option<Vec<f32>>) -> Value {
    match vector {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(v) => Value::Union(
            1,
            Box::new(Value::Array(v.iter().map(|x| Value::Float(*x)).collect())),
        ),
    }
}

/// Union branch order: null, boolean, long, double, string, array.
fn property_value(value: &PropertyValue) -> Value {
    let (index, inner) = match value {
        PropertyValue::Null => (0, Value::Null),
        PropertyValue::Bool(b) => (1, Value::Boolean(*b)),
        PropertyValue::Long(n) => (2, Value::Long(*n)),
        PropertyValue::Double(x) => (3, Value::Double(*x)),
        PropertyValue::String(s) => (4, Value::String(s.clone())),
        PropertyValue::List(items) => (5, Value::Array(items.iter().map(property_value).collect())),
    };
    Value::Union(index, Box::new(inner))
}

fn properties_value(properties: &BTreeMap<String, PropertyValue>) -> Value {
    Value::Map(
        properties
            .iter()
            .map(|(k, v)| (k.clone(), property_value(v)))
            .collect(),
    )
}

fn record_fields(value: Value) -> Result<Vec<(String, Value)>, String> {
    match value {
        Value::Record(fields) => Ok(fields),
        other => Err(format!("expected a record, got {other:?}")),
    }
}

fn take(fields: &mut [(String, Value)], name: &str) -> Result<Value, String> {
    fields
        .iter_mut()
        .find(|(n, _)| n == name)
        .map(|(_, v)| std::mem::replace(v, Value::Null))
        .ok_or_else(|| format!("field {name:?} missing"))
}

fn unwrap_union(value: Value) -> Value {
    match value {
        Value::Union(_, inner) => *inner,
        other => other,
    }
}

fn string(value: Value) -> Result<String, String> {
    match unwrap_union(value) {
        Value::String(s) => Ok(s),
        other => Err(format!("expected a string, got {other:?}")),
    }
}

fn symbol(value: Value) -> Result<String, String> {
    match value {
        Value::Enum(_, s) | Value::String(s) => Ok(s),
        other => Err(format!("expected an enum symbol, got {other:?}")),
    }
}

fn long(value: Value) -> Result<i64, String> {
    match unwrap_union(value) {
        Value::Long(n) => Ok(n),
        Value::Int(n) => Ok(n.into()),
        other => Err(format!("expected a long, got {other:?}")),
    }
}

fn kind_from(value: Value) -> Result<EntityKind, String> {
    match symbol(value)?.as_str() {
        "node" => Ok(EntityKind::Node),
        "relationship" => Ok(EntityKind::Relationship),
        other => Err(format!("unknown entity kind {other:?}")),
    }
}

fn mode_from(value: Value) -> Result<CaptureMode, String> {
    match symbol(value)?.as_str() {
        "outbox" => Ok(CaptureMode::Outbox),
        "direct" => Ok(CaptureMode::Direct),
        "backfill" => Ok(CaptureMode::Backfill),
        "repair" => Ok(CaptureMode::Repair),
        other => Err(format!("unknown capture mode {other:?}")),
    }
}

fn labels_from(value: Value) -> Result<Vec<String>, String> {
    match value {
        Value::Array(items) => items.into_iter().map(string).collect(),
        other => Err(format!("expected labels array, got {other:?}")),
    }
}

fn optional_string_from(value: Value) -> Result<Option<String>, String> {
    match unwrap_union(value) {
        Value::Null => Ok(None),
        other => string(other).map(Some),
    }
}

fn relationship_from(value: Value) -> Result<Option<RelationshipEnds>, String> {
    match unwrap_union(value) {
        Value::Null => Ok(None),
        record => {
            let mut fields = record_fields(record)?;
            Ok(Some(RelationshipEnds {
                rel_type: string(take(&mut fields, "type")?)?,
                start_key: string(take(&mut fields, "start_key")?)?,
                end_key: string(take(&mut fields, "end_key")?)?,
            }))
        }
    }
}

fn vector_from(value: Value) -> Result<Option<Vec<f32>>, String> {
    match unwrap_union(value) {
        Value::Null => Ok(None),
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::Float(x) => Ok(x),
                Value::Double(x) => Ok(x as f32),
                other => Err(format!("expected a float in vector, got {other:?}")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        other => Err(format!("expected a vector, got {other:?}")),
    }
}

fn property_from(value: Value) -> Result<PropertyValue, String> {
    Ok(match unwrap_union(value) {
        Value::Null => PropertyValue::Null,
        Value::Boolean(b) => PropertyValue::Bool(b),
        Value::Long(n) => PropertyValue::Long(n),
        Value::Int(n) => PropertyValue::Long(n.into()),
        Value::Double(x) => PropertyValue::Double(x),
        Value::Float(x) => PropertyValue::Double(x.into()),
        Value::String(s) => PropertyValue::String(s),
        Value::Array(items) => PropertyValue::List(
            items
                .into_iter()
                .map(property_from)
                .collect::<Result<_, _>>()?,
        ),
        other => return Err(format!("unsupported property value {other:?}")),
    })
}

fn properties_from(value: Value) -> Result<BTreeMap<String, PropertyValue>, String> {
    match value {
        Value::Map(map) => map
            .into_iter()
            .map(|(k, v)| property_from(v).map(|v| (k, v)))
            .collect(),
        other => Err(format!("expected a properties map, got {other:?}")),
    }
}
