//! Helpers of the capture tests against a real Bolt server (ArcadeDB, started by
//! tests/run.sh): per-test databases, outbox entries written as the trigger writes them,
//! the outbox depth, a relay run to the end, and topics read back.

use crate::support::{self, Harness};
use graphcdc_core::capture::connect;
use graphcdc_core::capture::relay::Relay;
use graphcdc_core::event::{ChangeEvent, Op};
use graphcdc_core::stats::RelayStats;
use neo4rs::{query, Graph};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub const CATCH_UP: Duration = Duration::from_secs(90);

/// Lease time of the tests: short, so takeovers are quick.
pub const LEASE_TTL_MS: u64 = 3_000;

/// Producer delivery timeout of the tests: below the lease time, as the relay requires.
pub const DELIVERY_TIMEOUT_MS: &str = "2500";

/// Bolt server of tests/run.sh; each test has its own database there.
pub fn neo4j_section(database: &str) -> String {
    neo4j_section_with(database, 100)
}

/// As [`neo4j_section`], with `batch_size` outbox entries per round.
pub fn neo4j_section_with(database: &str, batch_size: usize) -> String {
    let uri = std::env::var("GRAPHCDC_TEST_BOLT")
        .expect("GRAPHCDC_TEST_BOLT is not set: run the tests with tests/run.sh, which starts a Bolt server");
    let password = std::env::var("GRAPHCDC_TEST_BOLT_PASSWORD").unwrap_or_default();
    format!(
        "[neo4j]\nuri = \"{uri}\"\nuser = \"root\"\npassword = \"{password}\"\ndatabase = \"{database}\"\n\n[relay]\nbatch_size = {batch_size}\npoll_interval_ms = 50\nlease_ttl_ms = {LEASE_TTL_MS}\n"
    )
}

/// A harness whose producers time out below the lease time, with `extra` TOML.
pub async fn relay_harness(name: &str, extra: &str) -> Harness {
    Harness::on_broker_with(
        name,
        &support::bootstrap(),
        &[("message.timeout.ms", DELIVERY_TIMEOUT_MS)],
        extra,
    )
    .await
}

pub async fn harness(name: &str, database: &str) -> (Harness, Graph) {
    let h = relay_harness(name, &neo4j_section(database)).await;
    let graph = empty_database(&h).await;
    (h, graph)
}

/// Each test owns its database: start from an empty one, with the indexes of
/// deploy/neo4j/constraints.cypher.
pub async fn empty_database(h: &Harness) -> Graph {
    let graph = connect(&h.config.neo4j).unwrap();
    graph.run(query("MATCH (n) DETACH DELETE n")).await.unwrap();
    for statement in constraints() {
        graph.run(query(&statement)).await.unwrap();
    }
    graph
}

/// The statements of deploy/neo4j/constraints.cypher.
pub fn constraints() -> Vec<String> {
    let text = include_str!("../../deploy/neo4j/constraints.cypher");
    let code: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect();
    code.join("\n")
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// What the trigger writes for one change: an outbox node in the contract's shape.
pub async fn write_outbox(graph: &Graph, events: &[ChangeEvent]) {
    for chunk in events.chunks(200) {
        let rows: Vec<HashMap<String, neo4rs::BoltType>> =
            chunk.iter().map(outbox_params).collect();
        graph
            .run(query(
                "UNWIND $rows AS r CREATE (:CdcOutbox {event_id: r.event_id, kind: 'node', key: r.key,
                 labels: r.labels, op: r.op, version: r.version, commit_time_ms: r.commit_time_ms,
                 created_at: r.commit_time_ms, properties: r.properties, db: 'neo4j'})",
            ).param("rows", rows))
            .await
            .unwrap();
    }
}

pub fn outbox_params(event: &ChangeEvent) -> HashMap<String, neo4rs::BoltType> {
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

pub async fn outbox_depth(graph: &Graph) -> i64 {
    let mut rows = graph
        .execute(query(
            "MATCH (o:CdcOutbox) WHERE o.failed IS NULL RETURN count(o) AS depth",
        ))
        .await
        .unwrap();
    rows.next().await.unwrap().unwrap().get("depth").unwrap()
}

/// Run a relay in the test until the outbox is empty, then stop it.
pub async fn relay_until_empty(h: &Harness, graph: &Graph) -> Arc<RelayStats> {
    let stats = Arc::new(RelayStats::default());
    let relay = Relay::new(h.config.clone(), stats.clone()).unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(relay.run(shutdown.clone()));
    wait_outbox_empty(graph).await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    stats
}

pub async fn wait_outbox_empty(graph: &Graph) {
    let deadline = Instant::now() + CATCH_UP;
    while outbox_depth(graph).await > 0 {
        assert!(Instant::now() < deadline, "outbox not drained");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every record of `topic`, in partition order: (key, value).
pub fn read_all(h: &Harness, topic: &str) -> Vec<(String, Option<Vec<u8>>)> {
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

pub fn stream(keys: usize, versions: i64) -> Vec<ChangeEvent> {
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

/// A relay running in the background of a test (e.g. while the backfill or the audit's
/// repair writes outbox entries), until [`RunningRelay::stop`].
pub struct RunningRelay {
    pub stats: Arc<RelayStats>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<graphcdc_core::error::Result<()>>,
}

/// Start a relay of `h`'s database.
pub fn start_relay(h: &Harness) -> RunningRelay {
    let stats = Arc::new(RelayStats::default());
    let relay = Relay::new(h.config.clone(), stats.clone()).unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(relay.run(shutdown.clone()));
    RunningRelay {
        stats,
        shutdown,
        task,
    }
}

impl RunningRelay {
    /// Wait until the outbox is empty, then stop.
    pub async fn drain_and_stop(self, graph: &Graph) -> Arc<RelayStats> {
        wait_outbox_empty(graph).await;
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
        self.stats
    }
}
