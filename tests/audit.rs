//! The three-way audit (`graphcdc audit`) against a real Bolt server (ArcadeDB, started by
//! tests/run.sh), the broker and the embedded sink. ArcadeDB has no APOC: the tests write
//! the graph, the version counters and the outbox entries the way the trigger would, and
//! damage the graph "behind the trigger's back" (no outbox entry).
//!
//! - nodes lost without a delete and nodes never captured are found exactly, per label,
//!   and repaired through the log (outbox entries that a relay running beside the audit
//!   publishes): graph.state and the sink converge on Neo4j;
//! - a loss above the delete ratio is refused (nothing published) unless forced;
//! - a node whose Neo4j version went below graph.state's (a restored Neo4j) is `behind`,
//!   and `--bump-epoch` moves every counter above graph.state;
//! - a fresh capture (relay or backfill) audits clean, a change not relayed yet is in
//!   flight, not drift, and relationships lost or never captured are repaired.

#[allow(dead_code)]
#[path = "support/bolt.rs"]
mod bolt;
mod support;

use bolt::{
    empty_database, neo4j_section, outbox_depth, read_all, relay_harness, relay_until_empty,
    start_relay,
};
use graphcdc_core::audit::repair::AuditRepairOptions;
use graphcdc_core::audit::{AuditClass, AuditOptions, AuditReport, Auditor};
use graphcdc_core::capture::backfill;
use graphcdc_core::event::PropertyValue;
use neo4rs::{query, BoltType, Graph};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;
use support::Harness;
use tokio_util::sync::CancellationToken;

/// A second mapped label, so counts are asserted per label.
const NOTES: &str = "
[[mappings]]
label = \"Note\"
collection = \"notes\"
dimension = 4
vector_property = \"embedding\"
";

async fn harness(name: &str, database: &str, extra: &str) -> (Harness, Graph) {
    let h = relay_harness(name, &format!("{}{extra}", neo4j_section(database))).await;
    let graph = empty_database(&h).await;
    (h, graph)
}

/// The properties of node `key` at `version`, as the test writes them.
fn props(key: &str, version: i64, text: &str) -> BTreeMap<String, PropertyValue> {
    BTreeMap::from([
        ("uuid".to_owned(), PropertyValue::String(key.to_owned())),
        ("text".to_owned(), PropertyValue::String(text.to_owned())),
        (
            "embedding".to_owned(),
            PropertyValue::List(
                [1.0, version as f64, 0.5, -0.5]
                    .into_iter()
                    .map(PropertyValue::Double)
                    .collect(),
            ),
        ),
    ])
}

/// Create `keys` as `label` nodes and, when `captured`, what the trigger writes with
/// them: the counter at `version` and an outbox entry with the node's properties.
async fn create(graph: &Graph, label: &str, keys: &[String], version: i64, captured: bool) {
    let rows: Vec<HashMap<String, BoltType>> = keys
        .iter()
        .map(|k| {
            let text = format!("{k} v{version}");
            HashMap::from([
                ("key".to_owned(), k.as_str().into()),
                ("text".to_owned(), text.as_str().into()),
                (
                    "embedding".to_owned(),
                    vec![1.0, version as f64, 0.5, -0.5].into(),
                ),
                ("version".to_owned(), version.into()),
                (
                    "event_id".to_owned(),
                    uuid::Uuid::new_v4().to_string().into(),
                ),
                (
                    "props".to_owned(),
                    serde_json::to_string(&props(k, version, &text))
                        .unwrap()
                        .into(),
                ),
            ])
        })
        .collect();
    graph
        .run(
            query(&format!(
                "UNWIND $rows AS r CREATE (:{label} {{uuid: r.key, text: r.text, embedding: r.embedding}})"
            ))
            .param("rows", rows.clone()),
        )
        .await
        .unwrap();
    if !captured {
        return;
    }
    graph
        .run(
            query(&format!(
                "UNWIND $rows AS r
                 MERGE (v:CdcVersion {{key: 'node:' + r.key}}) SET v.version = r.version
                 CREATE (:CdcOutbox {{event_id: r.event_id, kind: 'node', key: r.key,
                         labels: ['{label}'], op: 'upsert', version: r.version,
                         commit_time_ms: 1, created_at: 1, properties: r.props, db: 'neo4j'}})"
            ))
            .param("rows", rows),
        )
        .await
        .unwrap();
}

fn keys(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}-{i:03}")).collect()
}

/// Delete nodes without the trigger: no outbox entry, counters kept.
async fn delete_behind_the_back(graph: &Graph, keys: &[String]) {
    graph
        .run(
            query("UNWIND $keys AS k MATCH (n {uuid: k}) DETACH DELETE n")
                .param("keys", keys.to_vec()),
        )
        .await
        .unwrap();
}

async fn counter(graph: &Graph, key: &str) -> Option<i64> {
    let mut rows = graph
        .execute(
            query("MATCH (v:CdcVersion {key: $k}) RETURN v.version AS version").param("k", key),
        )
        .await
        .unwrap();
    rows.next()
        .await
        .unwrap()
        .map(|r| r.get("version").unwrap())
}

fn options(page_size: usize, repair: Option<AuditRepairOptions>) -> AuditOptions {
    AuditOptions {
        page_size,
        grace: Duration::from_millis(200),
        repair,
        settle_timeout: Duration::from_secs(60),
        ..AuditOptions::default()
    }
}

/// (label, class) → count, for the labels of `report`.
fn per_label(report: &AuditReport) -> BTreeMap<(String, &'static str), u64> {
    let mut out = BTreeMap::new();
    for (t, counts) in report.targets.iter().zip(report.counts()) {
        for (class, n) in counts {
            out.insert((t.name.clone(), class.name()), n);
        }
    }
    out
}

/// Keys live in graph.state: the last record of each key (one partition per key, read
/// in order) is not a tombstone.
fn live_in_state(h: &Harness) -> BTreeSet<String> {
    let mut last: BTreeMap<String, bool> = BTreeMap::new();
    for (key, value) in read_all(h, &h.config.kafka.state_topic) {
        last.insert(key, value.is_some());
    }
    last.into_iter()
        .filter(|(_, live)| *live)
        .map(|(k, _)| k)
        .collect()
}

/// Records on `topic`.
fn end_of(h: &Harness, topic: &str) -> i64 {
    read_all(h, topic).len() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_and_uncaptured_nodes_are_found_per_label_and_repaired_through_the_log() {
    let (h, graph) = harness("audit-loss", "audit1", NOTES).await;
    let docs = keys("d", 0..100);
    let notes = keys("n", 0..50);
    create(&graph, "Doc", &docs, 1, true).await;
    create(&graph, "Note", &notes, 1, true).await;
    relay_until_empty(&h, &graph).await;
    let sink = h.open_sink();
    h.process_to_end(sink.clone()).await;
    assert_eq!(sink.count_live("docs").await.unwrap(), 100);

    // Behind the trigger's back: 6 + 4 nodes deleted, 3 + 2 created, no outbox entries.
    let lost: Vec<String> = docs[..6].iter().chain(&notes[..4]).cloned().collect();
    delete_behind_the_back(&graph, &lost).await;
    create(&graph, "Doc", &keys("d", 100..103), 1, false).await;
    create(&graph, "Note", &keys("n", 50..52), 1, false).await;

    // graph.state's entries, the keys met in Neo4j and the sink check's state on disk
    // (the other tests audit in memory).
    let state_dir = tempfile::tempdir().unwrap();
    let mut auditor = Auditor::new(h.config.clone(), Some(sink.clone())).unwrap();
    auditor.state_dir(state_dir.path()).unwrap();
    let found = auditor.check(&options(40, None)).await.unwrap();
    for file in ["audit-state.redb", "audit-seen.redb", "expected-state.redb"] {
        assert!(state_dir.path().join(file).exists(), "{file}");
    }
    let counts = per_label(&found);
    let count = |label: &str, class: &str| counts[&(label.to_owned(), class)];
    assert_eq!(
        [
            count("Doc", "lost"),
            count("Doc", "uncaptured"),
            count("Note", "lost"),
            count("Note", "uncaptured")
        ],
        [6, 3, 4, 2],
        "{found:?}"
    );
    for class in ["differs", "stale", "behind"] {
        assert_eq!(
            count("Doc", class) + count("Note", class),
            0,
            "{class}: {found:?}"
        );
    }
    let doc = &found.targets[0];
    assert_eq!(
        (doc.name.as_str(), doc.neo4j, doc.state_live, doc.in_sync),
        ("Doc", 97, 100, 94)
    );
    let note = &found.targets[1];
    assert_eq!((note.neo4j, note.state_live, note.in_sync), (48, 50, 46));
    let sink_check = found.sink.as_ref().expect("the sink is checked");
    assert!(
        sink_check.is_clean(),
        "the sink agrees with graph.state: {sink_check:?}"
    );
    assert!(!found.is_clean());

    // Repair through the log (outbox entries the relay publishes) while a processor
    // applies the change topic.
    let running = h.start_processor(sink.clone()).await;
    let relay = start_relay(&h);
    let result = auditor
        .run_once(&options(40, Some(AuditRepairOptions::default())))
        .await
        .unwrap();
    let repair = result.repair.clone().unwrap();
    assert_eq!(
        (repair.upserts, repair.tombstones, repair.skipped),
        (5, 10, 0),
        "{repair:?}"
    );
    assert_eq!(
        (repair.entries.len(), repair.unpublished),
        (15, 0),
        "the relay published every entry"
    );
    assert!(result.remaining.is_clean(), "{:?}", result.remaining);
    assert!(result.is_clean());
    relay.drain_and_stop(&graph).await;
    h.wait_caught_up(Duration::from_secs(90)).await;
    running.stop().await;

    assert_eq!(sink.count_live("docs").await.unwrap(), 97);
    assert_eq!(sink.count_live("notes").await.unwrap(), 48);
    let neo4j: BTreeSet<String> = docs[6..]
        .iter()
        .chain(&notes[4..])
        .cloned()
        .chain(keys("d", 100..103))
        .chain(keys("n", 50..52))
        .collect();
    assert_eq!(
        live_in_state(&h),
        neo4j,
        "graph.state holds exactly Neo4j's nodes"
    );
    // The tombstone went above graph.state's version, and so will a later create.
    assert_eq!(counter(&graph, "node:d-000").await, Some(2));
    assert_eq!(
        counter(&graph, "node:d-100").await,
        Some(1),
        "a new counter"
    );

    // A second audit, through the binary, finds nothing.
    drop(auditor);
    drop(sink);
    let out = h.cli(["audit", "--grace", "0s", "--json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["found"]["classes"]["lost"]["count"], 0);
    assert_eq!(json["found"]["targets"][0]["in_sync"], 97);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loss_above_the_delete_ratio_is_refused_unless_forced() {
    let (h, graph) = harness("audit-guard", "audit2", "").await;
    let docs = keys("d", 0..40);
    create(&graph, "Doc", &docs, 1, true).await;
    relay_until_empty(&h, &graph).await;
    h.process_to_end(h.open_sink()).await;
    delete_behind_the_back(&graph, &docs[..10]).await; // 25 % > 10 %

    let topics = [&h.config.kafka.changes_topic, &h.config.kafka.state_topic];
    let before: Vec<i64> = topics.iter().map(|t| end_of(&h, t)).collect();
    let dry = h.cli([
        "audit",
        "--repair",
        "--dry-run",
        "--no-sink",
        "--grace",
        "0s",
    ]);
    let text = String::from_utf8_lossy(&dry.stdout);
    assert_eq!(dry.status.code(), Some(3), "{text}");
    assert!(
        text.contains("would refuse") && text.contains("Doc=10"),
        "{text}"
    );
    let refused = h.cli(["audit", "--repair", "--no-sink", "--grace", "0s"]);
    let text = String::from_utf8_lossy(&refused.stdout);
    assert_eq!(
        refused.status.code(),
        Some(4),
        "{text}\n{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(
        text.contains("refused, nothing published") && text.contains("tombstones=10"),
        "{text}"
    );
    // Holding only 2 of the 10 findings, the guard still judges the whole loss.
    let capped = h.cli([
        "audit",
        "--repair",
        "--no-sink",
        "--grace",
        "0s",
        "--max-findings",
        "2",
    ]);
    let text = String::from_utf8_lossy(&capped.stdout);
    assert_eq!(capped.status.code(), Some(4), "{text}");
    assert!(
        text.contains("8 more findings counted, not held") && text.contains("tombstones=2"),
        "{text}"
    );
    let after: Vec<i64> = topics.iter().map(|t| end_of(&h, t)).collect();
    assert_eq!(before, after, "nothing published");
    assert_eq!(outbox_depth(&graph).await, 0, "nothing written");
    assert_eq!(
        counter(&graph, "node:d-000").await,
        Some(1),
        "no counter raised"
    );

    let relay = start_relay(&h);
    let forced = h.cli(["audit", "--repair", "--force", "--no-sink", "--grace", "0s"]);
    relay.drain_and_stop(&graph).await;
    let text = String::from_utf8_lossy(&forced.stdout);
    assert_eq!(
        forced.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&forced.stderr)
    );
    assert!(text.contains("tombstones=10"), "{text}");
    let sink = h.open_sink();
    h.process_to_end(sink.clone()).await;
    assert_eq!(sink.count_live(support::COLLECTION).await.unwrap(), 30);
    drop(sink);
    let again = h.cli(["audit", "--grace", "0s"]);
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_below_the_version_of_graph_state_is_behind_a_restored_neo4j() {
    let (h, graph) = harness("audit-restore", "audit3", "").await;
    let docs = keys("d", 0..20);
    create(&graph, "Doc", &docs, 5, true).await;
    relay_until_empty(&h, &graph).await;
    // A restore from a backup: four counters go back to 2. One node is then written
    // again (v3), and its outbox entry failed, so graph.state keeps v5. (Had the relay
    // published v3, compaction could keep it over v5: graph.state would then agree with
    // Neo4j on that node and the sink check would report the sink `ahead`.)
    graph
        .run(query("MATCH (v:CdcVersion) WHERE v.key IN ['node:d-000', 'node:d-001', 'node:d-002', 'node:d-003'] SET v.version = 2"))
        .await
        .unwrap();
    let text = "d-000 after the restore";
    let json = serde_json::to_string(&props("d-000", 5, text)).unwrap();
    graph
        .run(
            query(
                "MATCH (n:Doc {uuid: 'd-000'}), (v:CdcVersion {key: 'node:d-000'})
                 SET n.text = $text, v.version = 3
                 CREATE (:CdcOutbox {event_id: 'after-restore', kind: 'node', key: 'd-000',
                         labels: ['Doc'], op: 'upsert', version: 3, commit_time_ms: 2,
                         created_at: 2, properties: $json, db: 'neo4j', failed: true,
                         error: 'a failed entry is drift, not in flight'})",
            )
            .param("text", text)
            .param("json", json),
        )
        .await
        .unwrap();
    // And one node changed behind the trigger's back, its counter untouched: same
    // version, other content.
    graph
        .run(query(
            "MATCH (n:Doc {uuid: 'd-019'}) SET n.text = 'd-019 changed behind the back'",
        ))
        .await
        .unwrap();

    let out = h.cli(["audit", "--json", "--no-sink", "--grace", "0s"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let found = &report["found"];
    assert_eq!(found["classes"]["behind"]["count"], 4, "{found}");
    assert_eq!(found["classes"]["differs"]["count"], 1, "{found}");
    assert_eq!(found["targets"][0]["in_sync"], 15);
    assert_eq!(found["restored_neo4j"], true);
    assert!(found["runbook"].as_str().unwrap().contains("runbooks.md"));
    let table = h.cli(["audit", "--no-sink", "--grace", "0s"]);
    assert!(String::from_utf8_lossy(&table.stdout).contains("restored Neo4j?"));

    // The repair publishes Neo4j's content above graph.state's version.
    let sink = h.open_sink();
    let mut auditor = Auditor::new(h.config.clone(), None).unwrap();
    let relay = start_relay(&h);
    let result = auditor
        .run_once(&options(8, Some(AuditRepairOptions::default())))
        .await
        .unwrap();
    relay.drain_and_stop(&graph).await;
    assert_eq!(
        result.found.count(AuditClass::Behind),
        4,
        "{:?}",
        result.found
    );
    assert_eq!(result.found.count(AuditClass::Differs), 1);
    assert!(result.remaining.is_clean(), "{:?}", result.remaining);
    assert_eq!(counter(&graph, "node:d-000").await, Some(6));
    h.process_to_end(sink.clone()).await;
    for (key, version, text) in [
        ("d-000", 6, text),
        ("d-019", 6, "d-019 changed behind the back"),
    ] {
        let id = graphcdc_core::mapping::point_id(support::COLLECTION, key);
        let point = sink.get(support::COLLECTION, id).await.unwrap().unwrap();
        assert_eq!(point.version, version, "{key}");
        assert_eq!(point.payload.unwrap()["text"], text, "Neo4j's content won");
    }

    // Another restore, from an older backup: every counter back to 1, d-010 as it was in
    // the backup, d-011 (created after it) gone with its counter. The way out: an epoch.
    drop(auditor);
    for statement in [
        "MATCH (v:CdcVersion) SET v.version = 1",
        "MATCH (n:Doc {uuid: 'd-010'}) SET n.text = 'd-010 as in the backup'",
        "MATCH (n:Doc {uuid: 'd-011'}) DETACH DELETE n",
        "MATCH (v:CdcVersion {key: 'node:d-011'}) DELETE v",
    ] {
        graph.run(query(statement)).await.unwrap();
    }
    // The epoch bump runs while no relay publishes (the outbox is empty); the repair's
    // entries are published by a relay started with it.
    let relay = start_relay(&h);
    let out = h.cli([
        "audit",
        "--bump-epoch",
        "--repair",
        "--no-sink",
        "--grace",
        "0s",
        "--json",
    ]);
    relay.drain_and_stop(&graph).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let epoch = 1i64 << 32;
    assert_eq!(report["epoch"]["epoch"], epoch);
    assert_eq!(report["epoch"]["moved"], 19, "{}", report["epoch"]);
    assert_eq!(report["epoch"]["state_keys"], 20);
    let classes = &report["found"]["classes"];
    assert_eq!(
        [
            &classes["stale"]["count"],
            &classes["lost"]["count"],
            &classes["behind"]["count"]
        ],
        [1, 1, 0],
        "{classes}"
    );
    assert_eq!(report["found"]["targets"][0]["in_sync"], 18);
    let mut rows = graph
        .execute(query("MATCH (v:CdcVersion) RETURN min(v.version) AS low"))
        .await
        .unwrap();
    let low: i64 = rows.next().await.unwrap().unwrap().get("low").unwrap();
    assert!(low >= epoch, "every counter in the epoch: {low}");
    assert_eq!(counter(&graph, "node:d-010").await, Some(epoch + 2));
    assert_eq!(
        counter(&graph, "node:d-011").await,
        Some(epoch + 1),
        "a counter for the key the backup did not know, above its tombstone"
    );
    h.process_to_end(sink.clone()).await;
    assert_eq!(sink.count_live(support::COLLECTION).await.unwrap(), 19);
    let id = graphcdc_core::mapping::point_id(support::COLLECTION, "d-010");
    let point = sink.get(support::COLLECTION, id).await.unwrap().unwrap();
    assert_eq!(point.version, epoch + 2);
    assert_eq!(point.payload.unwrap()["text"], "d-010 as in the backup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_capture_audits_clean_and_relationships_are_repaired() {
    let extra = "
[[mappings]]
relationship_type = \"MENTIONS\"
collection = \"mentions\"
dimension = 4
";
    let (h, graph) = harness("audit-clean", "audit4", extra).await;
    create(&graph, "Doc", &keys("d", 0..30), 2, true).await;
    // Every kind of property the trigger serializes, and relationships keyed both ways,
    // each with what the trigger writes (its marker, a counter, an outbox entry).
    graph
        .run(query(
            "MATCH (d:Doc {uuid: 'd-001'}), (f:Doc {uuid: 'd-002'})
             SET d.n = 7, d.x = 1.5, d.flag = true, d.tags = ['a', 'b'],
                 d.at = datetime('2024-05-01T10:00:00Z'), d.day = date('2024-05-01')
             CREATE (e:Entity {uuid: 'e-1', name: 'Bob'}),
                    (d)-[:MENTIONS {uuid: 'm-1', w: 0.5, _cdc: ['m-1', 'MENTIONS', 'd-001', 'e-1']}]->(e),
                    (f)-[:MENTIONS {w: 1.5, _cdc: ['d-002|MENTIONS|e-1', 'MENTIONS', 'd-002', 'e-1']}]->(e)
             WITH d
             MATCH (v:CdcVersion {key: 'node:d-001'}) SET v.version = 3
             CREATE (:CdcVersion {key: 'relationship:m-1', version: 1}),
                    (:CdcVersion {key: 'relationship:d-002|MENTIONS|e-1', version: 1}),
                    (:CdcOutbox {event_id: 'd1-v3', kind: 'node', key: 'd-001', labels: ['Doc'],
                      op: 'upsert', version: 3, commit_time_ms: 3, created_at: 3, db: 'neo4j',
                      properties: '{\"uuid\":\"d-001\",\"text\":\"d-001 v2\",\"embedding\":[1.0,2.0,0.5,-0.5],\"n\":7,\"x\":1.5,\"flag\":true,\"tags\":[\"a\",\"b\"],\"at\":\"2024-05-01T10:00Z\",\"day\":\"2024-05-01\"}'}),
                    (:CdcOutbox {event_id: 'm1', kind: 'relationship', key: 'm-1', op: 'upsert',
                      version: 1, commit_time_ms: 3, created_at: 3, properties: '{\"uuid\":\"m-1\",\"w\":0.5}',
                      rel_type: 'MENTIONS', start_key: 'd-001', end_key: 'e-1', db: 'neo4j'}),
                    (:CdcOutbox {event_id: 'm2', kind: 'relationship', key: 'd-002|MENTIONS|e-1',
                      op: 'upsert', version: 1, commit_time_ms: 3, created_at: 3, properties: '{\"w\":1.5}',
                      rel_type: 'MENTIONS', start_key: 'd-002', end_key: 'e-1', db: 'neo4j'})",
        ))
        .await
        .unwrap();
    relay_until_empty(&h, &graph).await;

    let mut auditor = Auditor::new(h.config.clone(), None).unwrap();
    let report = auditor.check(&options(7, None)).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.findings);
    let synced: Vec<(String, u64, u64)> = report
        .targets
        .iter()
        .map(|t| (t.name.clone(), t.neo4j, t.in_sync))
        .collect();
    assert_eq!(
        synced,
        [("Doc".to_owned(), 30, 30), ("[:MENTIONS]".to_owned(), 2, 2)]
    );

    // The other capture path: a backfill writes every entity again (new versions), the
    // relay publishes them; still clean.
    let checkpoint = h.dir.path().join("backfill.json");
    let done = backfill::run(&h.config, &checkpoint, 7, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(done.written, 32);
    let relayed = relay_until_empty(&h, &graph).await;
    assert_eq!(relayed.published.get(), 32);
    let report = auditor.check(&options(7, None)).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.findings);
    assert_eq!(report.targets[0].in_sync, 30);
    assert_eq!(counter(&graph, "node:d-001").await, Some(4));

    // A change the relay has not published yet is in flight, not drift.
    create(&graph, "Doc", &keys("d", 30..31), 1, true).await;
    let report = auditor.check(&options(7, None)).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.findings);
    assert_eq!(
        (report.targets[0].neo4j, report.targets[0].in_flight),
        (31, 1)
    );

    // Relationships behind the trigger's back: m-1 deleted, one created; both repaired
    // through the log (one of two deleted is over the ratio: forced).
    graph
        .run(query(
            "MATCH ()-[r:MENTIONS {uuid: 'm-1'}]->() DELETE r
             WITH 1 AS one
             MATCH (d:Doc {uuid: 'd-003'}), (e:Entity {uuid: 'e-1'})
             CREATE (d)-[:MENTIONS {w: 2.5}]->(e)",
        ))
        .await
        .unwrap();
    let repair = AuditRepairOptions {
        force: true,
        ..AuditRepairOptions::default()
    };
    let relay = start_relay(&h);
    let result = auditor.run_once(&options(7, Some(repair))).await.unwrap();
    relay.drain_and_stop(&graph).await;
    let counts = per_label(&result.found);
    assert_eq!(
        [
            counts[&("[:MENTIONS]".to_owned(), "lost")],
            counts[&("[:MENTIONS]".to_owned(), "uncaptured")]
        ],
        [1, 1],
        "{:?}",
        result.found
    );
    let done = result.repair.unwrap();
    assert_eq!((done.upserts, done.tombstones), (1, 1), "{done:?}");
    assert!(result.remaining.is_clean(), "{:?}", result.remaining);
    assert_eq!(
        counter(&graph, "relationship:m-1").await,
        Some(3),
        "above the backfill's v2"
    );
    assert_eq!(
        counter(&graph, "relationship:d-003|MENTIONS|e-1").await,
        Some(1)
    );
    assert!(!live_in_state(&h).contains("m-1"));
}
