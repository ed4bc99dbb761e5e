//! `graphcdc reconcile`: compare the sink with the compacted state topic, once or
//! continuously; report and repair drift.

use super::lifecycle::{serve_ops, stop_on_signal};
use super::EXIT_DRIFT;
use crate::cli::{OutputFormat, ReconcileArgs, RepairArg};
use graphcdc_core::config::Config;
use graphcdc_core::ops::Readiness;
use graphcdc_core::reconcile::repair::{RepairMode, RepairOptions};
use graphcdc_core::reconcile::{report, ReconcileOptions, Reconciler};
use graphcdc_core::sink;
use graphcdc_core::stats::DriftGauges;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

pub(crate) async fn run(config: Config, args: ReconcileArgs) -> anyhow::Result<ExitCode> {
    let options = ReconcileOptions {
        grace: args.grace,
        repair: args.repair.map(|mode| RepairOptions {
            mode: match mode {
                RepairArg::Sink => RepairMode::Sink,
                RepairArg::Log => RepairMode::Log,
            },
            dry_run: args.dry_run,
            force: args.force,
            max_delete_ratio: args.max_delete_ratio,
            max_rewrite_ratio: args.max_rewrite_ratio,
            budget_window: args.budget_window,
            rate_per_s: args.rate,
            delete_foreign: args.delete_foreign,
        }),
        settle_timeout: Duration::from_secs(30),
    };
    let sink = sink::open(&config.sink)?;
    let gauges = Arc::new(DriftGauges::default());
    let mut reconciler = Reconciler::new(config, sink, gauges)?;
    reconciler.allow_non_compacted_state(args.allow_non_compacted_state);
    reconciler.rescan_every(args.rescan_every);
    if let Some(dir) = &args.state_dir {
        reconciler.state_dir(dir)?;
    }
    if !args.once {
        let shutdown = stop_on_signal();
        serve_ops(args.listen, Readiness::Always, &shutdown).await?;
        reconciler
            .run_continuous(&options, args.interval, shutdown)
            .await?;
        return Ok(ExitCode::SUCCESS);
    }
    let result = reconciler.run_once(&options).await?;
    match args.format {
        OutputFormat::Table => print!("{}", report::table(&result)),
        OutputFormat::Json => println!("{}", report::json(&result)),
    }
    Ok(if result.remaining.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_DRIFT)
    })
}
