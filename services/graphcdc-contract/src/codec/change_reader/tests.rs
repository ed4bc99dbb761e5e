use super::*;
use crate::codec::{Codec, DecodeError, Format};
use rand::{Rng, SeedableRng};

/// Decode `bytes` both ways; both must succeed with the same event or both be poison.
async fn both_ways(codec: &Codec, bytes: &[u8]) -> Option<ChangeEvent> {
    let fast = codec.decode_change(bytes).await;
    let generic = codec.decode_change_generic(bytes).await;
    match (fast, generic) {
        // Debug text compares floats bit for bit (NaN, -0.0) where `==` cannot.
        (Ok(fast), Ok(generic)) => {
            assert_eq!(format!("{fast:?}"), format!("{generic:?}"));
            Some(fast)
        }
        (Err(DecodeError::Poison(_)), Err(DecodeError::Poison(_))) => None,
        (fast, generic) => panic!(
            "the readers disagree on {} bytes {bytes:?}:\nschema-specific: {fast:?}\ngeneric: {generic:?}",
            bytes.len()
        ),
    }
}

fn relationship(key: &str) -> ChangeEvent {
    let mut event = ChangeEvent::node(key, &[], Op::Upsert, 3, 1_700_000_000_000);
    event.kind = EntityKind::Relationship;
    event.relationship = Some(RelationshipEnds {
        rel_type: "MENTIONS".into(),
        start_key: "chunk-1".into(),
        end_key: "entity-9".into(),
    });
    event.with_property("weight", PropertyValue::Double(0.75))
}

/// Hand-picked events covering every field and branch of the schema.
fn cases() -> Vec<ChangeEvent> {
    let mut delete = ChangeEvent::node("gone", &["Chunk"], Op::Delete, 9, 1);
    delete.source.mode = CaptureMode::Repair;
    let mut backfill = ChangeEvent::node("b", &["Chunk", "Entity"], Op::Upsert, 0, 0)
        .with_vector(vec![0.0, -0.0, f32::MIN_POSITIVE, f32::MAX, f32::MIN]);
    backfill.source.mode = CaptureMode::Backfill;
    backfill.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
    let mut direct = relationship("rel-direct");
    direct.source.mode = CaptureMode::Direct;
    direct.op = Op::Delete;
    direct.properties.clear();
    let mut empty = ChangeEvent::node("", &[], Op::Upsert, 1, 1);
    empty.event_id = String::new();
    empty.source.db = String::new();
    vec![
        ChangeEvent::node("c1", &["Chunk"], Op::Upsert, 1, 1_700_000_000_000)
            .with_property("text", PropertyValue::String("hello".into()))
            .with_vector((0..384).map(|i| i as f32 / 384.0 - 0.5).collect()),
        ChangeEvent::node("c2", &["Chunk"], Op::Upsert, 2, 1_700_000_000_001)
            .with_property("text", PropertyValue::String("no vector".into())),
        delete,
        relationship("rel-1"),
        direct,
        ChangeEvent::node("c3", &["Chunk"], Op::Upsert, 7, 1_700_000_000_000)
            .with_removed_labels(&["Entity", "Draft"])
            .with_property("title", PropertyValue::String("kept Chunk".into())),
        ChangeEvent::node("ключ-😀", &["Ünïcode", "标签"], Op::Upsert, 5, 5)
            .with_property("名前", PropertyValue::String("Grüße, 世界 🌍".into()))
            .with_property(
                "émoji",
                PropertyValue::List(vec![PropertyValue::String("🚀".into())]),
            ),
        ChangeEvent::node("numbers", &["Chunk"], Op::Upsert, (1 << 53) - 1, i64::MAX)
            .with_property("min", PropertyValue::Long(i64::MIN))
            .with_property("max", PropertyValue::Long(i64::MAX))
            .with_property("negative", PropertyValue::Long(-1))
            .with_property("tiny", PropertyValue::Double(-f64::MIN_POSITIVE))
            .with_property("huge", PropertyValue::Double(f64::MAX))
            .with_property("neg_zero", PropertyValue::Double(-0.0))
            .with_property("null", PropertyValue::Null)
            .with_property("flag", PropertyValue::Bool(false))
            .with_property(
                "list",
                PropertyValue::List(vec![
                    PropertyValue::Null,
                    PropertyValue::Bool(true),
                    PropertyValue::Long(-42),
                    PropertyValue::Double(1e-300),
                    PropertyValue::String(String::new()),
                ]),
            )
            .with_property("empty_list", PropertyValue::List(vec![])),
        ChangeEvent::node("past", &["Chunk"], Op::Upsert, -5, i64::MIN),
        backfill,
        empty,
    ]
}

#[tokio::test]
async fn both_readers_decode_the_same_bytes_to_the_same_event() {
    let codec = Codec::local();
    for event in cases() {
        let bytes = codec.encode_change(&event, Format::Avro).await.unwrap();
        let decoded = both_ways(&codec, &bytes).await.expect("a valid record");
        assert_eq!(decoded, event);
    }
}

fn random_string(rng: &mut impl Rng) -> String {
    const ALPHABET: [char; 8] = ['a', 'Z', '0', ' ', 'é', '世', '😀', '\u{0}'];
    (0..rng.random_range(0..12))
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())])
        .collect()
}

fn random_scalar(rng: &mut impl Rng) -> PropertyValue {
    match rng.random_range(0..5) {
        0 => PropertyValue::Null,
        1 => PropertyValue::Bool(rng.random()),
        2 => PropertyValue::Long(rng.random()),
        3 => PropertyValue::Double(rng.random_range(-1e12..1e12)),
        _ => PropertyValue::String(random_string(rng)),
    }
}

fn random_event(rng: &mut impl Rng) -> ChangeEvent {
    let labels: Vec<String> = (0..rng.random_range(0..3))
        .map(|_| random_string(rng))
        .collect();
    let label_refs: Vec<&str> = labels.iter().map(String::as_str).collect();
    let op = if rng.random_bool(0.2) {
        Op::Delete
    } else {
        Op::Upsert
    };
    let mut event = ChangeEvent::node(
        &random_string(rng),
        &label_refs,
        op,
        rng.random(),
        rng.random(),
    );
    if rng.random_bool(0.3) {
        event = relationship(&event.key);
    }
    for _ in 0..rng.random_range(0..6) {
        let value = if rng.random_bool(0.2) {
            PropertyValue::List(
                (0..rng.random_range(0..4))
                    .map(|_| random_scalar(rng))
                    .collect(),
            )
        } else {
            random_scalar(rng)
        };
        event.properties.insert(random_string(rng), value);
    }
    if rng.random_bool(0.6) {
        let dimension = [0, 1, 3, 384][rng.random_range(0..4)];
        event.vector = Some(
            (0..dimension)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect(),
        );
    }
    if rng.random_bool(0.3) {
        event.removed_labels = vec![random_string(rng)];
    }
    event.source.mode = [
        CaptureMode::Outbox,
        CaptureMode::Direct,
        CaptureMode::Backfill,
        CaptureMode::Repair,
    ][rng.random_range(0..4)];
    if rng.random_bool(0.5) {
        event.traceparent = Some(random_string(rng));
    }
    event
}

#[tokio::test]
async fn generated_events_decode_the_same_both_ways() {
    let codec = Codec::local();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xc0dec);
    for _ in 0..2_000 {
        let event = random_event(&mut rng);
        let bytes = codec.encode_change(&event, Format::Avro).await.unwrap();
        assert_eq!(both_ways(&codec, &bytes).await, Some(event));
    }
}

/// Bit flips, truncations and splices of valid records: both readers accept the same
/// records (with the same event) and refuse the same ones. Fixed seed, so failures repeat.
#[tokio::test]
async fn mutated_records_get_the_same_answer_from_both_readers() {
    let codec = Codec::local();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xbadc0de);
    let mut seeds = Vec::new();
    for event in cases() {
        seeds.push(codec.encode_change(&event, Format::Avro).await.unwrap());
    }
    let (mut accepted, mut refused) = (0, 0);
    for i in 0..20_000 {
        let mut bytes = seeds[i % seeds.len()].clone();
        for _ in 0..rng.random_range(1..4) {
            // Keep the 5-byte header so that the record reaches the Avro readers.
            let body = 5..bytes.len().max(6);
            match rng.random_range(0..3) {
                0 => {
                    let at = rng.random_range(body.clone()).min(bytes.len() - 1);
                    bytes[at] ^= 1 << rng.random_range(0..8);
                }
                1 => bytes.truncate(rng.random_range(body.clone())),
                _ => {
                    let at = rng.random_range(body.start..=bytes.len());
                    let junk: Vec<u8> = (0..rng.random_range(1..4)).map(|_| rng.random()).collect();
                    bytes.splice(at..at, junk);
                }
            }
        }
        match both_ways(&codec, &bytes).await {
            Some(_) => accepted += 1,
            None => refused += 1,
        }
    }
    assert!(
        accepted > 1_000 && refused > 1_000,
        "{accepted} accepted, {refused} refused"
    );
}

/// Arrays written in several blocks, one with a negative count and a byte size (what
/// other Avro writers may produce; apache-avro writes one block).
#[test]
fn blocked_arrays_with_negative_counts_are_read_whole() {
    // Zig-zag: 2 → 4, -1 → 1, 1 → 2, 8 → 16.
    let mut bytes = vec![4];
    bytes.extend(1.5f32.to_le_bytes());
    bytes.extend(2.5f32.to_le_bytes());
    bytes.extend([1, 8]);
    bytes.extend((-3.0f32).to_le_bytes());
    bytes.push(0);
    let mut body = bytes.as_slice();
    let floats = Reader { bytes: &mut body }.floats().unwrap();
    assert_eq!(floats, vec![1.5, 2.5, -3.0]);
    assert!(body.is_empty());

    let mut bytes = vec![1, 4, 2, b'a', 2, 2, b'b', 0];
    let mut body = bytes.as_slice();
    let strings = Reader { bytes: &mut body }.strings().unwrap();
    assert_eq!(strings, vec!["a".to_owned(), "b".to_owned()]);
    // A count larger than what is left is refused before any allocation.
    bytes = vec![0xfe, 0xff, 0xff, 0xff, 0x0f, 0];
    let mut body = bytes.as_slice();
    assert!(Reader { bytes: &mut body }.strings().is_err());
}
