//! The operations endpoint of a service: `/metrics` (Prometheus text format, rendered by
//! `metrics-exporter-prometheus`), `/healthz` (process alive) and `/readyz` (processor:
//! loop running, circuit closed), served by axum.
//!
//! Metrics are recorded through the `metrics` facade ([`crate::stats`]); this module
//! installs the process-wide Prometheus recorder, names each metric's help text and
//! histogram buckets, and serves the rendering.

use crate::stats::Health;
use axum::http::{header, StatusCode};
use axum::routing::get;
use axum::Router;
use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Bucket bounds (s) of the latency histograms: up to 5 min, so `_sum` and the
/// buckets stay true during an outage.
const SECONDS_BUCKETS: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
/// Bucket bounds of the batch-size histogram.
const BATCH_SIZE_BUCKETS: [f64; 9] = [1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1e3, 2e3, 5e3];
/// How often histogram samples are folded into their buckets between scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Install the process-wide Prometheus recorder (once; later calls return the same
/// handle). Call it before creating a service's stats: handles resolved earlier stay
/// no-ops.
///
/// # Panics
/// When another `metrics` recorder was installed first (a programming error).
pub fn install_recorder() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new();
            for (name, buckets) in [
                ("graphcdc_freshness_seconds", &SECONDS_BUCKETS[..]),
                ("graphcdc_apply_duration_seconds", &SECONDS_BUCKETS[..]),
                (
                    "graphcdc_embedding_call_duration_seconds",
                    &SECONDS_BUCKETS[..],
                ),
                ("graphcdc_batch_size_events", &BATCH_SIZE_BUCKETS[..]),
            ] {
                builder = builder
                    .set_buckets_for_metric(Matcher::Full(name.to_owned()), buckets)
                    .expect("bucket bounds are not empty");
            }
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).expect("no other metrics recorder is installed");
            describe();
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP_INTERVAL);
                    upkeep.run_upkeep();
                })
                .expect("spawning the metrics upkeep thread");
            handle
        })
        .clone()
}

/// Counters the services record: name and help text.
const COUNTERS: &[(&str, &str)] = &[
    (
        "graphcdc_events_consumed_total",
        "Records received from the change topic.",
    ),
    (
        "graphcdc_points_applied_total",
        "Point writes acknowledged by the sink.",
    ),
    (
        "graphcdc_points_skipped_stale_total",
        "Point writes fenced as stale or duplicate.",
    ),
    (
        "graphcdc_events_dlq_total",
        "Records sent to the dead-letter topic, by reason.",
    ),
    (
        "graphcdc_events_unmapped_total",
        "Records that map to no collection.",
    ),
    ("graphcdc_batches_total", "Batches applied."),
    (
        "graphcdc_retries_total",
        "Batch retries after transient failures.",
    ),
    ("graphcdc_rebalances_total", "Partition revocations."),
    ("graphcdc_sink_errors_total", "Failed sink calls by class."),
    (
        "graphcdc_collection_points_applied_total",
        "Point writes acknowledged by the sink, per collection.",
    ),
    ("graphcdc_reconcile_checks_total", "Checks completed."),
    (
        "graphcdc_reconcile_repaired_total",
        "Fixes written or published.",
    ),
    (
        "graphcdc_reconcile_failures_total",
        "Checks or repairs that failed (broker or sink errors), retried with backoff.",
    ),
    (
        "graphcdc_reconcile_repairs_refused_total",
        "Repairs the delete guard refused.",
    ),
    (
        "graphcdc_relay_published_total",
        "Outbox entries published.",
    ),
    (
        "graphcdc_relay_failed_total",
        "Outbox entries marked failed.",
    ),
    (
        "graphcdc_relay_context_reemitted_total",
        "Nodes re-emitted because their denormalised context changed.",
    ),
    (
        "graphcdc_relay_context_fanout_overflow_total",
        "Related-node changes whose context fan-out exceeded max_fanout (nodes beyond it not re-emitted).",
    ),
    (
        "graphcdc_embedding_model_calls_total",
        "Calls to the embedding model (one per batch of texts), per collection.",
    ),
    (
        "graphcdc_embedding_texts_total",
        "Texts that needed a vector, per collection and source: model (embedded) or cache (the stored vector of the same text kept, no model call).",
    ),
    (
        "graphcdc_embedding_rejected_total",
        "Texts the embedding model refused (their events went to the DLQ), per collection.",
    ),
];

/// Gauges the services record: name, unit and help text.
const GAUGES: &[(&str, Unit, &str)] = &[
    (
        "graphcdc_partitions_assigned",
        Unit::Count,
        "Partitions assigned to this member.",
    ),
    (
        "graphcdc_circuit_open",
        Unit::Count,
        "1 while the sink keeps failing.",
    ),
    ("graphcdc_ready", Unit::Count, "1 when ready for traffic."),
    (
        "graphcdc_consumer_lag_records",
        Unit::Count,
        "High watermark minus committed offset, per assigned partition.",
    ),
    (
        "graphcdc_committed_offset",
        Unit::Count,
        "Committed offset, per assigned partition.",
    ),
    (
        "graphcdc_high_watermark_offset",
        Unit::Count,
        "End of the partition, per assigned partition.",
    ),
    (
        "graphcdc_drift_points",
        Unit::Count,
        "Drifted points per class at the last check.",
    ),
    (
        "graphcdc_reconcile_last_check_timestamp_seconds",
        Unit::Seconds,
        "When the last check finished (Unix time).",
    ),
    (
        "graphcdc_reconcile_check_duration_seconds",
        Unit::Seconds,
        "How long the last check took.",
    ),
    (
        "graphcdc_reconcile_consecutive_failures",
        Unit::Count,
        "Failed checks or repairs since the last successful check.",
    ),
    (
        "graphcdc_relay_outbox_entries",
        Unit::Count,
        "Outbox entries waiting.",
    ),
    (
        "graphcdc_relay_lag_seconds",
        Unit::Seconds,
        "Age of the oldest waiting entry.",
    ),
    (
        "graphcdc_relay_holds_lease",
        Unit::Count,
        "1 when this relay is the active one.",
    ),
];

/// Histograms the services record: name, unit and help text.
const HISTOGRAMS: &[(&str, Unit, &str)] = &[
    (
        "graphcdc_freshness_seconds",
        Unit::Seconds,
        "Now minus source commit time when the sink acknowledged a write.",
    ),
    (
        "graphcdc_apply_duration_seconds",
        Unit::Seconds,
        "Time to apply a batch until the sink and the DLQ acknowledged it.",
    ),
    (
        "graphcdc_batch_size_events",
        Unit::Count,
        "Records per applied batch.",
    ),
    (
        "graphcdc_embedding_call_duration_seconds",
        Unit::Seconds,
        "Time of one call to the embedding model, per collection.",
    ),
];

/// Every metric name the services export (histograms without their suffixes).
pub fn metric_names() -> impl Iterator<Item = &'static str> {
    COUNTERS
        .iter()
        .map(|(name, _)| *name)
        .chain(GAUGES.iter().map(|(name, _, _)| *name))
        .chain(HISTOGRAMS.iter().map(|(name, _, _)| *name))
}

/// Help text and unit of every metric the services record.
fn describe() {
    for (name, help) in COUNTERS {
        describe_counter!(*name, Unit::Count, *help);
    }
    for (name, unit, help) in GAUGES {
        describe_gauge!(*name, *unit, *help);
    }
    for (name, unit, help) in HISTOGRAMS {
        describe_histogram!(*name, *unit, *help);
    }
}

/// What `/readyz` answers.
#[derive(Clone)]
pub enum Readiness {
    /// Ready while the process serves (reconciler, relay).
    Always,
    /// Ready while the processor's loop runs and its circuit is closed.
    Processor(Arc<Health>),
}

impl Readiness {
    /// Whether the service should receive traffic.
    pub fn is_ready(&self) -> bool {
        match self {
            Readiness::Always => true,
            Readiness::Processor(health) => health.is_ready(),
        }
    }
}

/// The routes: `/metrics`, `/healthz`, `/readyz` (GET only; other methods get 405).
fn router(handle: PrometheusHandle, readiness: Readiness) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let body = handle.render();
                async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body) }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = readiness.is_ready();
                async move {
                    if ready {
                        (StatusCode::OK, "ready\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                    }
                }
            }),
        )
}

/// Serve the endpoint on `addr` until `shutdown` (installing the recorder when not yet
/// installed); returns the bound address first.
///
/// # Errors
/// When `addr` cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> crate::error::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let app = router(install_recorder(), readiness);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "operations endpoint stopped");
        }
    });
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{DriftGauges, RelayStats, Stats};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
        let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!("{method} {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n");
        socket.write_all(head.as_bytes()).await.unwrap();
        let mut response = String::new();
        socket.read_to_string(&mut response).await.unwrap();
        let status = response.split_whitespace().nth(1).unwrap().parse().unwrap();
        let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        (status, body.to_owned())
    }

    /// Alerts, their tests, the PrometheusRule, the dashboard and the runbooks only name
    /// metrics the services export (a renamed metric would leave an alert silent).
    #[test]
    fn deploy_files_name_only_exported_metrics() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
        let exported: std::collections::BTreeSet<&str> = metric_names().collect();
        let mut unknown = Vec::new();
        for file in [
            "deploy/observability/alerts.yaml",
            "deploy/observability/alerts.test.yaml",
            "deploy/observability/dashboard.json",
            "deploy/k8s/prometheusrule.yaml",
            "docs/runbooks.md",
        ] {
            let text = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
            let mut rest = text.as_str();
            while let Some(at) = rest.find("graphcdc_") {
                rest = &rest[at..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                    .unwrap_or(rest.len());
                let name = &rest[..end];
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .filter(|base| exported.contains(base))
                    .unwrap_or(name);
                if !exported.contains(base) {
                    unknown.push(format!("{file}: {name}"));
                }
                rest = &rest[end..];
            }
        }
        assert!(unknown.is_empty(), "not exported: {unknown:?}");
    }

    /// `promtool check metrics` parses the exposition strictly and lints names and units.
    fn promtool_accepts(promtool: &str, body: &str) {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut child = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    #[tokio::test]
    async fn the_exporter_escapes_labels_keeps_long_latencies_and_serves_only_get() {
        install_recorder();
        let stats = Stats::default();
        stats.bind("team \"a\"\\b", "ops-test-topic");
        stats.consumed.add(7);
        stats.freshness.record(42.0);
        stats.freshness.record(0.003);
        let gauges = DriftGauges::default();
        gauges.set_drift("orphan", 3);
        let relay = RelayStats::default();
        relay.published.add(42);

        let shutdown = CancellationToken::new();
        let (addr, task) = serve(
            "127.0.0.1:0".parse().unwrap(),
            Readiness::Always,
            shutdown.clone(),
        )
        .await
        .unwrap();
        let (status, body) = request(addr, "GET", "/metrics").await;
        assert_eq!(status, 200);
        let scrape =
            prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).unwrap();
        let ours = |s: &&prometheus_parse::Sample| s.labels.get("topic") == Some("ops-test-topic");
        // The label value is escaped as the text format requires.
        assert!(
            body.contains(
                r#"graphcdc_events_consumed_total{group="team \"a\"\\b",topic="ops-test-topic"} 7"#
            ),
            "{body}"
        );
        let find = |name: &str| {
            scrape
                .samples
                .iter()
                .filter(ours)
                .find(|s| s.metric == name)
                .unwrap_or_else(|| panic!("{name} not served"))
        };
        let sum = find("graphcdc_freshness_seconds_sum");
        // 42 s is recorded as 42 s (no clamp at 10 s), in the 60 s bucket, not the 30 s one.
        assert!(
            matches!(sum.value, prometheus_parse::Value::Untyped(v) if (v - 42.003).abs() < 1e-9),
            "{sum:?}"
        );
        let histogram = find("graphcdc_freshness_seconds");
        let prometheus_parse::Value::Histogram(counts) = &histogram.value else {
            panic!("{histogram:?}")
        };
        let at = |le: f64| counts.iter().find(|c| c.less_than == le).unwrap().count;
        assert_eq!((at(0.005), at(30.0), at(60.0)), (1.0, 1.0, 2.0));
        let drift = scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == "graphcdc_drift_points" && s.labels.get("class") == Some("orphan")
            })
            .expect("drift gauge");
        assert!(matches!(drift.value, prometheus_parse::Value::Gauge(_)));
        assert!(scrape
            .samples
            .iter()
            .any(|s| s.metric == "graphcdc_relay_published_total"));
        assert_eq!(
            scrape
                .docs
                .get("graphcdc_relay_published_total")
                .map(String::as_str),
            Some("Outbox entries published.")
        );

        // The official parser and linter, when the test command provides it.
        match std::env::var("GRAPHCDC_PROMTOOL") {
            Ok(promtool) => promtool_accepts(&promtool, &body),
            Err(_) => eprintln!("GRAPHCDC_PROMTOOL not set: promtool check metrics not run"),
        }

        assert_eq!(request(addr, "POST", "/metrics").await.0, 405);
        assert_eq!(request(addr, "GET", "/readyz").await.0, 200);
        assert_eq!(request(addr, "GET", "/nope").await.0, 404);
        shutdown.cancel();
        task.await.unwrap();
    }
}
