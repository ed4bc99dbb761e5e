use super::*;
use crate::event::{CaptureMode, EntityKind, Op, PropertyValue, RelationshipEnds, Source};
use std::collections::BTreeMap;

fn sample() -> ChangeEvent {
    let mut properties = BTreeMap::new();
    properties.insert("text".into(), PropertyValue::String("hello".into()));
    properties.insert("n".into(), PropertyValue::Long(7));
    properties.insert("score".into(), PropertyValue::Double(0.5));
    properties.insert("ok".into(), PropertyValue::Bool(true));
    properties.insert("none".into(), PropertyValue::Null);
    properties.insert(
        "tags".into(),
        PropertyValue::List(vec![
            PropertyValue::String("a".into()),
            PropertyValue::Long(2),
        ]),
    );
    ChangeEvent {
        event_id: "e-1".into(),
        kind: EntityKind::Relationship,
        key: "rel-1".into(),
        labels: vec![],
        removed_labels: vec![],
        relationship: Some(RelationshipEnds {
            rel_type: "MENTIONS".into(),
            start_key: "c1".into(),
            end_key: "e1".into(),
        }),
        op: Op::Upsert,
        version: 42,
        commit_time_ms: 1_700_000_000_123,
        properties,
        vector: Some(vec![0.25, -1.0, 3.5]),
        source: Source {
            db: "neo4j".into(),
            mode: CaptureMode::Outbox,
        },
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
    }
}

#[tokio::test]
async fn avro_wire_format_round_trips_every_field() {
    let codec = Codec::local();
    let event = sample();
    let bytes = codec.encode_change(&event, Format::Avro).await.unwrap();
    assert_eq!(bytes[0], 0, "magic byte");
    assert_eq!(
        u32::from_be_bytes(bytes[1..5].try_into().unwrap()),
        CHANGE_EVENT_ID
    );
    assert_eq!(codec.decode_change(&bytes).await.unwrap(), event);
}

/// A node that kept `Chunk` and left `Entity` in this change.
fn relabelled() -> ChangeEvent {
    ChangeEvent::node("c1", &["Chunk"], Op::Upsert, 7, 1_700_000_000_000)
        .with_removed_labels(&["Entity"])
        .with_property("text", PropertyValue::String("hello".into()))
}

#[tokio::test]
async fn removed_labels_round_trip_in_both_formats() {
    let codec = Codec::local();
    let event = relabelled();
    for format in [Format::Avro, Format::Json] {
        let bytes = codec.encode_change(&event, format).await.unwrap();
        let decoded = codec.decode_change(&bytes).await.unwrap();
        assert_eq!(decoded.removed_labels, vec!["Entity".to_owned()]);
        assert_eq!(decoded, event);
    }
}

/// What a relay of an earlier release wrote: the bundled schema of local id 1, which has
/// no `removed_labels`.
fn written_by_an_earlier_release(event: &ChangeEvent) -> Vec<u8> {
    let v1 = Schema::parse_str(CHANGE_EVENT_SCHEMA_V1).unwrap();
    assert!(
        !CHANGE_EVENT_SCHEMA_V1.contains("removed_labels"),
        "the schema of id 1 is the one before the field"
    );
    let apache_avro::types::Value::Record(fields) = avro::change_to_value(event) else {
        unreachable!()
    };
    let old: Vec<_> = fields
        .into_iter()
        .filter(|(name, _)| name != "removed_labels")
        .collect();
    write_wire(
        CHANGE_EVENT_V1_ID,
        &v1,
        apache_avro::types::Value::Record(old),
    )
    .unwrap()
}

#[tokio::test]
async fn an_event_without_removed_labels_decodes_in_both_formats() {
    let codec = Codec::local();
    let event = sample();
    assert_ne!(
        CHANGE_EVENT_ID, CHANGE_EVENT_V1_ID,
        "a new id for the new schema"
    );
    let avro = written_by_an_earlier_release(&event);
    assert_eq!(codec.decode_change(&avro).await.unwrap(), event);
    // Even for a node that did lose a label: an old writer cannot say so, the default is [].
    let old_node = written_by_an_earlier_release(&relabelled());
    let decoded = codec.decode_change(&old_node).await.unwrap();
    assert!(decoded.removed_labels.is_empty());
    assert_eq!(decoded.labels, vec!["Chunk".to_owned()]);

    let mut json = serde_json::to_value(&event).unwrap();
    json.as_object_mut()
        .unwrap()
        .remove("removed_labels")
        .unwrap();
    let bytes = serde_json::to_vec(&json).unwrap();
    assert_eq!(codec.decode_change(&bytes).await.unwrap(), event);
}

#[tokio::test]
async fn an_earlier_reader_skips_removed_labels() {
    let codec = Codec::local();
    let bytes = codec
        .encode_change(&relabelled(), Format::Avro)
        .await
        .unwrap();
    let v1 = Schema::parse_str(CHANGE_EVENT_SCHEMA_V1).unwrap();
    let mut body = &bytes[5..];
    let value = GenericDatumReader::builder(&codec.change_schema)
        .reader_schema(&v1)
        .build()
        .unwrap()
        .read_value(&mut body)
        .unwrap();
    let apache_avro::types::Value::Record(fields) = value else {
        unreachable!()
    };
    assert!(fields.iter().all(|(name, _)| name != "removed_labels"));
    assert!(fields
        .iter()
        .any(|(name, v)| name == "key" && *v == apache_avro::types::Value::String("c1".into())));
}

#[tokio::test]
async fn json_round_trips_and_is_detected_by_first_byte() {
    let codec = Codec::local();
    let event = sample();
    let bytes = codec.encode_change(&event, Format::Json).await.unwrap();
    assert_eq!(Codec::detect(&bytes).unwrap(), Format::Json);
    assert_eq!(codec.decode_change(&bytes).await.unwrap(), event);
}

#[tokio::test]
async fn state_round_trips_in_both_formats() {
    let codec = Codec::local();
    let state = sample().to_state().unwrap();
    for format in [Format::Avro, Format::Json] {
        let bytes = codec.encode_state(&state, format).await.unwrap();
        assert_eq!(codec.decode_state(&bytes).await.unwrap(), state);
    }
}

#[tokio::test]
async fn garbage_unknown_ids_and_truncation_are_poison() {
    let codec = Codec::local();
    let poison_kind = |r: Result<ChangeEvent, DecodeError>| match r {
        Err(DecodeError::Poison(p)) => p.kind,
        other => panic!("expected poison, got {other:?}"),
    };
    assert_eq!(
        poison_kind(codec.decode_change(b"not json").await),
        PoisonKind::Undecodable
    );
    assert_eq!(
        poison_kind(codec.decode_change(b"").await),
        PoisonKind::Undecodable
    );
    assert_eq!(
        poison_kind(codec.decode_change(b"{\"key\":1}").await),
        PoisonKind::Undecodable
    );
    assert_eq!(
        poison_kind(codec.decode_change(&[0, 0, 0, 0, 99, 1, 2]).await),
        PoisonKind::SchemaMismatch
    );
    let mut bytes = codec.encode_change(&sample(), Format::Avro).await.unwrap();
    bytes.truncate(bytes.len() / 2);
    assert_eq!(
        poison_kind(codec.decode_change(&bytes).await),
        PoisonKind::SchemaMismatch
    );
}

/// The bundled change-event schema plus one optional field, as a future writer adds it.
fn schema_with_added_field() -> Schema {
    let mut json: serde_json::Value = serde_json::from_str(CHANGE_EVENT_SCHEMA).unwrap();
    json["fields"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!(
            {"name": "tenant", "type": ["null", "string"], "default": null}
        ));
    Schema::parse_str(&json.to_string()).unwrap()
}

#[tokio::test]
async fn old_reader_reads_data_written_with_an_added_optional_field() {
    let new_schema = schema_with_added_field();
    let codec = Codec::local();
    codec.registry.add(7, new_schema.clone());
    let event = sample();
    let apache_avro::types::Value::Record(mut fields) = avro::change_to_value(&event) else {
        unreachable!()
    };
    fields.push((
        "tenant".into(),
        apache_avro::types::Value::Union(
            1,
            Box::new(apache_avro::types::Value::String("t1".into())),
        ),
    ));
    let bytes = write_wire(7, &new_schema, apache_avro::types::Value::Record(fields)).unwrap();
    assert_eq!(codec.decode_change(&bytes).await.unwrap(), event);
}

#[tokio::test]
async fn new_reader_reads_data_written_with_the_old_schema() {
    let old_codec = Codec::local();
    let bytes = old_codec
        .encode_change(&sample(), Format::Avro)
        .await
        .unwrap();
    let new_schema = schema_with_added_field();
    let mut body = &bytes[5..];
    let value = GenericDatumReader::builder(&old_codec.change_schema)
        .reader_schema(&new_schema)
        .build()
        .unwrap()
        .read_value(&mut body)
        .unwrap();
    let apache_avro::types::Value::Record(fields) = value else {
        unreachable!()
    };
    let tenant = fields.iter().find(|(name, _)| name == "tenant").unwrap();
    assert_eq!(
        tenant.1,
        apache_avro::types::Value::Union(0, Box::new(apache_avro::types::Value::Null))
    );
    let known: Vec<_> = fields
        .into_iter()
        .filter(|(name, _)| name != "tenant")
        .collect();
    assert_eq!(
        avro::change_from_value(apache_avro::types::Value::Record(known)).unwrap(),
        sample()
    );
}

/// A one-route Confluent-compatible registry on a real socket.
async fn serve_registry(id: u32, schema: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = socket.read(&mut buf).await.unwrap();
            let request = String::from_utf8_lossy(&buf[..n]).to_string();
            let (status, body) = if request.starts_with(&format!("GET /schemas/ids/{id} ")) {
                (
                    "200 OK",
                    serde_json::json!({ "schema": schema }).to_string(),
                )
            } else {
                ("404 Not Found", r#"{"error_code":40403}"#.to_owned())
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(response.as_bytes()).await.unwrap();
        }
    });
    format!("http://{addr}")
}

#[tokio::test]
async fn http_registry_resolves_unknown_ids_and_404_is_poison() {
    let url = serve_registry(31, schema_with_added_field().canonical_form()).await;
    let config = RegistryConfig {
        url: Some(url),
        local_schemas: Default::default(),
    };
    let codec = Codec::new(SchemaRegistry::from_config(&config).unwrap());
    let new_schema = schema_with_added_field();
    let apache_avro::types::Value::Record(mut fields) = avro::change_to_value(&sample()) else {
        unreachable!()
    };
    fields.push((
        "tenant".into(),
        apache_avro::types::Value::Union(0, Box::new(apache_avro::types::Value::Null)),
    ));
    let bytes = write_wire(31, &new_schema, apache_avro::types::Value::Record(fields)).unwrap();
    assert_eq!(codec.decode_change(&bytes).await.unwrap(), sample());
    let mut unknown = bytes.clone();
    unknown[4] = 32;
    assert!(matches!(
        codec.decode_change(&unknown).await,
        Err(DecodeError::Poison(PoisonError {
            kind: PoisonKind::SchemaMismatch,
            ..
        }))
    ));
}

#[tokio::test]
async fn unreachable_registry_is_retriable_not_poison() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let config = RegistryConfig {
        url: Some(url),
        local_schemas: Default::default(),
    };
    let codec = Codec::new(SchemaRegistry::from_config(&config).unwrap());
    assert!(matches!(
        codec.decode_change(&[0, 0, 0, 0, 40, 1, 2]).await,
        Err(DecodeError::RegistryUnavailable(_))
    ));
}

#[tokio::test]
async fn apoc_kafka_payload_wrapper_is_accepted() {
    let codec = Codec::local();
    let event = sample();
    let wrapped = serde_json::json!({ "payload": event }).to_string();
    assert_eq!(
        codec.decode_change(wrapped.as_bytes()).await.unwrap(),
        event
    );
}

/// Randomised mutation of valid records (bit flips, truncation, splices, random bytes):
/// the decoder must answer every input with an event or a poison error, never panic or
/// hang. Not coverage-guided (see docs/fuzzing.md); fixed seed, so failures repeat.
#[tokio::test]
async fn mutated_records_never_panic_the_decoder() {
    use rand::{Rng, SeedableRng};
    let codec = Codec::local();
    let seeds = [
        codec.encode_change(&sample(), Format::Avro).await.unwrap(),
        codec.encode_change(&sample(), Format::Json).await.unwrap(),
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let (mut ok, mut poison) = (0, 0);
    for i in 0..20_000 {
        let mut bytes = seeds[i % 2].clone();
        for _ in 0..rng.random_range(1..6) {
            match rng.random_range(0..4) {
                0 => {
                    let at = rng.random_range(0..bytes.len());
                    bytes[at] ^= 1 << rng.random_range(0..8);
                }
                1 => bytes.truncate(rng.random_range(0..bytes.len())),
                2 => {
                    let at = rng.random_range(0..=bytes.len());
                    let junk: Vec<u8> =
                        (0..rng.random_range(1..16)).map(|_| rng.random()).collect();
                    bytes.splice(at..at, junk);
                }
                _ => bytes = (0..rng.random_range(0..64)).map(|_| rng.random()).collect(),
            }
            if bytes.is_empty() {
                break;
            }
        }
        match codec.decode_change(&bytes).await {
            Ok(_) => ok += 1,
            Err(DecodeError::Poison(_)) => poison += 1,
            Err(e) => panic!("local registry cannot be unavailable: {e}"),
        }
    }
    assert_eq!(ok + poison, 20_000);
    assert!(poison > 10_000, "most mutations are caught: {poison}");
}
