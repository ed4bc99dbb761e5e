//! `graphcdc process`: the processor, a consumer group member applying the change topic
//! to the configured sink.

use super::lifecycle::{ensure_topics, serve_ops, stop_on_signal};
use crate::cli::ProcessArgs;
use graphcdc_core::config::Config;
use graphcdc_core::ops::Readiness;
use graphcdc_core::processor::Processor;
use graphcdc_core::sink;
use graphcdc_core::stats::{Health, Stats};
use std::process::ExitCode;
use std::sync::Arc;

pub(crate) async fn run(config: Config, args: ProcessArgs) -> anyhow::Result<ExitCode> {
    if args.print_config {
        println!("{config:#?}");
        return Ok(ExitCode::SUCCESS);
    }
    ensure_topics(&config).await?;
    let sink = sink::open(&config.sink)?;
    let stats = Arc::new(Stats::default());
    let health = Arc::new(Health::default());
    let shutdown = stop_on_signal();
    serve_ops(args.listen, Readiness::Processor(health.clone()), &shutdown).await?;
    let processor = Processor::new(config, sink, stats, health).await?;
    processor.run(shutdown).await?;
    Ok(ExitCode::SUCCESS)
}
