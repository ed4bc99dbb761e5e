//! What the long-running subcommands share: topic set-up, the ops endpoint, and stopping
//! on a signal.

use graphcdc_core::config::Config;
use graphcdc_core::kafka;
use graphcdc_core::ops::{self, Readiness};
use tokio_util::sync::CancellationToken;

/// Partitions of topics the services create.
const PARTITIONS: i32 = 6;

/// Create the change, state and DLQ topics when missing.
pub(crate) async fn ensure_topics(config: &Config) -> anyhow::Result<()> {
    Ok(kafka::ensure_pipeline_topics(&config.kafka, PARTITIONS).await?)
}

/// Serve /metrics, /healthz and /readyz on `listen`, when given, until `shutdown`.
pub(crate) async fn serve_ops(
    listen: Option<std::net::SocketAddr>,
    readiness: Readiness,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    if let Some(addr) = listen {
        let (bound, _) = ops::serve(addr, readiness, shutdown.clone()).await?;
        tracing::info!(%bound, "serving /metrics, /healthz, /readyz");
    }
    Ok(())
}

/// A token cancelled on SIGINT or SIGTERM.
pub(crate) fn stop_on_signal() -> CancellationToken {
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    shutdown
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested: finishing the in-flight batch");
    shutdown.cancel();
}
