//! `graphcdc history` and `graphcdc replay`.

use super::refuse;
use crate::cli::{HistoryArgs, OutputFormat, ReplayArgs, When};
use graphcdc_core::codec::{Codec, SchemaRegistry};
use graphcdc_core::config::Config;
use graphcdc_core::timetravel::history::{self, Start};
use graphcdc_core::timetravel::replay::{self, OffsetSpec, ReplayEnd, ReplayStart, ShadowTarget};

/// `graphcdc history KEY`.
pub(crate) async fn history(config: &Config, args: HistoryArgs) -> anyhow::Result<()> {
    let start = match (args.from_offset, args.from_datetime) {
        (Some(o), _) => Start::Offset(o),
        (None, Some(When(ms))) => Start::Time(ms),
        (None, None) => Start::Beginning,
    };
    let codec = Codec::new(SchemaRegistry::from_config(&config.registry)?);
    let entries = history::history(&config.kafka, &codec, &args.key, start).await?;
    match args.format {
        OutputFormat::Table => print!("{}", history::table(&entries)),
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&entries)?),
    }
    Ok(())
}

/// `graphcdc replay`.
pub(crate) async fn replay(config: &Config, args: ReplayArgs) -> anyhow::Result<()> {
    let target = match (args.target_path, args.target_suffix) {
        (Some(path), _) => ShadowTarget::Directory(path),
        (None, Some(suffix)) => ShadowTarget::Suffix(suffix),
        (None, None) => refuse!(
            "replay: give --target-path (embedded, jsonl) or --target-suffix (Qdrant server)"
        ),
    };
    let from = match (args.from_offset, args.from_datetime) {
        (Some(o), _) => ReplayStart::Offsets(OffsetSpec::parse("--from-offset", &o)?),
        (None, Some(When(ms))) => ReplayStart::Time(ms),
        (None, None) => ReplayStart::Beginning,
    };
    let to = match (args.to_offset, args.to_datetime) {
        (Some(o), _) => ReplayEnd::Offsets(OffsetSpec::parse("--to-offset", &o)?),
        (None, Some(When(ms))) => ReplayEnd::Time(ms),
        (None, None) => ReplayEnd::Now,
    };
    if let Some(alias) = &args.swap_alias {
        replay::check_alias(config, &target, alias).await?;
    }
    let (shadow, sink) = target.open(config)?;
    let report = replay::replay(&shadow, sink, from, to).await?;
    println!(
        "replay: records={} applied={} skipped_stale={} poison={}",
        report.records, report.applied, report.skipped_stale, report.poison
    );
    if let Some(alias) = &args.swap_alias {
        for swap in replay::swap_alias(config, &target, alias, args.keep_old).await? {
            println!(
                "alias: {} -> {} (before: {}{})",
                swap.alias,
                swap.target,
                swap.previous.as_deref().unwrap_or("none"),
                if swap.removed { ", removed" } else { "" }
            );
        }
    }
    Ok(())
}
