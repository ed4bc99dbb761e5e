//! A synthetic GraphRAG-shaped change stream (files, chunks with vectors, entities,
//! MENTIONS relationships) with updates, deletes, re-creates, duplicates, out-of-order
//! versions and poison records, plus the final state it must leave, computed from the
//! generated events alone (not through the processor's mapping).
//!
//! With [`StreamShape::embed_chunks`] the chunks carry text only ([`super::corpus`]),
//! to be embedded on the way, and some of their updates change metadata only.

use graphcdc_core::event::{ChangeEvent, EntityKind, Op, PropertyValue, RelationshipEnds};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

/// Dimension of the demo embeddings (all-MiniLM-L6-v2 size).
pub const DIMENSION: usize = 384;

/// Sizes of the generated graph.
#[derive(Debug, Clone, Copy)]
pub struct StreamShape {
    pub files: usize,
    pub chunks: usize,
    pub entities: usize,
    pub mentions: usize,
    pub seed: u64,
    /// Chunks carry text and no vector (the demo embeds them on the way).
    pub embed_chunks: bool,
}

impl Default for StreamShape {
    fn default() -> Self {
        StreamShape {
            files: 100,
            chunks: 2_000,
            entities: 400,
            mentions: 1_500,
            seed: 7,
            embed_chunks: false,
        }
    }
}

/// One record to produce: a valid event, or raw poison bytes under a key.
#[derive(Debug, Clone)]
pub enum DemoRecord {
    Event(Box<ChangeEvent>),
    Poison { key: String, value: Vec<u8> },
}

/// What one mapped entity must look like in the sink at the end.
#[derive(Debug, Clone, PartialEq)]
pub struct Expected {
    pub version: i64,
    /// `None` when the last change was a delete.
    pub text: Option<String>,
}

/// The stream and its expected outcome per (collection, key).
pub struct DemoStream {
    pub records: Vec<DemoRecord>,
    pub expected: BTreeMap<(String, String), Expected>,
    /// Events whose version is not newer than one sent before for the same key.
    pub stale_sent: usize,
    /// Records that must end in the DLQ.
    pub expected_dlq: usize,
}

struct Generator {
    rng: StdRng,
    embed_chunks: bool,
    versions: BTreeMap<String, i64>,
    /// The newest text sent per key.
    texts: BTreeMap<String, String>,
    time_ms: i64,
    records: Vec<DemoRecord>,
    stale_sent: usize,
}

impl Generator {
    fn next_version(&mut self, key: &str) -> i64 {
        let v = self.versions.entry(key.to_owned()).or_insert(0);
        *v += 1;
        *v
    }

    fn vector(&mut self) -> Vec<f32> {
        (0..DIMENSION)
            .map(|_| self.rng.random_range(-1.0..1.0))
            .collect()
    }

    fn node(&mut self, key: &str, label: &str, op: Op, text: &str) -> ChangeEvent {
        self.time_ms += 3;
        let version = self.next_version(key);
        let mut event = ChangeEvent::node(key, &[label], op, version, self.time_ms);
        if op == Op::Upsert {
            event = event
                .with_property("uuid", PropertyValue::String(key.to_owned()))
                .with_property("text", PropertyValue::String(text.to_owned()));
            self.texts.insert(key.to_owned(), text.to_owned());
            if label != "File" && !(label == "Chunk" && self.embed_chunks) {
                event = event.with_vector(self.vector());
            }
        }
        event
    }

    fn push(&mut self, event: ChangeEvent) {
        self.records.push(DemoRecord::Event(Box::new(event)));
    }
}

/// Generate the demo stream.
pub fn generate(shape: StreamShape) -> DemoStream {
    let mut g = Generator {
        rng: StdRng::seed_from_u64(shape.seed),
        embed_chunks: shape.embed_chunks,
        versions: BTreeMap::new(),
        texts: BTreeMap::new(),
        time_ms: 1_700_000_000_000,
        records: Vec::new(),
        stale_sent: 0,
    };
    for f in 0..shape.files {
        let e = g.node(
            &format!("file-{f}"),
            "File",
            Op::Upsert,
            &format!("report-{f}.pdf"),
        );
        g.push(e);
    }
    for c in 0..shape.chunks {
        let file = c % shape.files.max(1);
        let text = match shape.embed_chunks {
            true => super::corpus::chunk_text(c, file).1,
            false => format!("chunk {c} of file {file}"),
        };
        let e = g.node(&format!("chunk-{c}"), "Chunk", Op::Upsert, &text);
        g.push(e);
    }
    for n in 0..shape.entities {
        let e = g.node(
            &format!("entity-{n}"),
            "Entity",
            Op::Upsert,
            &format!("entity {n}"),
        );
        g.push(e);
    }
    for m in 0..shape.mentions {
        let (c, n) = (m % shape.chunks.max(1), (m * 7) % shape.entities.max(1));
        let key = format!("mentions-{c}-{n}-{m}");
        let mut e = g.node(&key, "MENTIONS", Op::Upsert, "");
        e.kind = EntityKind::Relationship;
        e.labels.clear();
        e.vector = None;
        e.relationship = Some(RelationshipEnds {
            rel_type: "MENTIONS".into(),
            start_key: format!("chunk-{c}"),
            end_key: format!("entity-{n}"),
        });
        g.push(e);
    }
    // A changed chunk's text: with embedding, its topic sentence stays first, so a search
    // still finds it by meaning.
    let files = shape.files.max(1);
    let churn_text = |key: &str, note: &str| match shape.embed_chunks {
        true => {
            let c: usize = key.trim_start_matches("chunk-").parse().unwrap_or(0);
            format!("{} ({note})", super::corpus::chunk_text(c, c % files).1)
        }
        false => format!("{key} {note}"),
    };
    // Churn: re-embeddings, deletes, re-creates, duplicates, out-of-order pairs.
    for round in 0..shape.chunks {
        let key = format!("chunk-{}", g.rng.random_range(0..shape.chunks));
        match round % 10 {
            3 | 4 if shape.embed_chunks && g.texts.contains_key(&key) => {
                // Metadata only: the text stays, so its vector is kept (no model call).
                let text = g.texts[&key].clone();
                let e = g
                    .node(&key, "Chunk", Op::Upsert, &text)
                    .with_property("reviewed", PropertyValue::Long(round as i64));
                g.push(e);
            }
            0..=4 => {
                let e = g.node(
                    &key,
                    "Chunk",
                    Op::Upsert,
                    &churn_text(&key, &format!("re-embedded in round {round}")),
                );
                g.push(e);
            }
            5 => {
                let e = g.node(&key, "Chunk", Op::Delete, "");
                g.push(e);
            }
            6 => {
                // Duplicate delivery of the same event.
                let e = g.node(&key, "Chunk", Op::Upsert, &churn_text(&key, "sent twice"));
                g.push(e.clone());
                g.push(e);
                g.stale_sent += 1;
            }
            7 => {
                // Out of order: the newer version arrives first.
                let older = g.node(&key, "Chunk", Op::Upsert, &churn_text(&key, "older"));
                let newer = g.node(&key, "Chunk", Op::Upsert, &churn_text(&key, "newer"));
                g.push(newer);
                g.push(older);
                g.stale_sent += 1;
            }
            8 => {
                // A delete overtaken by an older upsert: must not resurrect the chunk.
                let older = g.node(
                    &key,
                    "Chunk",
                    Op::Upsert,
                    &churn_text(&key, "before delete"),
                );
                let delete = g.node(&key, "Chunk", Op::Delete, "");
                g.push(delete);
                g.push(older);
                g.stale_sent += 1;
            }
            _ => {
                let entity = format!("entity-{}", g.rng.random_range(0..shape.entities.max(1)));
                let e = g.node(
                    &entity,
                    "Entity",
                    Op::Upsert,
                    &format!("{entity} renamed in round {round}"),
                );
                g.push(e);
            }
        }
    }
    push_poison(&mut g);
    let embed = shape.embed_chunks;
    let expected = expected_state(&g.records, embed);
    let expected_dlq = g
        .records
        .iter()
        .filter(|r| match r {
            DemoRecord::Poison { .. } => true,
            DemoRecord::Event(e) => demo_collection(e).is_some() && !is_valid(e, embed),
        })
        .count();
    DemoStream {
        records: g.records,
        expected,
        stale_sent: g.stale_sent,
        expected_dlq,
    }
}

fn push_poison(g: &mut Generator) {
    let poison = |key: &str, value: Vec<u8>| DemoRecord::Poison {
        key: key.to_owned(),
        value,
    };
    g.records
        .push(poison("poison-garbage", b"\xff\xfenot an event".to_vec()));
    g.records.push(poison(
        "poison-unknown-schema",
        vec![0, 0, 0, 0x30, 0x39, 1, 2, 3],
    ));
    g.records.push(poison(
        "poison-json",
        br#"{"key":"half an event"}"#.to_vec(),
    ));
    let mut short = g.node("poison-dimension", "Chunk", Op::Upsert, "short vector");
    short.vector = Some(vec![0.5; 3]);
    g.push(short);
    // A given vector wins over the text, also when it is broken.
    let mut nan = g.node("poison-nan", "Chunk", Op::Upsert, "NaN vector");
    let mut vector = nan.vector.take().unwrap_or_else(|| vec![0.5; DIMENSION]);
    vector[0] = f32::NAN;
    nan.vector = Some(vector);
    g.push(nan);
    if g.embed_chunks {
        // No vector and nothing for the template to embed.
        let mut textless = g.node("poison-textless", "Chunk", Op::Upsert, "");
        textless.properties.remove("text");
        g.push(textless);
    }
    let mut keyless = g.node("poison-keyless", "Entity", Op::Upsert, "no key");
    keyless.key.clear();
    keyless.properties.remove("uuid");
    g.push(keyless);
}

/// Which collection a demo event maps to (mirrors the demo config, nothing more).
fn demo_collection(event: &ChangeEvent) -> Option<&'static str> {
    match event.labels.first().map(String::as_str) {
        Some("Chunk") => Some("chunks"),
        Some("Entity") => Some("entities"),
        _ => None,
    }
}

/// Whether the demo's mappings can apply `event`; with `embed`, a chunk without a
/// vector is applied when it has text.
fn is_valid(event: &ChangeEvent, embed: bool) -> bool {
    let has_text = || matches!(event.properties.get("text"), Some(PropertyValue::String(t)) if !t.trim().is_empty());
    !event.key.is_empty()
        && (event.op == Op::Delete
            || match &event.vector {
                Some(v) => v.len() == DIMENSION && v.iter().all(|x| x.is_finite()),
                None => embed && demo_collection(event) == Some("chunks") && has_text(),
            })
}

/// Highest version per key wins; a delete leaves a tombstone.
fn expected_state(records: &[DemoRecord], embed: bool) -> BTreeMap<(String, String), Expected> {
    let mut expected: BTreeMap<(String, String), Expected> = BTreeMap::new();
    for record in records {
        let DemoRecord::Event(event) = record else {
            continue;
        };
        let Some(collection) = demo_collection(event) else {
            continue;
        };
        if !is_valid(event, embed) {
            continue;
        }
        let text = match (&event.op, event.properties.get("text")) {
            (Op::Upsert, Some(PropertyValue::String(s))) => Some(s.clone()),
            _ => None,
        };
        let slot = (collection.to_owned(), event.key.clone());
        if expected
            .get(&slot)
            .is_none_or(|e| e.version < event.version)
        {
            expected.insert(
                slot,
                Expected {
                    version: event.version,
                    text,
                },
            );
        }
    }
    expected
}
