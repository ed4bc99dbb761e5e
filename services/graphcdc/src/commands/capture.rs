//! `graphcdc relay` (the outbox to Kafka) and `graphcdc backfill` (the existing graph
//! as outbox entries).

use super::lifecycle::{ensure_topics, serve_ops, stop_on_signal};
use crate::cli::{BackfillArgs, RelayArgs};
use graphcdc_core::capture::backfill;
use graphcdc_core::capture::relay::Relay;
use graphcdc_core::config::Config;
use graphcdc_core::ops::Readiness;
use graphcdc_core::stats::RelayStats;
use std::sync::Arc;

/// `graphcdc relay`.
pub(crate) async fn relay(config: Config, args: RelayArgs) -> anyhow::Result<()> {
    ensure_topics(&config).await?;
    let stats = Arc::new(RelayStats::default());
    let relay = Relay::new(config, stats)?;
    let shutdown = stop_on_signal();
    serve_ops(args.listen, Readiness::Always, &shutdown).await?;
    Ok(relay.run(shutdown).await?)
}

/// `graphcdc backfill`.
pub(crate) async fn backfill(config: Config, args: BackfillArgs) -> anyhow::Result<()> {
    let shutdown = stop_on_signal();
    let report = backfill::run(&config, &args.checkpoint, args.page_size.max(1), shutdown).await?;
    println!(
        "backfill: written={} failed={} complete={} (outbox entries: the relay publishes them)",
        report.written, report.failed, report.complete
    );
    Ok(())
}
