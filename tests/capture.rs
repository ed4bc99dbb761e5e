//! Capture against a real Bolt server (ArcadeDB, started by tests/run.sh): the relay,
//! its lease, and the resumable backfill. ArcadeDB has no APOC, so the tests write
//! outbox nodes exactly as the `before`-phase trigger in deploy/neo4j would.

#[path = "support/bolt.rs"]
mod bolt;
mod support;

use bolt::{
    empty_database, harness, neo4j_section, neo4j_section_with, outbox_depth, read_all,
    relay_harness, relay_until_empty, start_relay, stream, wait_outbox_empty, write_outbox,
    CATCH_UP, LEASE_TTL_MS,
};
use graphcdc_core::capture::outbox_event;
use graphcdc_core::capture::relay::{self, LeaseLost, Relay};
use graphcdc_core::capture::OutboxRow;
use graphcdc_core::codec::Codec;
use graphcdc_core::event::Op;
use graphcdc_core::stats::{RelayStats, Stats};
use neo4rs::{query, Graph};
use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::Model;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_publishes_the_outbox_and_the_processor_applies_it() {
    let (h, graph) = harness("relay", "cdc1").await;
    let events = stream(60, 3);
    let model = Model::of(&events);
    write_outbox(&graph, &events).await;
    // An entry that cannot become an event must not block the others.
    graph
        .run(query(
            "CREATE (:CdcOutbox {event_id: 'broken', kind: 'node', key: 'doc-0', op: 'upsert',
                     version: 99, commit_time_ms: 0, created_at: 0, properties: 'not json'})",
        ))
        .await
        .unwrap();

    let stats = relay_until_empty(&h, &graph).await;
    assert_eq!(stats.failed.get(), 1);
    let mut rows = graph
        .execute(query(
            "MATCH (o:CdcOutbox) RETURN o.event_id AS id, o.error AS error",
        ))
        .await
        .unwrap();
    let row = rows
        .next()
        .await
        .unwrap()
        .expect("the broken entry is kept");
    assert_eq!(row.get::<String>("id").unwrap(), "broken");
    assert!(row.get::<String>("error").unwrap().contains("JSON"));

    let sink = h.open_sink();
    h.process_to_end(sink.clone()).await;
    let cmp = model.compare(sink.as_ref()).await;
    assert!(cmp.is_exact(), "{cmp:?}");
    assert_eq!(cmp.live_points, 48, "60 docs, 12 deleted in the last round");

    // The state topic holds each key's states in version order (at-least-once: a version
    // may repeat, never go back).
    let codec = Codec::local();
    let mut last_version: HashMap<String, i64> = HashMap::new();
    for (key, value) in read_all(&h, &h.config.kafka.state_topic) {
        let Some(value) = value else {
            last_version.insert(key, i64::MAX);
            continue;
        };
        let state = codec.decode_state(&value).await.unwrap();
        let previous = last_version.insert(key.clone(), state.version).unwrap_or(0);
        assert!(
            state.version >= previous,
            "{key}: v{} after v{previous}",
            state.version
        );
    }
    assert_eq!(last_version.len(), 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_killed_between_publish_and_delete_duplicates_but_loses_nothing() {
    let (h, graph) = harness("relay-kill", "cdc2").await;
    let events = stream(600, 4);
    let model = Model::of(&events);
    write_outbox(&graph, &events).await;
    let config = h.config_file();
    let mut kills = 0;
    let mut depth = outbox_depth(&graph).await;
    while depth > 0 && kills < 4 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_graphcdc"))
            .args(["relay", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Kill as soon as the relay made progress: mid-outbox, maybe mid-round.
        let deadline = Instant::now() + CATCH_UP;
        while outbox_depth(&graph).await >= depth {
            assert!(Instant::now() < deadline, "relay made no progress");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child.kill().unwrap(); // SIGKILL: no lease release, no clean shutdown
        child.wait().unwrap();
        kills += 1;
        depth = outbox_depth(&graph).await;
    }
    assert!(kills >= 2, "the relay was killed mid-outbox");
    // A fresh relay takes over once the dead one's lease expired, and drains the rest.
    relay_until_empty(&h, &graph).await;

    let published = read_all(&h, &h.config.kafka.changes_topic).len();
    assert!(
        published >= events.len(),
        "at least once: {published} of {}",
        events.len()
    );
    let sink = h.open_sink();
    let stats = h.process_to_end(sink.clone()).await;
    let cmp = model.compare(sink.as_ref()).await;
    assert!(
        cmp.is_exact(),
        "duplicates but no loss, no regression: {cmp:?}"
    );
    assert_eq!(
        Stats::get(&stats.applied) + Stats::get(&stats.skipped_stale),
        published as u64,
        "every published record applied or fenced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_relay_waits_while_the_first_holds_the_lease() {
    let (h, graph) = harness("lease", "cdc3").await;
    let first = Relay::new(h.config.clone(), Arc::new(RelayStats::default())).unwrap();
    let second_stats = Arc::new(RelayStats::default());
    let second = Relay::new(h.config.clone(), second_stats.clone()).unwrap();
    assert!(first.acquire_lease().await.unwrap());
    assert!(!second.acquire_lease().await.unwrap(), "lease is held");
    assert!(first.acquire_lease().await.unwrap(), "the holder renews");

    // The second relay runs but publishes nothing while the first keeps renewing.
    write_outbox(&graph, &stream(5, 1)).await;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(second.run(shutdown.clone()));
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(first.acquire_lease().await.unwrap());
    }
    assert_eq!(
        outbox_depth(&graph).await,
        5,
        "the waiting relay published nothing"
    );
    assert_eq!(second_stats.published.get(), 0);

    // The first stops renewing: after the lease time the second takes over.
    wait_outbox_empty(&graph).await;
    assert_eq!(second_stats.holds_lease.get(), 1.0);
    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert!(first.acquire_lease().await.unwrap(), "released on shutdown");
}

/// The backfill writes outbox entries that a relay (running throughout) publishes. Killed
/// mid-run and resumed, it writes every node; a page cut between its commit and its
/// checkpoint is written again at higher versions (at most one page), and graph.state
/// ends on each node's counter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_of_20000_nodes_resumes_after_a_kill_and_graph_state_ends_on_every_counter() {
    let h = relay_harness("backfill", &neo4j_section_with("cdc4", 1_000)).await;
    let graph = empty_database(&h).await;
    let total = 20_000;
    for start in (0..total).step_by(2_000) {
        let keys: Vec<String> = (start..start + 2_000)
            .map(|i| format!("node-{i:05}"))
            .collect();
        graph
            .run(query(
                "UNWIND $keys AS k CREATE (:Doc {uuid: k, text: 'backfilled ' + k, embedding: [1.0, 0.5, 0.25, 0.125]})",
            ).param("keys", keys))
            .await
            .unwrap();
    }
    let relay = start_relay(&h);
    let config = h.config_file();
    let checkpoint = h.dir.path().join("backfill.json");
    let page = 500;
    let backfill = || {
        Command::new(env!("CARGO_BIN_EXE_graphcdc"))
            .args(["backfill", "--page-size", &page.to_string(), "--config"])
            .arg(&config)
            .arg("--checkpoint")
            .arg(&checkpoint)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut first = backfill();
    let deadline = Instant::now() + CATCH_UP;
    loop {
        let done: u64 = std::fs::read_to_string(&checkpoint)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["labels"]["Doc"]["written"].as_u64())
            .unwrap_or(0);
        if done >= 5_000 {
            break;
        }
        assert!(Instant::now() < deadline, "backfill made no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let second = backfill().wait_with_output().unwrap();
    let line = String::from_utf8_lossy(&second.stdout);
    assert!(
        second.status.success() && line.contains("complete=true"),
        "{line}"
    );
    let stats = relay.drain_and_stop(&graph).await;

    let codec = Codec::local();
    let mut versions: HashMap<String, Vec<i64>> = HashMap::new();
    for (key, value) in read_all(&h, &h.config.kafka.state_topic) {
        let state = codec
            .decode_state(&value.expect("no tombstone"))
            .await
            .unwrap();
        versions.entry(key).or_default().push(state.version);
    }
    assert_eq!(versions.len(), total, "every node in the state topic");
    let twice: Vec<_> = versions.iter().filter(|(_, v)| v.len() > 1).collect();
    assert!(
        twice.len() <= page,
        "more than the page cut by the kill written twice: {}",
        twice.len()
    );
    let mut rows = graph
        .execute(query(
            "MATCH (v:CdcVersion) RETURN v.key AS key, v.version AS version",
        ))
        .await
        .unwrap();
    let mut counters = 0;
    while let Some(row) = rows.next().await.unwrap() {
        let key: String = row.get("key").unwrap();
        let version: i64 = row.get("version").unwrap();
        let published = &versions[key.trim_start_matches("node:")];
        assert!(
            published.windows(2).all(|w| w[0] < w[1]),
            "{key}: in version order {published:?}"
        );
        assert_eq!(
            published.last(),
            Some(&version),
            "{key}: graph.state ends on the counter"
        );
        counters += 1;
    }
    assert_eq!(counters, total);
    assert_eq!(
        stats.published.get() as usize,
        versions.values().map(Vec::len).sum::<usize>()
    );
}

/// Chunk c1 (v1, published) mentions Bob; Alice is not mentioned yet.
async fn context_graph(h: &support::Harness) -> Graph {
    let graph = empty_database(h).await;
    graph
        .run(query(
            "CREATE (c:Doc {uuid: 'c1', text: 'c1 v1', embedding: [1.0, 1.0, 0.5, -0.5]}),
                    (a:Entity {uuid: 'e1', name: 'Bob'}), (b:Entity {uuid: 'e2', name: 'Alice'}),
                    (:CdcVersion {key: 'node:c1', version: 1}),
                    (c)-[:MENTIONS]->(a)",
        ))
        .await
        .unwrap();
    write_outbox(&graph, &[support::doc("c1", 1, Op::Upsert)]).await;
    relay_until_empty(h, &graph).await;
    graph
}

/// Chunk c1 as stored after a processor applied the change topic to its end.
async fn processed_c1(h: &support::Harness) -> graphcdc_core::sink::StoredPoint {
    let sink = h.open_sink();
    h.process_to_end(sink.clone()).await;
    let id = graphcdc_core::mapping::point_id(support::COLLECTION, "c1");
    sink.get(support::COLLECTION, id).await.unwrap().unwrap()
}

/// c1 now mentions Alice: the relationship and the trigger's outbox entry for it.
const NEW_MENTION: &str =
    "MATCH (c:Doc {uuid: 'c1'}), (b:Entity {uuid: 'e2'}) CREATE (c)-[:MENTIONS]->(b)
     CREATE (:CdcOutbox {event_id: 'rel-1', kind: 'relationship', key: 'c1|MENTIONS|e2',
             op: 'upsert', version: 1, commit_time_ms: 1, created_at: 1, properties: '{}',
             rel_type: 'MENTIONS', start_key: 'c1', end_key: 'e2', db: 'neo4j'})";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relationship_change_re_emits_the_node_with_its_context() {
    let context = "\n[[mappings.context]]\nfield = \"mentioned_entities\"\nrelationship = \"MENTIONS\"\nproperties = [\"name\", \"uuid\"]\n";
    let h = relay_harness("context", &format!("{}{context}", neo4j_section("cdc5"))).await;
    let graph = context_graph(&h).await;

    // The trigger's view of a new relationship: an outbox entry of kind relationship.
    graph.run(query(NEW_MENTION)).await.unwrap();
    relay_until_empty(&h, &graph).await;

    let point = processed_c1(&h).await;
    assert_eq!(point.version, 2, "re-emitted with a new version");
    let payload = point.payload.unwrap();
    assert_eq!(
        payload["mentioned_entities_name"],
        serde_json::json!(["Alice", "Bob"])
    );
    assert_eq!(
        payload["mentioned_entities_uuid"],
        serde_json::json!(["e2", "e1"]),
        "lists line up"
    );
    assert_eq!(payload["text"], "c1 v1");
}

/// The versions of `key` on the change topic, in publish order (the state topic gets the
/// same records, but compaction may already have removed the older ones).
async fn published_versions(h: &support::Harness, key: &str) -> Vec<i64> {
    let codec = Codec::local();
    let mut versions = Vec::new();
    for (k, value) in read_all(h, &h.config.kafka.changes_topic) {
        if k == key {
            let event = codec.decode_change(&value.unwrap()).await.unwrap();
            versions.push(event.version);
        }
    }
    versions
}

async fn pending(graph: &Graph, key: &str) -> Vec<i64> {
    let mut rows = graph
        .execute(
            query("MATCH (o:CdcOutbox {key: $key}) RETURN o.version AS v ORDER BY v")
                .param("key", key),
        )
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(row) = rows.next().await.unwrap() {
        out.push(row.get::<i64>("v").unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_takes_the_oldest_entries_by_the_indexed_created_at() {
    let (h, graph) = harness("oldest", "relay1").await;
    // 150 keys; `created_at` (indexed) and `commit_time_ms` (not) disagree on which are
    // oldest, and the entries are written newest `created_at` first.
    let base = 1_700_000_000_000i64;
    for i in (0..150i64).rev() {
        graph
            .run(
                query(
                    "CREATE (:CdcOutbox {event_id: $id, kind: 'node', key: $key, labels: ['Doc'],
                     op: 'delete', version: 1, commit_time_ms: $commit, created_at: $created,
                     properties: '{}', db: 'neo4j'})",
                )
                .param("id", format!("e{i}"))
                .param("key", format!("k{i:03}"))
                .param("commit", base + 10_000 - i)
                .param("created", base + i),
            )
            .await
            .unwrap();
    }
    let relay = Relay::new(h.config.clone(), Arc::new(RelayStats::default())).unwrap();
    assert!(relay.acquire_lease().await.unwrap());
    assert_eq!(relay.publish_round().await.unwrap(), 100, "batch_size");
    let mut left: Vec<String> = Vec::new();
    let mut rows = graph
        .execute(query("MATCH (o:CdcOutbox) RETURN o.key AS k ORDER BY k"))
        .await
        .unwrap();
    while let Some(row) = rows.next().await.unwrap() {
        left.push(row.get("k").unwrap());
    }
    let newest: Vec<String> = (100..150).map(|i| format!("k{i:03}")).collect();
    assert_eq!(left, newest, "the 100 oldest by created_at went first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_lost_the_lease_publishes_and_deletes_nothing() {
    let (h, graph) = harness("fence", "relay2").await;
    assert!(
        relay::ACQUIRE_LEASE.contains("timestamp()") && !relay::ACQUIRE_LEASE.contains("$now"),
        "lease expiry on the database's clock"
    );
    let events = stream(5, 1);
    write_outbox(&graph, &events).await;
    let ids: Vec<String> = events.iter().map(|e| e.event_id.clone()).collect();
    let stale = Relay::new(h.config.clone(), Arc::new(RelayStats::default())).unwrap();
    let successor = Relay::new(h.config.clone(), Arc::new(RelayStats::default())).unwrap();
    assert!(stale.acquire_lease().await.unwrap());
    assert!(!successor.acquire_lease().await.unwrap(), "lease is held");
    // The holder stalls (paused, or stuck on the broker) past the lease time; the
    // successor takes the lease over with a new epoch.
    tokio::time::sleep(Duration::from_millis(LEASE_TTL_MS + 300)).await;
    assert!(
        successor.acquire_lease().await.unwrap(),
        "expired lease taken"
    );
    assert_eq!(
        successor.epoch(),
        stale.epoch() + 1,
        "a takeover increments the epoch"
    );
    assert!(successor.acquire_lease().await.unwrap());
    assert_eq!(successor.epoch(), stale.epoch() + 1, "a renewal keeps it");

    // The stale relay resumes: it may not publish...
    let err = stale.publish_round().await.unwrap_err();
    assert!(err.downcast_ref::<LeaseLost>().is_some(), "{err:#}");
    assert_eq!(outbox_depth(&graph).await, 5, "nothing deleted");
    assert!(
        read_all(&h, &h.config.kafka.changes_topic).is_empty(),
        "nothing published"
    );
    // ...and if it lost the lease while publishing, its delete affects nothing.
    assert_eq!(stale.delete_published(&ids).await.unwrap(), 0);
    assert_eq!(outbox_depth(&graph).await, 5);
    assert!(
        !stale.acquire_lease().await.unwrap(),
        "the successor holds it"
    );

    // The successor owns the entries.
    assert_eq!(successor.publish_round().await.unwrap(), 5);
    assert_eq!(outbox_depth(&graph).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_must_outlive_the_delivery_timeout() {
    let h = relay_harness("ttl", &neo4j_section("relay2")).await;
    let mut config = h.config.clone();
    config.relay.lease_ttl_ms = 2_000;
    let err = Relay::new(config.clone(), Arc::new(RelayStats::default()))
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("relay.lease_ttl_ms") && err.contains("message.timeout.ms"),
        "{err}"
    );
    config.kafka.properties.remove("message.timeout.ms");
    config.relay.lease_ttl_ms = 15_000;
    let err = relay::check_lease_ttl(&config).unwrap_err().to_string();
    assert!(err.contains("30000") && err.contains("(default)"), "{err}");
    config.relay.lease_ttl_ms = 45_000;
    relay::check_lease_ttl(&config).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_context_re_emit_goes_through_the_outbox_in_version_order() {
    let context = "\n[[mappings.context]]\nfield = \"mentioned_entities\"\nrelationship = \"MENTIONS\"\nproperties = [\"name\", \"uuid\"]\n";
    // One entry per round, so a round sees the relationship but not the node's own
    // newer change.
    let h = relay_harness(
        "reemit",
        &format!("{}{context}", neo4j_section_with("relay3", 1)),
    )
    .await;
    let graph = context_graph(&h).await;

    // A relationship is created, then the node itself changes (v2): the trigger's entries.
    graph.run(query(NEW_MENTION)).await.unwrap();
    graph
        .run(query(
            "MATCH (c:Doc {uuid: 'c1'}), (v:CdcVersion {key: 'node:c1'})
             SET c.text = 'c1 v2', v.version = 2
             CREATE (:CdcOutbox {event_id: 'c1-v2', kind: 'node', key: 'c1', labels: ['Doc'],
                     op: 'upsert', version: 2, commit_time_ms: 2, created_at: 2,
                     properties: '{\"uuid\":\"c1\",\"text\":\"c1 v2\",\"embedding\":[1.0,2.0,0.5,-0.5]}',
                     db: 'neo4j'})",
        ))
        .await
        .unwrap();

    // The round of the relationship re-emits c1 (v3) into the outbox, in the transaction
    // that bumped its version, instead of publishing v3 ahead of the pending v2.
    let relay = Relay::new(h.config.clone(), Arc::new(RelayStats::default())).unwrap();
    assert!(relay.acquire_lease().await.unwrap());
    relay.publish_round().await.unwrap();
    assert_eq!(
        pending(&graph, "c1").await,
        vec![2, 3],
        "the re-emit is an outbox entry"
    );
    assert_eq!(
        published_versions(&h, "c1").await,
        vec![1],
        "and not published yet"
    );
    drop(relay);
    relay_until_empty(&h, &graph).await;
    assert_eq!(
        published_versions(&h, "c1").await,
        vec![1, 2, 3],
        "published (to the change and state topics) in version order"
    );

    let point = processed_c1(&h).await;
    assert_eq!(point.version, 3);
    let payload = point.payload.unwrap();
    assert_eq!(payload["text"], "c1 v2");
    assert_eq!(
        payload["mentioned_entities_name"],
        serde_json::json!(["Alice", "Bob"])
    );
}

#[test]
fn outbox_rows_map_to_contract_events() {
    let row: OutboxRow = serde_json::from_value(serde_json::json!({
        "event_id": "e", "kind": "relationship", "key": "r1", "op": "upsert", "version": 2,
        "commit_time_ms": 5, "properties": "{\"w\": 1.5}", "rel_type": "MENTIONS",
        "start_key": "c1", "end_key": "e1"
    }))
    .unwrap();
    let event = outbox_event(row).unwrap();
    assert_eq!(event.relationship.unwrap().rel_type, "MENTIONS");
}

/// Issue 12, item 3 through the relay: the trigger's entry for a `[Doc, Entity]` node that
/// lost `Entity` names it in `removed_labels`; the relay publishes it, and the processor
/// tombstones the entities point at that version while docs gets the update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_label_in_the_outbox_tombstones_that_collection_through_the_relay() {
    let entities = "\n[[mappings]]\nlabel = \"Entity\"\ncollection = \"entities\"\ndimension = 4\nvector_property = \"embedding\"\n";
    let h = relay_harness(
        "relay-labels",
        &format!("{}{entities}", neo4j_section("ctx4")),
    )
    .await;
    let graph = empty_database(&h).await;
    let mut v1 = support::doc("n1", 1, Op::Upsert);
    v1.labels.push("Entity".into());
    let v2 = support::doc("n1", 2, Op::Upsert);
    write_outbox(&graph, &[v1, v2]).await;
    // The v2 entry as the trigger writes it for `REMOVE n:Entity`.
    graph
        .run(query(
            "MATCH (o:CdcOutbox {key: 'n1', version: 2})
             SET o.removed_labels = ['Entity'], o.changed = []",
        ))
        .await
        .unwrap();
    relay_until_empty(&h, &graph).await;
    let codec = Codec::local();
    let mut published = Vec::new();
    for (_, value) in read_all(&h, &h.config.kafka.changes_topic) {
        let event = codec.decode_change(&value.unwrap()).await.unwrap();
        published.push((event.version, event.labels, event.removed_labels));
    }
    assert_eq!(
        published,
        vec![
            (1, vec!["Doc".to_owned(), "Entity".to_owned()], vec![]),
            (2, vec!["Doc".to_owned()], vec!["Entity".to_owned()]),
        ]
    );

    let sink = h.open_sink();
    h.process_to_end(sink.clone()).await;
    let get = |collection: &'static str| {
        let sink = sink.clone();
        let id = graphcdc_core::mapping::point_id(collection, "n1");
        async move { sink.get(collection, id).await.unwrap().unwrap() }
    };
    let (doc, entity) = (get("docs").await, get("entities").await);
    assert!(!doc.deleted && doc.version == 2, "{doc:?}");
    assert!(entity.deleted && entity.version == 2, "{entity:?}");
    assert_eq!(sink.count_live("entities").await.unwrap(), 0);
    assert_eq!(sink.count_live("docs").await.unwrap(), 1);
}
