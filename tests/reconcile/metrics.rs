//! The continuous reconciler's operations endpoint, scraped over HTTP and parsed as
//! Prometheus does: the drift it found is what it serves.

use super::drifted_without_ahead;
use crate::support::free_port;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Status and body of `GET path`, or `None` while nothing listens.
async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let head = format!("GET {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n");
    socket.write_all(head.as_bytes()).await.ok()?;
    let mut response = String::new();
    socket.read_to_string(&mut response).await.ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// The value of `name` (with `label` when given) in `scrape`.
fn value(scrape: &prometheus_parse::Scrape, name: &str, label: Option<(&str, &str)>) -> f64 {
    use prometheus_parse::Value;
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            _ => panic!("{name} is not a single value"),
        })
        .next()
        .unwrap_or_else(|| panic!("{name} {label:?} not served"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_continuous_reconciler_serves_its_drift_over_http() {
    let (h, sink, _model) = drifted_without_ahead("drift-metrics").await;
    drop(sink);
    let port = free_port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_graphcdc"))
        .args(["reconcile", "--grace", "0s", "--interval", "1s", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--config")
        .arg(h.config_file())
        .env("RUST_LOG", "error")
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let scrape = loop {
        if let Some((200, body)) = get(port, "/metrics").await {
            let scrape =
                prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).unwrap();
            // Served from the start (0), counted after each check.
            if value(&scrape, "graphcdc_reconcile_checks_total", None) >= 1.0 {
                break scrape;
            }
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("no completed check served within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let ready = get(port, "/readyz").await;
    child.kill().unwrap();
    child.wait().unwrap();

    assert_eq!(ready.map(|(status, _)| status), Some(200));
    assert!(value(&scrape, "graphcdc_reconcile_checks_total", None) >= 1.0);
    // The same six missing points `reconcile --once` reports for this store.
    let missing = value(&scrape, "graphcdc_drift_points", Some(("class", "missing")));
    assert_eq!(missing, 6.0);
    let last_check = value(
        &scrape,
        "graphcdc_reconcile_last_check_timestamp_seconds",
        None,
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - last_check).abs() < 120.0, "{last_check} vs {now}");
}
