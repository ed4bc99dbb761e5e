//! The relay draining an outbox backlog: N entries written at once (as after an outage
//! or a bulk import) into a Bolt server, then published by one relay to a real broker.
//! Prints entries/s overall and per tenth of the backlog: a drain whose rounds cost more
//! while the backlog is large shows a rising rate from the first tenth to the last.

use crate::{per_s, Args, Figure};
use graphcdc_core::capture::relay::Relay;
use graphcdc_core::capture::{self, relay};
use graphcdc_core::config::Config;
use graphcdc_core::kafka::{self, Cleanup};
use graphcdc_core::stats::RelayStats;
use neo4rs::{query, BoltType, Graph};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Versions per key in the backlog.
const VERSIONS: usize = 4;
/// Entries written per statement.
const WRITE_CHUNK: usize = 5_000;

const CONSTRAINTS: &str = include_str!("../../../deploy/neo4j/constraints.cypher");

fn config(args: &Args, bootstrap: &str) -> anyhow::Result<Config> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let id = &id[..8];
    let toml = format!(
        r#"
        [kafka]
        bootstrap_servers = "{bootstrap}"
        group_id = "bench-relay-{id}"
        changes_topic = "bench-relay-{id}.changes"
        state_topic = "bench-relay-{id}.state"
        dlq_topic = "bench-relay-{id}.dlq"
        [neo4j]
        uri = "{}"
        user = "{}"
        password = "{}"
        database = "{}"
        [relay]
        batch_size = {}
        poll_interval_ms = 50
        lease_ttl_ms = 45000
        [sink]
        kind = "embedded"
        path = "/tmp/graphcdc-bench-unused"
        [[mappings]]
        label = "Doc"
        collection = "docs"
        dimension = 4
        "#,
        args.bolt, args.bolt_user, args.bolt_password, args.bolt_database, args.relay_batch
    );
    Ok(Config::from_toml(&toml)?)
}

/// Empty outbox and lease, the indexes of constraints.cypher, then `n` entries.
async fn prepare(graph: &Graph, n: usize) -> anyhow::Result<Duration> {
    graph
        .run(query("MATCH (l:CdcRelayLease) DETACH DELETE l"))
        .await?;
    loop {
        let mut rows = graph
            .execute(query(
                "MATCH (o:CdcOutbox) WITH o LIMIT 20000 DETACH DELETE o RETURN count(*) AS n",
            ))
            .await?;
        let deleted: i64 = match rows.next().await? {
            Some(row) => row.get("n").unwrap_or(0),
            None => 0,
        };
        if deleted == 0 {
            break;
        }
    }
    let code: Vec<&str> = CONSTRAINTS
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect();
    for statement in code.join("\n").split(';').map(str::trim) {
        if !statement.is_empty() {
            graph.run(query(statement)).await?;
        }
    }
    let keys = (n / VERSIONS).max(1);
    let start = Instant::now();
    let base = graphcdc_core::unix_ms();
    for from in (0..n).step_by(WRITE_CHUNK) {
        let rows: Vec<HashMap<String, BoltType>> = (from..(from + WRITE_CHUNK).min(n))
            .map(|i| {
                let key = format!("doc-{:07}", i % keys);
                HashMap::from([
                    ("id".to_owned(), format!("bench-{i}").into()),
                    (
                        "properties".to_owned(),
                        format!("{{\"text\":\"{key} v{}\"}}", i / keys + 1).into(),
                    ),
                    ("key".to_owned(), key.into()),
                    ("version".to_owned(), ((i / keys) as i64 + 1).into()),
                    ("at".to_owned(), (base + i as i64).into()),
                ])
            })
            .collect();
        graph
            .run(
                query(
                    "UNWIND $rows AS r CREATE (:CdcOutbox {event_id: r.id, kind: 'node', key: r.key,
                     labels: ['Doc'], op: 'upsert', version: r.version, commit_time_ms: r.at,
                     created_at: r.at, properties: r.properties, db: 'neo4j'})",
                )
                .param("rows", rows),
            )
            .await?;
    }
    Ok(start.elapsed())
}

pub async fn run(args: &Args, figures: &mut Vec<Figure>) -> anyhow::Result<()> {
    let n = args.relay_backlog;
    let bootstrap = args
        .bootstrap
        .as_deref()
        .ok_or_else(|| anyhow::anyhow!("--relay-backlog needs a real broker (--bootstrap)"))?;
    let config = config(args, bootstrap)?;
    let k = &config.kafka;
    kafka::ensure_topics(
        k,
        &[
            (&k.changes_topic, Cleanup::Delete),
            (&k.state_topic, Cleanup::Compact),
        ],
        args.relay_partitions,
    )
    .await?;
    let graph = capture::connect(&config.neo4j)?;
    let written = prepare(&graph, n).await?;
    println!(
        "relay: {n} outbox entries written in {:.1} s",
        written.as_secs_f64()
    );

    let stats = Arc::new(RelayStats::default());
    let relay = Relay::new(config.clone(), stats.clone())?;
    let shutdown = CancellationToken::new();
    let start = Instant::now();
    let task = tokio::spawn(relay.run(shutdown.clone()));
    let tenth = (n / 10).max(1);
    let mut marks = vec![Duration::ZERO];
    while (stats.published.get() as usize) < n {
        anyhow::ensure!(!task.is_finished(), "the relay stopped");
        let done = stats.published.get() as usize;
        while marks.len() <= 10 && done >= tenth * marks.len() {
            marks.push(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = start.elapsed();
    while marks.len() <= 10 {
        marks.push(elapsed);
    }
    shutdown.cancel();
    task.await??;
    let rates: Vec<String> = marks
        .windows(2)
        .map(|w| format!("{:.0}", per_s(tenth, w[1] - w[0])))
        .collect();
    println!(
        "relay: drained {n} entries in {:.1} s = {:.0} entries/s; per tenth: {}",
        elapsed.as_secs_f64(),
        per_s(n, elapsed),
        rates.join(", ")
    );
    figures.push(Figure {
        name: format!("relay drain, {n}-entry backlog, batch {}", args.relay_batch),
        value: format!("{:.0} entries/s", per_s(n, elapsed)),
        note: format!(
            "{:.1} s; entries/s per tenth of the backlog: {}; read query: {}",
            elapsed.as_secs_f64(),
            rates.join(", "),
            if relay::READ_OUTBOX.contains("commit_time_ms ASC") {
                "ORDER BY commit_time_ms"
            } else {
                "created_at index seek"
            }
        ),
    });
    Ok(())
}
