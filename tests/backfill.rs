//! The backfill against a real Bolt server (ArcadeDB, started by tests/run.sh) and the
//! broker: it bumps the trigger's version counter and writes that version to the outbox
//! in the same transaction (the relay publishes it, in version order with live changes),
//! it
//! serializes properties exactly as the trigger's `apoc.convert.toJson` (so a backfilled
//! and a live-captured node hash equal), it honours `capture.exclude_properties`, it
//! backfills relationship mappings and integer keys, and an entity it cannot publish
//! does not stop it. Also: the reconciler refuses a direct-mode deployment.

#[allow(dead_code)]
#[path = "support/bolt.rs"]
mod bolt;
mod support;

use graphcdc_core::capture::backfill::page::{self, Target};
use graphcdc_core::capture::backfill::{self, BackfillReport};
use graphcdc_core::capture::{outbox_event, OutboxRow};
use graphcdc_core::codec::Codec;
use graphcdc_core::event::{CaptureMode, ChangeEvent, EntityState, Op, PropertyValue};
use graphcdc_core::mapping::Mapper;
use neo4rs::{query, Graph};
use std::collections::BTreeMap;
use support::Harness;
use tokio_util::sync::CancellationToken;

/// Bolt server of tests/run.sh, database `database`, plus `extra` TOML. The databases
/// are those of tests/run.sh (cdc1..): test binaries run one after the other, and each
/// test of this one has its own.
async fn harness(name: &str, database: &str, extra: &str) -> (Harness, Graph) {
    let section = format!("{}{extra}", bolt::neo4j_section(database));
    let h = bolt::relay_harness(name, &section).await;
    let graph = bolt::empty_database(&h).await;
    (h, graph)
}

/// Run the backfill, then the relay until it published every entry the backfill wrote.
async fn backfill(h: &Harness, graph: &Graph, page_size: usize) -> BackfillReport {
    let checkpoint = h.dir.path().join("backfill.json");
    let report = backfill::run(&h.config, &checkpoint, page_size, CancellationToken::new())
        .await
        .unwrap();
    bolt::relay_until_empty(h, graph).await;
    report
}

/// The first `count` records of the change topic, decoded.
async fn changes(h: &Harness, count: usize) -> Vec<ChangeEvent> {
    let codec = Codec::local();
    let mut out = Vec::new();
    for record in support::read_topic(h, &h.config.kafka.changes_topic, count).await {
        out.push(codec.decode_change(&record.value.unwrap()).await.unwrap());
    }
    out
}

/// The first `count` records of the state topic, decoded, by key.
async fn states(h: &Harness, count: usize) -> BTreeMap<String, EntityState> {
    let codec = Codec::local();
    let mut out = BTreeMap::new();
    for record in support::read_topic(h, &h.config.kafka.state_topic, count).await {
        let state = codec.decode_state(&record.value.unwrap()).await.unwrap();
        out.insert(state.key.clone(), state);
    }
    out
}

async fn counter(graph: &Graph, key: &str) -> i64 {
    let mut rows = graph
        .execute(
            query("MATCH (v:CdcVersion {key: $k}) RETURN v.version AS version").param("k", key),
        )
        .await
        .unwrap();
    rows.next().await.unwrap().unwrap().get("version").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_bumps_the_version_counter_and_the_relay_publishes_that_version() {
    let (h, graph) = harness("bf-version", "cdc1", "").await;
    graph
        .run(query(
            "CREATE (:Doc {uuid: 'c1', text: 'now', embedding: [1.0, 0.5, 0.25, 0.125]}),
                    (:CdcVersion {key: 'node:c1', version: 3}),
                    (:Doc {uuid: 'c2', text: 'new', embedding: [1.0, 0.5, 0.25, 0.125]})",
        ))
        .await
        .unwrap();
    let report = backfill(&h, &graph, 10).await;
    assert_eq!((report.written, report.complete), (2, true));
    let events = changes(&h, 2).await;
    let version = |key: &str| events.iter().find(|e| e.key == key).unwrap().version;
    // The live event of version 3 (already applied, or still in flight) can never be
    // fenced out by a backfill record of the same version with other content: the
    // backfill owns version 4, read after taking the counter's lock.
    assert_eq!(version("c1"), 4, "bumped, not the current version");
    assert_eq!(
        counter(&graph, "node:c1").await,
        4,
        "the trigger's next is 5"
    );
    assert_eq!(
        version("c2"),
        1,
        "a node the trigger never saw gets a counter"
    );
    assert_eq!(counter(&graph, "node:c2").await, 1);
}

/// Every temporal type ArcadeDB stores, bytes, a list, and an excluded property.
const NODE: &str = "CREATE (:Doc {uuid: 'c1', text: 'hello', embedding: [1.0, 0.5, 0.25, 0.125],
    at: datetime('2024-05-01T10:00:00Z'), day: date('2024-05-01'),
    local: localdatetime('2024-05-01T10:00:30'), span: duration('P1DT2H'),
    clock: localtime('10:00:05'), tags: ['a', 'b'], n: 7, x: 1.5, flag: true,
    secret: 'not for the sink', blob: $blob})";

/// What the trigger stores for that node (`apoc.convert.toJson(apoc.map.removeKeys(
/// properties(n), ['secret']))`), written by hand from the format in
/// `capture/canonical.rs` (Java `toString()` of each value, base64 for bytes).
const TRIGGER_JSON: &str = r#"{"uuid":"c1","text":"hello","embedding":[1.0,0.5,0.25,0.125],
    "at":"2024-05-01T10:00Z","day":"2024-05-01","local":"2024-05-01T10:00:30",
    "span":"P1DT2H","clock":"10:00:05","tags":["a","b"],"n":7,"x":1.5,"flag":true,
    "blob":"AQL6"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfilled_node_hashes_equal_to_the_same_node_captured_live() {
    let extra = "\n[capture]\nexclude_properties = [\"secret\"]\n";
    let (h, graph) = harness("bf-canonical", "cdc2", extra).await;
    graph
        .run(query(NODE).param("blob", vec![1u8, 2, 250]))
        .await
        .unwrap();
    let report = backfill(&h, &graph, 10).await;
    assert_eq!((report.written, report.failed), (1, 0));
    let backfilled = changes(&h, 1).await.remove(0);
    assert_eq!(backfilled.source.mode, CaptureMode::Backfill);
    assert!(
        !backfilled.properties.contains_key("secret"),
        "capture.exclude_properties is honoured"
    );
    assert_eq!(
        backfilled.properties["at"],
        PropertyValue::String("2024-05-01T10:00Z".into()),
        "APOC's DateTime form, not +00:00"
    );

    // The same node as the relay publishes it from the trigger's outbox entry.
    let live = outbox_event(OutboxRow {
        event_id: "live".into(),
        kind: "node".into(),
        key: "c1".into(),
        labels: Some(vec!["Doc".into()]),
        removed_labels: None,
        changed: None,
        op: "upsert".into(),
        version: backfilled.version,
        commit_time_ms: 1,
        properties: Some(TRIGGER_JSON.into()),
        rel_type: None,
        start_key: None,
        end_key: None,
        db: Some("cdc2".into()),
        traceparent: None,
        source: None,
    })
    .unwrap();
    assert_eq!(backfilled.properties, live.properties);
    let mapper = Mapper::new(h.config.mappings.clone(), 1 << 20);
    let hash = |e: &ChangeEvent| mapper.map(e).unwrap().remove(0).hash;
    assert_eq!(hash(&backfilled), hash(&live), "no content drift to repair");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relationships_and_integer_keys_are_backfilled_and_a_point_does_not_stop_the_run() {
    let extra = r#"
[[mappings]]
label = "Num"
key_property = "id"
collection = "nums"
dimension = 4

[[mappings]]
relationship_type = "MENTIONS"
collection = "mentions"
dimension = 4
"#;
    let (h, graph) = harness("bf-shapes", "cdc3", extra).await;
    graph
        .run(query(
            "CREATE (c1:Doc {uuid: 'c1', text: 'somewhere', where: point({x: 1.0, y: 2.0})}),
                    (c2:Doc {uuid: 'c2', text: 'fine'}),
                    (e1:Entity {uuid: 'e1', name: 'Bob'}),
                    (c2)-[:MENTIONS {w: 0.5}]->(e1),
                    (c1)-[:MENTIONS {uuid: 'm2', w: 1.5, _cdc: ['m2', 'MENTIONS', 'c1', 'e1']}]->(e1)
             WITH 1 AS one UNWIND range(1, 5) AS i CREATE (:Num {id: i, text: 'n' + toString(i)})",
        ))
        .await
        .unwrap();
    // Pages of 2: integer keys continue from an integer, the point's page is not retried.
    let report = backfill(&h, &graph, 2).await;
    assert!(report.complete, "{report:?}");
    assert_eq!(report.failed, 1, "c1 has a point: skipped and counted");
    assert_eq!(report.written, 1 + 5 + 2);
    let again = backfill(&h, &graph, 2).await;
    assert_eq!(
        (again.written, again.complete),
        (0, true),
        "the checkpoint is done"
    );

    let states = states(&h, 8).await;
    for i in 1..=5 {
        assert!(states.contains_key(&i.to_string()), "Num {i}: {states:?}");
    }
    let fallback = &states["c2|MENTIONS|e1"];
    let ends = fallback.relationship.as_ref().unwrap();
    assert_eq!(
        (ends.start_key.as_str(), ends.end_key.as_str()),
        ("c2", "e1")
    );
    assert_eq!(fallback.properties["w"], PropertyValue::Double(0.5));
    let keyed = &states["m2"];
    assert!(
        !keyed.properties.contains_key("_cdc"),
        "the trigger's marker is never a payload"
    );
    assert_eq!(keyed.version, 1);
    assert_eq!(counter(&graph, "relationship:m2").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconciler_refuses_a_direct_mode_deployment() {
    let h = Harness::with_extra("direct", "\n[capture]\nmode = \"direct\"\n").await;
    let sink = h.open_sink();
    let gauges = std::sync::Arc::new(graphcdc_core::stats::DriftGauges::default());
    let error = graphcdc_core::reconcile::Reconciler::new(h.config.clone(), sink, gauges)
        .err()
        .expect("refused");
    let message = format!("{error:#}");
    assert!(
        message.contains("direct") && message.contains("no state topic"),
        "{message}"
    );
    assert_eq!(message, graphcdc_core::reconcile::DIRECT_MODE_REFUSAL);
}

/// Issue #12: a backfill record must never land after a live one. The backfill's page
/// bumps c1's counter to 4 and commits; a live change commits right after (5) and is
/// relayed. graph.state's last record for c1 must be the live 5, and graph.changes must
/// hold the backfill's 4 before it: the page's entry committed with its bump, and the
/// relay publishes a key's entries in version order. (Fails on the backfill that
/// published its page itself after the commit: graph.state ended on 4.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_change_committed_after_a_backfill_page_stays_last_in_graph_state() {
    let (h, graph) = bolt::harness("bf-race", "dig2").await;
    graph
        .run(query(
            "CREATE (:Doc {uuid: 'c1', text: 'before', embedding: [1.0, 0.5, 0.25, 0.125]}),
                    (:CdcVersion {key: 'node:c1', version: 3})",
        ))
        .await
        .unwrap();
    // The backfill's page transaction: bump to 4 under the lock, read, write the entry,
    // commit.
    let target = Target::of(&h.config.mappings[0]).unwrap();
    let keys = [serde_json::json!("c1")];
    let written = page::write_locked(
        &graph,
        &target,
        &h.config.capture,
        None,
        10,
        &keys,
        "dig2",
        CaptureMode::Backfill,
    )
    .await
    .unwrap();
    assert_eq!((written.entries, written.failed.len()), (1, 0));
    assert_eq!(counter(&graph, "node:c1").await, 4);
    // A live change commits right after: the trigger bumps to 5 and writes its entry,
    // and the relay publishes it. (Before, the backfill published its page itself after
    // this point, so its v4 landed after the live v5.)
    graph
        .run(query(
            "MATCH (n:Doc {uuid: 'c1'}), (v:CdcVersion {key: 'node:c1'})
             SET n.text = 'c1 v5', v.version = v.version + 1",
        ))
        .await
        .unwrap();
    bolt::write_outbox(&graph, &[support::doc("c1", 5, Op::Upsert)]).await;
    bolt::relay_until_empty(&h, &graph).await;

    let codec = Codec::local();
    let mut state = Vec::new();
    for (key, value) in bolt::read_all(&h, &h.config.kafka.state_topic) {
        if key == "c1" {
            state.push(codec.decode_state(&value.unwrap()).await.unwrap().version);
        }
    }
    assert_eq!(
        state.last(),
        Some(&5),
        "graph.state went backwards: {state:?}"
    );
    let mut changes = Vec::new();
    for (key, value) in bolt::read_all(&h, &h.config.kafka.changes_topic) {
        if key == "c1" {
            let event = codec.decode_change(&value.unwrap()).await.unwrap();
            changes.push((event.version, event.source.mode));
        }
    }
    assert_eq!(
        changes,
        [(4, CaptureMode::Backfill), (5, CaptureMode::Outbox)],
        "the relay publishes the backfill's entry, then the live one"
    );
}
