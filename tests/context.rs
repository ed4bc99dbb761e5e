//! Denormalised context against a real Bolt server (ArcadeDB, started by tests/run.sh) and
//! the real broker: when a related node's listed property changes (an entity renamed), the
//! relay re-emits the nodes whose context lists it, through the outbox, at most
//! `max_fanout` per related node. A re-emitted node carries the canonical properties of
//! the trigger and the backfill, without `capture.exclude_properties`. ArcadeDB has no
//! APOC, so the tests write the outbox entries the `before`-phase trigger would write,
//! `changed` property names included.

#[path = "support/bolt.rs"]
#[allow(dead_code)]
mod bolt;
mod support;

use bolt::{
    empty_database, neo4j_section, read_all, relay_harness, relay_until_empty, write_outbox,
};
use graphcdc_core::capture::backfill;
use graphcdc_core::codec::Codec;
use graphcdc_core::event::{ChangeEvent, Op, PropertyValue};
use graphcdc_core::mapping::Mapper;
use neo4rs::{query, Graph};
use std::collections::BTreeMap;
use tokio_util::sync::CancellationToken;

/// The chunks' context: the names of the entities they mention.
fn context(max_fanout: Option<usize>) -> String {
    let limit = max_fanout.map_or(String::new(), |n| format!("max_fanout = {n}\n"));
    format!("\n[[mappings.context]]\nfield = \"mentioned_entities\"\nrelationship = \"MENTIONS\"\nproperties = [\"name\"]\n{limit}")
}

/// Docs `c0..c{n}` mentioning entity `e1` (Bob), and `other` mentioning `e2` (Alice), each
/// published at v1.
async fn mentions(h: &support::Harness, n: usize) -> Graph {
    let graph = empty_database(h).await;
    graph
        .run(query(
            "CREATE (:Entity {uuid: 'e1', name: 'Bob'}), (:Entity {uuid: 'e2', name: 'Alice'})",
        ))
        .await
        .unwrap();
    let mut keys: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
    keys.push("other".into());
    graph
        .run(
            query(
                "UNWIND $keys AS k
                 MATCH (e:Entity {uuid: CASE k WHEN 'other' THEN 'e2' ELSE 'e1' END})
                 CREATE (c:Doc {uuid: k, text: k + ' v1', embedding: [1.0, 1.0, 0.5, -0.5]}),
                        (:CdcVersion {key: 'node:' + k, version: 1}), (c)-[:MENTIONS]->(e)",
            )
            .param("keys", keys.clone()),
        )
        .await
        .unwrap();
    let docs: Vec<ChangeEvent> = keys
        .iter()
        .map(|k| support::doc(k, 1, Op::Upsert))
        .collect();
    write_outbox(&graph, &docs).await;
    relay_until_empty(h, &graph).await;
    graph
}

/// Rename `entity` to `name` and write the trigger's outbox entry for it: an Entity
/// upsert whose `changed` lists `changed` (`None`: an entry of an older trigger).
async fn rename(graph: &Graph, entity: &str, name: &str, changed: Option<&[&str]>) {
    let changed: Option<Vec<String>> = changed.map(|c| c.iter().map(|s| s.to_string()).collect());
    graph
        .run(
            query(
                "MATCH (e:Entity {uuid: $key}) SET e.name = $name
                 MERGE (v:CdcVersion {key: 'node:' + $key})
                 SET v.version = coalesce(v.version, 0) + 1
                 CREATE (:CdcOutbox {event_id: randomUUID(), kind: 'node', key: $key,
                         labels: ['Entity'], op: 'upsert', version: v.version,
                         commit_time_ms: 2, created_at: 2, removed_labels: [],
                         changed: $changed, db: 'neo4j',
                         properties: '{\"uuid\":\"' + $key + '\",\"name\":\"' + $name + '\"}'})",
            )
            .param("key", entity)
            .param("name", name)
            .param("changed", changed),
        )
        .await
        .unwrap();
}

/// Every event of the change topic per key, in publish order.
async fn changes(h: &support::Harness) -> BTreeMap<String, Vec<ChangeEvent>> {
    let codec = Codec::local();
    let mut out: BTreeMap<String, Vec<ChangeEvent>> = BTreeMap::new();
    for (key, value) in read_all(h, &h.config.kafka.changes_topic) {
        let event = codec.decode_change(&value.unwrap()).await.unwrap();
        out.entry(key).or_default().push(event);
    }
    out
}

fn names(event: &ChangeEvent) -> Option<&PropertyValue> {
    event.properties.get("mentioned_entities_name")
}

fn list(names: &[&str]) -> PropertyValue {
    PropertyValue::List(
        names
            .iter()
            .map(|n| PropertyValue::String(n.to_string()))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renaming_an_entity_re_emits_every_chunk_that_mentions_it() {
    let h = relay_harness(
        "ctx-rename",
        &format!("{}{}", neo4j_section("ctx1"), context(None)),
    )
    .await;
    let graph = mentions(&h, 5).await;
    rename(&graph, "e1", "Robert", Some(&["name"])).await;
    // A change of a property no context lists re-emits nothing.
    rename(&graph, "e2", "Alice", Some(&["score"])).await;
    let stats = relay_until_empty(&h, &graph).await;
    assert_eq!(
        stats.context_reemitted.get(),
        5,
        "the five chunks that mention e1"
    );
    assert_eq!(stats.context_fanout_overflow.get(), 0);

    let changes = changes(&h).await;
    for i in 0..5 {
        let key = format!("c{i}");
        let events = &changes[&key];
        let versions: Vec<i64> = events.iter().map(|e| e.version).collect();
        assert_eq!(versions, vec![1, 2], "{key}");
        assert_eq!(names(&events[0]), Some(&list(&["Bob"])), "{key} v1");
        assert_eq!(names(&events[1]), Some(&list(&["Robert"])), "{key} v2");
        assert_eq!(
            events[1].properties["text"],
            PropertyValue::String(format!("{key} v1")),
            "the chunk's own properties are re-read"
        );
    }
    assert_eq!(
        changes["other"].len(),
        1,
        "e2's score is not in any context"
    );

    // graph.state: the last record of each chunk is the re-emit.
    let codec = Codec::local();
    let mut last: BTreeMap<String, (i64, Option<PropertyValue>)> = BTreeMap::new();
    for (key, value) in read_all(&h, &h.config.kafka.state_topic) {
        let state = codec.decode_state(&value.unwrap()).await.unwrap();
        let name = state.properties.get("mentioned_entities_name").cloned();
        last.insert(key, (state.version, name));
    }
    for i in 0..5 {
        assert_eq!(last[&format!("c{i}")], (2, Some(list(&["Robert"]))), "c{i}");
    }
    assert_eq!(last["other"], (1, Some(list(&["Alice"]))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fan_out_past_max_fanout_re_emits_that_many_and_counts_the_overflow() {
    let extra = format!("{}{}", neo4j_section("ctx2"), context(Some(2)));
    let h = relay_harness("ctx-fanout", &extra).await;
    let graph = mentions(&h, 4).await;
    // An entry without `changed` (an older trigger): any property may have changed.
    rename(&graph, "e1", "Robert", None).await;
    let stats = relay_until_empty(&h, &graph).await;
    assert_eq!(
        stats.context_fanout_overflow.get(),
        1,
        "e1's change overflowed"
    );
    assert_eq!(
        stats.context_reemitted.get(),
        2,
        "max_fanout chunks re-emitted"
    );

    let changes = changes(&h).await;
    let renamed: Vec<&String> = (0..4)
        .map(|i| format!("c{i}"))
        .filter_map(|k| changes.get_key_value(&k).map(|(k, _)| k))
        .filter(|k| changes[*k].len() == 2)
        .collect();
    assert_eq!(renamed.len(), 2, "{renamed:?}");
    for key in renamed {
        assert_eq!(names(&changes[key][1]), Some(&list(&["Robert"])), "{key}");
    }
    let stale = (0..4)
        .filter(|i| changes[&format!("c{i}")].len() == 1)
        .count();
    assert_eq!(stale, 2, "the others keep v1 until a backfill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_emitted_node_does_not_re_emit_the_nodes_that_list_it() {
    // Docs list the next doc's text: d0 -> d1 -> d2.
    let next = "\n[[mappings.context]]\nfield = \"next\"\nrelationship = \"NEXT\"\nproperties = [\"text\"]\n";
    let h = relay_harness("ctx-chain", &format!("{}{next}", neo4j_section("ctx3"))).await;
    let graph = empty_database(&h).await;
    graph
        .run(query(
            "CREATE (d0:Doc {uuid: 'd0', text: 'd0 v1', embedding: [1.0, 1.0, 0.5, -0.5]}),
                    (d1:Doc {uuid: 'd1', text: 'd1 v1', embedding: [1.0, 1.0, 0.5, -0.5]}),
                    (d2:Doc {uuid: 'd2', text: 'd2 v1', embedding: [1.0, 1.0, 0.5, -0.5]}),
                    (d0)-[:NEXT]->(d1), (d1)-[:NEXT]->(d2),
                    (:CdcVersion {key: 'node:d0', version: 1}),
                    (:CdcVersion {key: 'node:d1', version: 1}),
                    (:CdcVersion {key: 'node:d2', version: 2})",
        ))
        .await
        .unwrap();
    // d2's text changes (v2): the trigger's entry lists `text`.
    graph
        .run(query(
            "MATCH (d:Doc {uuid: 'd2'}) SET d.text = 'd2 v2'
             CREATE (:CdcOutbox {event_id: 'd2-v2', kind: 'node', key: 'd2', labels: ['Doc'],
                     op: 'upsert', version: 2, commit_time_ms: 2, created_at: 2,
                     changed: ['text'], db: 'neo4j',
                     properties: '{\"uuid\":\"d2\",\"text\":\"d2 v2\",\"embedding\":[1.0,2.0,0.5,-0.5]}'})",
        ))
        .await
        .unwrap();
    let stats = relay_until_empty(&h, &graph).await;
    assert_eq!(stats.context_reemitted.get(), 1, "d1 only");
    let changes = changes(&h).await;
    let d1 = &changes["d1"];
    assert_eq!(d1.len(), 1);
    assert_eq!(d1[0].version, 2);
    assert_eq!(d1[0].properties["next_text"], list(&["d2 v2"]));
    assert!(
        !changes.contains_key("d0"),
        "d1's re-emit changed no property of d1: nothing lists a change"
    );
}

/// A chunk with a DateTime, a LocalDateTime, bytes and an excluded property, mentioning
/// Bob; Alice is not mentioned yet.
const CANONICAL_GRAPH: &str = "CREATE (c:Doc {uuid: 'c1', text: 'hello',
        embedding: [1.0, 0.5, 0.25, 0.125], at: datetime('2024-05-01T10:00:00Z'),
        local: localdatetime('2024-05-01T10:00:30'), day: date('2024-05-01'),
        secret: 'not for the sink', blob: $blob}),
    (e1:Entity {uuid: 'e1', name: 'Bob'}), (:Entity {uuid: 'e2', name: 'Alice'}),
    (:CdcVersion {key: 'node:c1', version: 1}), (c)-[:MENTIONS]->(e1)";

/// The chunk's own properties as the trigger's `apoc.convert.toJson` writes them.
fn assert_canonical(event: &ChangeEvent) {
    let text = |s: &str| PropertyValue::String(s.into());
    let v = event.version;
    assert!(
        !event.properties.contains_key("secret"),
        "v{v}: capture.exclude_properties is honoured"
    );
    assert_eq!(event.properties["at"], text("2024-05-01T10:00Z"), "v{v}");
    assert_eq!(
        event.properties["local"],
        text("2024-05-01T10:00:30"),
        "v{v}"
    );
    assert_eq!(event.properties["day"], text("2024-05-01"), "v{v}");
    assert_eq!(event.properties["blob"], text("AQL6"), "v{v}: base64");
}

/// Issue 12: a re-emitted node (a relationship of its context changed, then a related
/// node was renamed) carries the same canonical properties as the trigger and the
/// backfill, without the excluded ones, so it hashes equal to the backfilled node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_emitted_node_is_canonical_without_excluded_properties() {
    let extra = format!(
        "{}\n[capture]\nexclude_properties = [\"secret\"]\n{}",
        neo4j_section("ctx5"),
        context(None)
    );
    let h = relay_harness("ctx-canonical", &extra).await;
    let graph = empty_database(&h).await;
    graph
        .run(query(CANONICAL_GRAPH).param("blob", vec![1u8, 2, 250]))
        .await
        .unwrap();
    // c1 now mentions Alice: the relationship and the trigger's outbox entry for it (v2).
    graph
        .run(query(
            "MATCH (c:Doc {uuid: 'c1'}), (b:Entity {uuid: 'e2'}) CREATE (c)-[:MENTIONS]->(b)
             CREATE (:CdcOutbox {event_id: 'rel-1', kind: 'relationship', key: 'c1|MENTIONS|e2',
                     op: 'upsert', version: 1, commit_time_ms: 1, created_at: 1,
                     properties: '{}', rel_type: 'MENTIONS', start_key: 'c1', end_key: 'e2',
                     db: 'neo4j'})",
        ))
        .await
        .unwrap();
    let stats = relay_until_empty(&h, &graph).await;
    assert_eq!(stats.failed.get(), 0);
    // Bob is renamed (v3).
    rename(&graph, "e1", "Robert", Some(&["name"])).await;
    let stats = relay_until_empty(&h, &graph).await;
    assert_eq!((stats.context_reemitted.get(), stats.failed.get()), (1, 0));

    let reemitted = changes(&h).await.remove("c1").unwrap();
    let versions: Vec<i64> = reemitted.iter().map(|e| e.version).collect();
    assert_eq!(versions, vec![2, 3]);
    reemitted.iter().for_each(assert_canonical);
    assert_eq!(names(&reemitted[1]), Some(&list(&["Alice", "Robert"])));

    let codec = Codec::local();
    let mut state = None;
    for (key, value) in read_all(&h, &h.config.kafka.state_topic) {
        if key == "c1" {
            state = Some(codec.decode_state(&value.unwrap()).await.unwrap());
        }
    }
    let state = state.expect("c1 in graph.state");
    assert_eq!(state.version, 3);
    assert!(
        !state.properties.contains_key("secret"),
        "no secret in graph.state"
    );
    assert_eq!(state.properties, reemitted[1].properties);

    // The backfill of the same node (v4): the same properties, the same content hash.
    let checkpoint = h.dir.path().join("backfill.json");
    let report = backfill::run(&h.config, &checkpoint, 10, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!((report.written, report.failed), (1, 0));
    relay_until_empty(&h, &graph).await;
    let backfilled = changes(&h).await["c1"]
        .iter()
        .find(|e| e.version == 4)
        .cloned()
        .expect("the backfill's c1 v4");
    assert_canonical(&backfilled);
    assert_eq!(reemitted[1].properties, backfilled.properties);
    let mapper = Mapper::new(h.config.mappings.clone(), 1 << 20);
    let hash = |e: &ChangeEvent| mapper.map(e).unwrap().remove(0).hash;
    assert_eq!(hash(&reemitted[1]), hash(&backfilled), "no false `differs`");
    // The relationship's re-emit (Bob only) differs in its context alone.
    let own = |e: &ChangeEvent| {
        let mut p = e.properties.clone();
        p.remove("mentioned_entities_name");
        p
    };
    assert_eq!(own(&reemitted[0]), own(&backfilled));
}
