use super::*;

fn mapper() -> Mapper {
    let mappings = mappings_from_toml(
        r#"
        [[mappings]]
        label = "Chunk"
        collection = "chunks"
        dimension = 3
        exclude = ["secret"]
        rename = { text = "content" }

        [[mappings]]
        relationship_type = "MENTIONS"
        collection = "mentions"
        dimension = 3
        vector_property = "embedding"
        "#,
    )
    .unwrap();
    Mapper::new(mappings, 200)
}

fn chunk(version: i64) -> ChangeEvent {
    ChangeEvent::node("c1", &["Chunk"], Op::Upsert, version, 1000)
        .with_property("text", PropertyValue::String("hello".into()))
        .with_property("secret", PropertyValue::String("x".into()))
        .with_vector(vec![1.0, 0.0, 0.5])
}

fn poison_kind(event: &ChangeEvent) -> PoisonKind {
    mapper().map(event).unwrap_err().kind
}

#[test]
fn upsert_maps_payload_with_reserved_fields_and_stable_id() {
    let writes = mapper().map(&chunk(4)).unwrap();
    assert_eq!(writes.len(), 1);
    let w = &writes[0];
    assert_eq!(w.collection, "chunks");
    assert_eq!(w.id, point_id("chunks", "c1"));
    assert_eq!(w.id, point_id("chunks", "c1"), "ids are repeatable");
    assert_ne!(w.id, point_id("other", "c1"));
    assert_eq!(w.payload["content"], "hello");
    assert!(!w.payload.contains_key("secret"));
    assert!(!w.payload.contains_key("text"));
    assert_eq!(w.payload[VERSION_FIELD], 4);
    assert_eq!(w.payload[KEY_FIELD], "c1");
    assert_eq!(w.payload[DELETED_FIELD], false);
    assert_eq!(w.payload[HASH_FIELD], w.hash.as_str());
    assert_eq!(w.hash.len(), 32);
}

#[test]
fn hash_follows_content_not_version() {
    let a = mapper().map(&chunk(1)).unwrap().remove(0);
    let b = mapper().map(&chunk(2)).unwrap().remove(0);
    assert_eq!(a.hash, b.hash);
    let changed = chunk(3).with_property("text", PropertyValue::String("bye".into()));
    assert_ne!(mapper().map(&changed).unwrap()[0].hash, a.hash);
    let moved = chunk(3).with_vector(vec![0.0, 1.0, 0.5]);
    assert_ne!(mapper().map(&moved).unwrap()[0].hash, a.hash);
}

#[test]
fn delete_is_a_tombstone_without_vector() {
    let event = ChangeEvent::node("c1", &["Chunk"], Op::Delete, 9, 1000);
    let w = mapper().map(&event).unwrap().remove(0);
    assert!(w.is_tombstone());
    assert_eq!(w.payload[DELETED_FIELD], true);
    assert_eq!(w.version, 9);
}

#[test]
fn unmapped_labels_give_no_writes() {
    let event = ChangeEvent::node("f1", &["File"], Op::Upsert, 1, 1000);
    assert!(mapper().map(&event).unwrap().is_empty());
}

#[test]
fn relationship_takes_vector_from_property() {
    let mut event = ChangeEvent::node("r1", &[], Op::Upsert, 1, 1000).with_property(
        "embedding",
        PropertyValue::List(vec![
            PropertyValue::Double(0.1),
            PropertyValue::Long(1),
            PropertyValue::Double(0.3),
        ]),
    );
    event.kind = EntityKind::Relationship;
    event.relationship = Some(crate::event::RelationshipEnds {
        rel_type: "MENTIONS".into(),
        start_key: "c1".into(),
        end_key: "e1".into(),
    });
    let w = mapper().map(&event).unwrap().remove(0);
    assert_eq!(w.collection, "mentions");
    assert_eq!(w.vector, Some(vec![0.1, 1.0, 0.3]));
    assert!(!w.payload.contains_key("embedding"));
}

#[test]
fn poison_classes() {
    assert_eq!(
        poison_kind(&chunk(1).with_vector(vec![1.0])),
        PoisonKind::VectorDimension
    );
    assert_eq!(
        poison_kind(&chunk(1).with_vector(vec![1.0, f32::NAN, 0.0])),
        PoisonKind::NonFiniteVector
    );
    assert_eq!(
        poison_kind(&chunk(1).with_vector(vec![1.0, f32::INFINITY, 0.0])),
        PoisonKind::NonFiniteVector
    );
    let mut no_vector = chunk(1);
    no_vector.vector = None;
    assert_eq!(poison_kind(&no_vector), PoisonKind::VectorDimension);
    let mut no_key = chunk(1);
    no_key.key.clear();
    assert_eq!(poison_kind(&no_key), PoisonKind::MissingKey);
    assert_eq!(poison_kind(&chunk(-1)), PoisonKind::InvalidVersion);
    assert_eq!(poison_kind(&chunk(1 << 53)), PoisonKind::InvalidVersion);
    let big = chunk(1).with_property("text", PropertyValue::String("x".repeat(500)));
    assert_eq!(poison_kind(&big), PoisonKind::PayloadTooLarge);
}

#[test]
fn key_falls_back_to_key_property() {
    let mut event = chunk(1).with_property("uuid", PropertyValue::String("from-prop".into()));
    event.key.clear();
    assert_eq!(mapper().map(&event).unwrap()[0].key, "from-prop");
}

/// Random property maps (any value kind, NaN/∞ doubles, nesting, long strings) either map
/// to writes whose payload serialises, or are poison: never a panic.
#[test]
fn random_properties_map_or_poison_never_panic() {
    use rand::{Rng, SeedableRng};
    fn value(rng: &mut rand::rngs::StdRng, depth: u32) -> PropertyValue {
        match rng.random_range(0..7) {
            0 => PropertyValue::Null,
            1 => PropertyValue::Bool(rng.random()),
            2 => PropertyValue::Long(rng.random()),
            3 => PropertyValue::Double(
                [f64::NAN, f64::INFINITY, -0.0, 1e308, rng.random()][rng.random_range(0..5)],
            ),
            4 => PropertyValue::String("é\u{0}x".repeat(rng.random_range(0..50))),
            _ if depth < 3 => PropertyValue::List(
                (0..rng.random_range(0..5))
                    .map(|_| value(rng, depth + 1))
                    .collect(),
            ),
            _ => PropertyValue::Null,
        }
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mapper = mapper();
    for i in 0..5_000 {
        let mut event = chunk(rng.random_range(-2..10));
        for p in 0..rng.random_range(0..8) {
            let name = if p == 0 {
                "text".to_owned()
            } else {
                format!("p{p}")
            };
            event = event.with_property(&name, value(&mut rng, 0));
        }
        if i % 3 == 0 {
            event.vector = Some(
                (0..rng.random_range(0..5))
                    .map(|_| rng.random::<f32>() * 1e38)
                    .collect(),
            );
        }
        if let Ok(writes) = mapper.map(&event) {
            for w in writes {
                serde_json::to_string(&w.payload).expect("payload serialises");
                assert_eq!(w.hash.len(), 32);
            }
        }
    }
}

/// Chunk and Entity mappings, as in the default trigger's captured labels.
fn two_label_mapper() -> Mapper {
    let mappings = mappings_from_toml(
        r#"
        [[mappings]]
        label = "Chunk"
        collection = "chunks"
        dimension = 3

        [[mappings]]
        label = "Entity"
        collection = "entities"
        dimension = 3
        "#,
    )
    .unwrap();
    Mapper::new(mappings, 200)
}

#[test]
fn a_lost_label_gets_a_tombstone_of_the_same_version_in_its_collection() {
    // [Chunk, Entity] lost Entity: the trigger's upsert carries labels [Chunk].
    let event = ChangeEvent::node("n1", &["Chunk"], Op::Upsert, 6, 1000)
        .with_removed_labels(&["Entity"])
        .with_property("text", PropertyValue::String("kept".into()))
        .with_vector(vec![1.0, 0.0, 0.5]);
    let writes = two_label_mapper().map(&event).unwrap();
    assert_eq!(writes.len(), 2, "{writes:?}");
    let kept = writes.iter().find(|w| w.collection == "chunks").unwrap();
    assert!(!kept.is_tombstone());
    assert_eq!(
        (kept.version, kept.payload["text"].as_str()),
        (6, Some("kept"))
    );
    let gone = writes.iter().find(|w| w.collection == "entities").unwrap();
    assert!(gone.is_tombstone());
    assert_eq!(gone.id, point_id("entities", "n1"));
    assert_eq!(
        gone.version, 6,
        "the version of the change that removed the label"
    );
    assert_eq!(gone.payload[DELETED_FIELD], true);
    assert_eq!(gone.payload[VERSION_FIELD], 6);
    assert!(
        !gone.payload.contains_key("text"),
        "a tombstone has no content"
    );

    // Without the field (an older producer) the lost label's point is left alone.
    let mut unaware = event.clone();
    unaware.removed_labels.clear();
    let writes = two_label_mapper().map(&unaware).unwrap();
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].collection, "chunks");
}

#[test]
fn removed_labels_never_override_a_kept_label_nor_touch_relationships() {
    // Contradictory input: the label is both kept and removed; the upsert wins.
    let event = ChangeEvent::node("n1", &["Chunk", "Entity"], Op::Upsert, 2, 1000)
        .with_removed_labels(&["Entity", "Unmapped"])
        .with_vector(vec![1.0, 0.0, 0.5]);
    let writes = two_label_mapper().map(&event).unwrap();
    assert_eq!(writes.len(), 2);
    assert!(writes.iter().all(|w| !w.is_tombstone()));
    // A relationship event never maps through labels.
    let mut rel = event.clone();
    rel.kind = EntityKind::Relationship;
    assert!(two_label_mapper().map(&rel).unwrap().is_empty());
    // A lost label alone (the node kept no mapped label) tombstones just that collection.
    let only =
        ChangeEvent::node("n2", &["Other"], Op::Upsert, 3, 1000).with_removed_labels(&["Chunk"]);
    let writes = two_label_mapper().map(&only).unwrap();
    assert_eq!(writes.len(), 1);
    assert!(writes[0].is_tombstone() && writes[0].collection == "chunks");
}

/// The content hash is stored in every point (`cdc_hash`) and compared by the
/// reconciler: its value must never change for the same content. Expected values
/// computed independently (Python hashlib over name, 0, JSON text, 0 per field, then the
/// vector's little-endian f32 bytes).
#[test]
fn content_hash_keeps_its_stored_values() {
    let fields: BTreeMap<String, Value> = [
        ("n".to_owned(), serde_json::json!(-42)),
        ("tags".to_owned(), serde_json::json!(["a", 1.5, null, true])),
        ("text".to_owned(), serde_json::json!("héllo \"q\"\n")),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        content_hash(&fields, &[0.5, -1.25, 3.0]),
        "0307d22d1763fbd7585469efe73068e7"
    );
    assert_eq!(
        content_hash(&BTreeMap::new(), &[]),
        "e3b0c44298fc1c149afbf4c8996fb924"
    );
    // A 384-d vector spans several of the hasher's buffer fills: same as one update.
    let vector: Vec<f32> = (0..384).map(|i| i as f32 * 0.01 - 1.0).collect();
    let mut one_update = Sha256::new();
    for (name, value) in &fields {
        one_update.update(format!("{name}\0{value}\0"));
    }
    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
    one_update.update(&bytes);
    let expected: String = one_update.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(content_hash(&fields, &vector), expected);
}
