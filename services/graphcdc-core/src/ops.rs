//! The operations endpoint of a service: `/metrics` (Prometheus text format),
//! `/healthz` (process alive) and `/readyz` (processor: loop running, circuit closed).
//!
//! A deliberately small HTTP/1.1 server on tokio: three read-only routes, no request
//! bodies, one response per connection.

use crate::stats::{DriftGauges, Health, Histogram, RelayStats, Stats};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Bucket bounds (ms) of the latency histograms in `/metrics` (exported in seconds).
const MILLISECOND_BUCKETS: [u64; 11] = [5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000];
/// Bucket bounds of the batch-size histogram.
const BATCH_SIZE_BUCKETS: [u64; 9] = [1, 10, 50, 100, 250, 500, 1_000, 2_000, 5_000];

/// What the endpoint reports on: one of the services.
#[derive(Clone)]
pub enum OpsState {
    Processor {
        stats: Arc<Stats>,
        health: Arc<Health>,
        /// Consumer group and topic, as metric labels.
        group: String,
        topic: String,
    },
    Reconciler {
        gauges: Arc<DriftGauges>,
    },
    Relay {
        stats: Arc<RelayStats>,
    },
}

impl OpsState {
    /// Whether the service should receive traffic (`/readyz`).
    pub fn is_ready(&self) -> bool {
        match self {
            OpsState::Processor { health, .. } => health.is_ready(),
            OpsState::Reconciler { .. } | OpsState::Relay { .. } => true,
        }
    }
}

/// One sample with its HELP and TYPE lines (no braces without labels).
fn sample(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    labels: &str,
    value: impl std::fmt::Display,
) {
    let labels = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{labels} {value}"
    );
}

/// Prometheus text exposition of the service's counters and gauges.
pub fn render_metrics(state: &OpsState) -> String {
    match state {
        OpsState::Processor {
            stats,
            health,
            group,
            topic,
        } => render_processor(stats, health, group, topic),
        OpsState::Reconciler { gauges } => render_reconciler(gauges),
        OpsState::Relay { stats } => render_relay(stats),
    }
}

fn render_processor(s: &Stats, h: &Health, group: &str, topic: &str) -> String {
    let labels = &format!("group=\"{group}\",topic=\"{topic}\"");
    let mut out = String::new();
    let counters = [
        (
            "graphcdc_events_consumed_total",
            "Records received from the change topic.",
            &s.consumed,
        ),
        (
            "graphcdc_points_applied_total",
            "Point writes acknowledged by the sink.",
            &s.applied,
        ),
        (
            "graphcdc_points_skipped_stale_total",
            "Point writes fenced as stale or duplicate.",
            &s.skipped_stale,
        ),
        (
            "graphcdc_events_dlq_total",
            "Records sent to the dead-letter topic.",
            &s.dlq,
        ),
        (
            "graphcdc_events_unmapped_total",
            "Records that map to no collection.",
            &s.unmapped,
        ),
        ("graphcdc_batches_total", "Batches applied.", &s.batches),
        (
            "graphcdc_retries_total",
            "Batch retries after transient failures.",
            &s.retries,
        ),
        (
            "graphcdc_rebalances_total",
            "Partition revocations.",
            &s.rebalances,
        ),
    ];
    for (name, help, counter) in counters {
        sample(&mut out, name, "counter", help, labels, Stats::get(counter));
    }
    let gauges = [
        (
            "graphcdc_partitions_assigned",
            "Partitions assigned to this member.",
            h.assigned_partitions.load(Ordering::Relaxed) as u64,
        ),
        (
            "graphcdc_circuit_open",
            "1 while the sink keeps failing.",
            h.circuit_open.load(Ordering::Relaxed) as u64,
        ),
        (
            "graphcdc_ready",
            "1 when ready for traffic.",
            h.is_ready() as u64,
        ),
    ];
    for (name, help, value) in gauges {
        sample(&mut out, name, "gauge", help, labels, value);
    }
    histogram(
        &mut out,
        (
            "graphcdc_freshness_seconds",
            "Now minus source commit time when the sink acknowledged a write.",
        ),
        labels,
        &s.freshness,
        &MILLISECOND_BUCKETS,
        1000.0,
    );
    histogram(
        &mut out,
        (
            "graphcdc_apply_duration_seconds",
            "Time to apply a batch until the sink and the DLQ acknowledged it.",
        ),
        labels,
        &s.apply_latency,
        &MILLISECOND_BUCKETS,
        1000.0,
    );
    histogram(
        &mut out,
        ("graphcdc_batch_size_events", "Records per applied batch."),
        labels,
        &s.batch_size,
        &BATCH_SIZE_BUCKETS,
        1.0,
    );
    let name = "graphcdc_sink_errors_total";
    let _ = writeln!(
        out,
        "# HELP {name} Failed sink calls by class.\n# TYPE {name} counter"
    );
    for (class, counter) in [
        ("unavailable", &s.sink_errors.unavailable),
        ("rejected", &s.sink_errors.rejected),
    ] {
        let _ = writeln!(
            out,
            "{name}{{{labels},class=\"{class}\"}} {}",
            Stats::get(counter)
        );
    }
    let name = "graphcdc_collection_points_applied_total";
    let _ = writeln!(out, "# HELP {name} Point writes acknowledged by the sink, per collection.\n# TYPE {name} counter");
    for (collection, n) in s.applied_by_collection.lock().unwrap().iter() {
        let _ = writeln!(out, "{name}{{{labels},collection=\"{collection}\"}} {n}");
    }
    let partitions = s.partitions.lock().unwrap();
    for (name, help, field) in [
        (
            "graphcdc_consumer_lag_records",
            "High watermark minus committed offset, per assigned partition.",
            0,
        ),
        (
            "graphcdc_committed_offset",
            "Committed offset, per assigned partition.",
            1,
        ),
        (
            "graphcdc_high_watermark_offset",
            "End of the partition, per assigned partition.",
            2,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for ((topic, partition), p) in partitions.iter() {
            let value = [p.lag, p.committed, p.high_watermark][field];
            let _ = writeln!(
                out,
                "{name}{{group=\"{group}\",topic=\"{topic}\",partition=\"{partition}\"}} {value}"
            );
        }
    }
    out
}

/// A histogram in Prometheus text format: `bounds` in the recorded unit, exported
/// divided by `scale` (ms → s).
fn histogram(
    out: &mut String,
    (name, help): (&str, &str),
    labels: &str,
    h: &Histogram,
    bounds: &[u64],
    scale: f64,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (bound, count) in bounds.iter().zip(h.cumulative(bounds)) {
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels},le=\"{}\"}} {count}",
            *bound as f64 / scale
        );
    }
    let total = h.count();
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {total}");
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum() as f64 / scale);
    let _ = writeln!(out, "{name}_count{{{labels}}} {total}");
}

fn render_reconciler(g: &DriftGauges) -> String {
    let mut out = String::new();
    let name = "graphcdc_drift_points";
    let _ = writeln!(
        out,
        "# HELP {name} Drifted points per class at the last check.\n# TYPE {name} gauge"
    );
    for (class, gauge) in [
        ("missing", &g.missing),
        ("orphan", &g.orphan),
        ("stale", &g.stale),
        ("content_mismatch", &g.content_mismatch),
        ("ahead", &g.ahead),
        ("tombstone_vector", &g.tombstone_vector),
    ] {
        let _ = writeln!(
            out,
            "{name}{{class=\"{class}\"}} {}",
            gauge.load(Ordering::Relaxed)
        );
    }
    let ms = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64 / 1000.0;
    sample(
        &mut out,
        "graphcdc_reconcile_last_check_timestamp_seconds",
        "gauge",
        "When the last check finished.",
        "",
        ms(&g.last_check_unix_ms),
    );
    sample(
        &mut out,
        "graphcdc_reconcile_check_duration_seconds",
        "gauge",
        "How long the last check took.",
        "",
        ms(&g.last_check_duration_ms),
    );
    sample(
        &mut out,
        "graphcdc_reconcile_checks_total",
        "counter",
        "Checks completed.",
        "",
        g.checks.load(Ordering::Relaxed),
    );
    sample(
        &mut out,
        "graphcdc_reconcile_repaired_total",
        "counter",
        "Fixes written or published.",
        "",
        g.repaired.load(Ordering::Relaxed),
    );
    sample(
        &mut out,
        "graphcdc_reconcile_failures_total",
        "counter",
        "Checks or repairs that failed (broker or sink errors), retried with backoff.",
        "",
        g.failures.load(Ordering::Relaxed),
    );
    sample(
        &mut out,
        "graphcdc_reconcile_consecutive_failures",
        "gauge",
        "Failed checks or repairs since the last successful check.",
        "",
        g.consecutive_failures.load(Ordering::Relaxed),
    );
    sample(
        &mut out,
        "graphcdc_reconcile_repairs_refused_total",
        "counter",
        "Repairs the delete guard refused.",
        "",
        g.repairs_refused.load(Ordering::Relaxed),
    );
    out
}

fn render_relay(r: &RelayStats) -> String {
    let mut out = String::new();
    sample(
        &mut out,
        "graphcdc_relay_published_total",
        "counter",
        "Outbox entries published.",
        "",
        r.published.load(Ordering::Relaxed),
    );
    sample(
        &mut out,
        "graphcdc_relay_failed_total",
        "counter",
        "Outbox entries marked failed.",
        "",
        r.failed.load(Ordering::Relaxed),
    );
    sample(
        &mut out,
        "graphcdc_relay_outbox_depth",
        "gauge",
        "Outbox entries waiting.",
        "",
        r.outbox_depth.load(Ordering::Relaxed),
    );
    sample(
        &mut out,
        "graphcdc_relay_lag_seconds",
        "gauge",
        "Age of the oldest waiting entry.",
        "",
        r.lag_ms.load(Ordering::Relaxed) as f64 / 1000.0,
    );
    sample(
        &mut out,
        "graphcdc_relay_holds_lease",
        "gauge",
        "1 when this relay is the active one.",
        "",
        r.holds_lease.load(Ordering::Relaxed) as u8,
    );
    out
}

/// Serve the endpoint on `addr` until `shutdown`; returns the bound address first.
///
/// # Errors
/// When `addr` cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    state: OpsState,
    shutdown: CancellationToken,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let Ok((socket, _)) = accepted else { continue };
            let state = state.clone();
            tokio::spawn(async move {
                let _ = respond(socket, &state).await;
            });
        }
    });
    Ok((bound, task))
}

async fn respond(mut socket: tokio::net::TcpStream, state: &OpsState) -> std::io::Result<()> {
    let mut buf = [0u8; 2048];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), socket.read(&mut buf))
        .await
        .unwrap_or(Ok(0))?;
    let request = String::from_utf8_lossy(&buf[..n]);
    let path = request.split_whitespace().nth(1).unwrap_or("");
    let (status, content_type, body) = match path {
        "/metrics" => ("200 OK", "text/plain; version=0.0.4", render_metrics(state)),
        "/healthz" => ("200 OK", "text/plain", "ok\n".to_owned()),
        "/readyz" if state.is_ready() => ("200 OK", "text/plain", "ready\n".to_owned()),
        "/readyz" => (
            "503 Service Unavailable",
            "text/plain",
            "not ready\n".to_owned(),
        ),
        _ => ("404 Not Found", "text/plain", "not found\n".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(response.as_bytes()).await?;
    socket.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciler_and_relay_metrics_render_their_gauges() {
        let gauges = Arc::new(DriftGauges::default());
        gauges.orphan.store(3, Ordering::Relaxed);
        gauges
            .last_check_duration_ms
            .store(1_500, Ordering::Relaxed);
        let text = render_metrics(&OpsState::Reconciler { gauges });
        assert!(
            text.contains("graphcdc_drift_points{class=\"orphan\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("graphcdc_reconcile_check_duration_seconds 1.5"),
            "{text}"
        );

        let stats = Arc::new(RelayStats::default());
        stats.published.store(42, Ordering::Relaxed);
        stats.holds_lease.store(true, Ordering::Relaxed);
        let text = render_metrics(&OpsState::Relay { stats });
        assert!(text.contains("graphcdc_relay_published_total 42"), "{text}");
        assert!(text.contains("graphcdc_relay_holds_lease 1"), "{text}");
    }
}
