//! `graphcdc audit`: options into [`graphcdc_core::audit`], the report printed, the exit
//! code chosen: 0 clean, 3 drift remains (or the relay did not publish the repair's outbox
//! entries in time), 4 the repair was refused by the delete guard
//! (the refused plan is printed; nothing was published).

use super::EXIT_DRIFT;
use crate::cli::{AuditArgs, OutputFormat};
use graphcdc_core::audit::repair::AuditRepairOptions;
use graphcdc_core::audit::{report, AuditOptions, Auditor};
use graphcdc_core::config::Config;
use graphcdc_core::sink;
use std::process::ExitCode;

/// Exit code when the delete guard refused the repair.
const EXIT_REFUSED: u8 = 4;

pub(crate) async fn run(config: Config, args: AuditArgs) -> anyhow::Result<ExitCode> {
    let options = AuditOptions {
        page_size: args.page_size.max(1),
        grace: args.grace,
        repair: args.repair.then_some(AuditRepairOptions {
            dry_run: args.dry_run,
            force: args.force,
            max_delete_ratio: args.max_delete_ratio,
            budget_window: args.budget_window,
            rate_per_s: args.rate,
        }),
        settle_timeout: args.settle_timeout,
        max_findings: args.max_findings.max(1),
    };
    let sink = match args.no_sink {
        true => None,
        false => Some(sink::open(&config.sink)?),
    };
    let mut auditor = Auditor::new(config, sink)?;
    auditor.allow_non_compacted_state(args.allow_non_compacted_state);
    if let Some(dir) = &args.state_dir {
        auditor.state_dir(dir)?;
    }
    let epoch = match args.bump_epoch {
        true => Some(auditor.bump_epoch(options.page_size).await?),
        false => None,
    };
    let mut result = auditor.run_once(&options).await?;
    result.epoch = epoch;
    match (args.json, args.format) {
        (true, _) | (_, OutputFormat::Json) => println!("{}", report::json(&result)),
        (false, OutputFormat::Table) => print!("{}", report::table(&result)),
    }
    Ok(if result.refused() {
        ExitCode::from(EXIT_REFUSED)
    } else if result.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_DRIFT)
    })
}
