//! Capture against a real Bolt server (ArcadeDB, started by tests/run.sh): the relay,
//! its lease, and the resumable backfill. ArcadeDB has no APOC, so the tests write
//! outbox nodes exactly as the `before`-phase trigger in deploy/neo4j would.

mod support;

use graphcdc_core::capture::relay::Relay;
use graphcdc_core::capture::{connect, outbox_event, OutboxRow};
use graphcdc_core::codec::Codec;
use graphcdc_core::event::{ChangeEvent, Op};
use graphcdc_core::stats::{RelayStats, Stats};
use neo4rs::{query, Graph};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{Harness, Model};
use tokio_util::sync::CancellationToken;

const CATCH_UP: Duration = Duration::from_secs(90);

/// Bolt server of tests/run.sh; each test has its own database there.
fn neo4j_section(database: &str) -> String {
    let uri = std::env::var("GRAPHCDC_TEST_BOLT")
        .expect("GRAPHCDC_TEST_BOLT is not set: run the tests with tests/run.sh, which starts a Bolt server");
    let password = std::env::var("GRAPHCDC_TEST_BOLT_PASSWORD").unwrap_or_default();
    format!(
        "[neo4j]\nuri = \"{uri}\"\nuser = \"root\"\npassword = \"{password}\"\ndatabase = \"{database}\"\n\n[relay]\nbatch_size = 100\npoll_interval_ms = 50\nlease_ttl_ms = 1500\n"
    )
}

async fn harness(name: &str, database: &str) -> (Harness, Graph) {
    let h = Harness::with_extra(name, &neo4j_section(database)).await;
    let graph = connect(&h.config.neo4j).unwrap();
    // Each test owns its database: start from an empty one.
    graph.run(query("MATCH (n) DETACH DELETE n")).await.unwrap();
    (h, graph)
}

/// What the trigger writes for one change: an outbox node in the contract's shape.
async fn write_outbox(graph: &Graph, events: &[ChangeEvent]) {
    for chunk in events.chunks(200) {
        let rows: Vec<HashMap<String, neo4rs::BoltType>> =
            chunk.iter().map(outbox_params).collect();
        graph
            .run(query(
                "UNWIND $rows AS r CREATE (:CdcOutbox {event_id: r.event_id, kind: 'node', key: r.key,
                 labels: r.labels, op: r.op, version: r.version, commit_time_ms: r.commit_time_ms,
                 properties: r.properties, db: 'neo4j'})",
            ).param("rows", rows))
            .await
            .unwrap();
    }
}

fn outbox_params(event: &ChangeEvent) -> HashMap<String, neo4rs::BoltType> {
    let mut properties = event.properties.clone();
    if let Some(vector) = &event.vector {
        let list = vector
            .iter()
            .map(|x| graphcdc_core::event::PropertyValue::Double(*x as f64))
            .collect();
        properties.insert(
            "embedding".into(),
            graphcdc_core::event::PropertyValue::List(list),
        );
    }
    let op = match event.op {
        Op::Upsert => "upsert",
        Op::Delete => "delete",
    };
    HashMap::from([
        ("event_id".into(), event.event_id.clone().into()),
        ("key".into(), event.key.clone().into()),
        ("labels".into(), event.labels.clone().into()),
        ("op".into(), op.into()),
        ("version".into(), event.version.into()),
        ("commit_time_ms".into(), event.commit_time_ms.into()),
        (
            "properties".into(),
            serde_json::to_string(&properties).unwrap().into(),
        ),
    ])
}

async fn outbox_depth(graph: &Graph) -> i64 {
    let mut rows = graph
        .execute(query(
            "MATCH (o:CdcOutbox) WHERE o.failed IS NULL RETURN count(o) AS depth",
        ))
        .await
        .unwrap();
    rows.next().await.unwrap().unwrap().get("depth").unwrap()
}

/// Run a relay in the test until the outbox is empty, then stop it.
async fn relay_until_empty(h: &Harness, graph: &Graph) -> Arc<RelayStats> {
    let stats = Arc::new(RelayStats::default());
    let relay = Relay::new(h.config.clone(), stats.clone()).unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(relay.run(shutdown.clone()));
    wait_outbox_empty(graph).await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    stats
}

async fn wait_outbox_empty(graph: &Graph) {
    let deadline = Instant::now() + CATCH_UP;
    while outbox_depth(graph).await > 0 {
        assert!(Instant::now() < deadline, "outbox not drained");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every record of `topic`, in partition order: (key, value).
fn read_all(h: &Harness, topic: &str) -> Vec<(String, Option<Vec<u8>>)> {
    let mut client = graphcdc_core::kafka::client_config(&h.config.kafka);
    client
        .set("group.id", support::unique("reader"))
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = client.create().unwrap();
    let mut tpl = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for p in 0..support::PARTITIONS {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .unwrap();
        if high > 0 {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
            ends.insert(p, high);
        }
    }
    let mut out = Vec::new();
    if ends.is_empty() {
        return out;
    }
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + CATCH_UP;
    while !ends.is_empty() {
        assert!(
            Instant::now() < deadline,
            "topic {topic} not read to its end"
        );
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.unwrap();
        if ends
            .get(&message.partition())
            .is_some_and(|end| message.offset() + 1 >= *end)
        {
            ends.remove(&message.partition());
        }
        let key = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
        out.push((key, message.payload().map(<[u8]>::to_vec)));
    }
    out
}

fn stream(keys: usize, versions: i64) -> Vec<ChangeEvent> {
    let mut events = Vec::new();
    for v in 1..=versions {
        for k in 0..keys {
            let op = if v == versions && k % 5 == 0 {
                Op::Delete
            } else {
                Op::Upsert
            };
            events.push(support::doc(&format!("doc-{k}"), v, op));
        }
    }
    events
}

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
                     version: 99, commit_time_ms: 0, properties: 'not json'})",
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_of_20000_nodes_resumes_after_a_kill_and_publishes_each_once() {
    let (h, graph) = harness("backfill", "cdc4").await;
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
    let config = h.config_file();
    let checkpoint = h.dir.path().join("backfill.json");
    let backfill = || {
        Command::new(env!("CARGO_BIN_EXE_graphcdc"))
            .args(["backfill", "--page-size", "500", "--config"])
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
            .and_then(|v| v["labels"]["Doc"]["published"].as_u64())
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

    let mut seen: HashMap<String, usize> = HashMap::new();
    for (key, value) in read_all(&h, &h.config.kafka.state_topic) {
        assert!(value.is_some());
        *seen.entry(key).or_default() += 1;
    }
    assert_eq!(seen.len(), total, "every node in the state topic");
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "published more than once: {:?}",
        &twice[..twice.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relationship_change_re_emits_the_node_with_its_context() {
    let context = "\n[[mappings.context]]\nfield = \"mentioned_entities\"\nrelationship = \"MENTIONS\"\nproperties = [\"name\", \"uuid\"]\n";
    let h = Harness::with_extra("context", &format!("{}{context}", neo4j_section("cdc5"))).await;
    let graph = connect(&h.config.neo4j).unwrap();
    graph.run(query("MATCH (n) DETACH DELETE n")).await.unwrap();
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
    relay_until_empty(&h, &graph).await;

    // The trigger's view of a new relationship: an outbox entry of kind relationship.
    graph
        .run(query(
            "MATCH (c:Doc {uuid: 'c1'}), (b:Entity {uuid: 'e2'}) CREATE (c)-[:MENTIONS]->(b)
             CREATE (:CdcOutbox {event_id: 'rel-1', kind: 'relationship', key: 'c1|MENTIONS|e2',
                     op: 'upsert', version: 1, commit_time_ms: 1, properties: '{}',
                     rel_type: 'MENTIONS', start_key: 'c1', end_key: 'e2', db: 'neo4j'})",
        ))
        .await
        .unwrap();
    relay_until_empty(&h, &graph).await;

    let sink = h.open_sink();
    h.process_to_end(sink.clone()).await;
    let point = sink
        .get(
            support::COLLECTION,
            graphcdc_core::mapping::point_id(support::COLLECTION, "c1"),
        )
        .await
        .unwrap()
        .unwrap();
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
