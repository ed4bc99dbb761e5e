//! The operations endpoint of a service: `/metrics` (Prometheus text format),
//! `/healthz` (process alive) and `/readyz` (partitions assigned, circuit closed).
//!
//! A deliberately small HTTP/1.1 server on tokio: three read-only routes, no request
//! bodies, one response per connection.

use crate::stats::{Health, Stats};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Bucket bounds (ms) of the freshness histogram in `/metrics` (exported in seconds).
const FRESHNESS_BUCKETS_MS: [u64; 11] = [5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000];

/// What the endpoint reports on.
#[derive(Clone)]
pub struct OpsState {
    pub stats: Arc<Stats>,
    pub health: Arc<Health>,
    /// Consumer group and topic, as metric labels.
    pub group: String,
    pub topic: String,
}

/// Prometheus text exposition of the processor's counters.
pub fn render_metrics(state: &OpsState) -> String {
    let s = &state.stats;
    let labels = format!("group=\"{}\",topic=\"{}\"", state.group, state.topic);
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
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{{labels}}} {}",
            Stats::get(counter)
        );
    }
    let h = &state.health;
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
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{{labels}}} {value}"
        );
    }
    let name = "graphcdc_freshness_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Now minus source commit time when the sink acknowledged a write.\n# TYPE {name} histogram"
    );
    let bounds = &FRESHNESS_BUCKETS_MS;
    for (bound, count) in bounds.iter().zip(s.freshness.cumulative(bounds)) {
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels},le=\"{}\"}} {count}",
            *bound as f64 / 1000.0
        );
    }
    let total = s.freshness.count();
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {total}");
    let _ = writeln!(out, "{name}_count{{{labels}}} {total}");
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
        "/readyz" if state.health.is_ready() => ("200 OK", "text/plain", "ready\n".to_owned()),
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
