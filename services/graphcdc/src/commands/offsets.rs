//! `graphcdc offsets show|reset`.

use super::refuse;
use super::rfc3339;
use crate::cli::{OffsetsAction, OffsetsArgs, ResetTargetArgs, When};
use graphcdc_core::config::Config;
use graphcdc_core::kafka;
use graphcdc_core::timetravel::offsets::{self, Membership, ResetPlan, ResetTarget};
use graphcdc_core::timetravel::replay::OffsetSpec;
use std::fmt::Write as _;
use std::time::SystemTime;

/// `graphcdc offsets show|reset`.
pub(crate) fn run(config: &Config, args: OffsetsArgs) -> anyhow::Result<()> {
    match args.action {
        OffsetsAction::Show { group } => show(config, group),
        OffsetsAction::Reset {
            group,
            target,
            partitions,
            execute,
            force,
        } => reset(config, group, target, partitions, execute, force),
    }
}

/// `graphcdc offsets show`.
fn show(config: &Config, group: Option<String>) -> anyhow::Result<()> {
    let group = group.unwrap_or_else(|| config.kafka.group_id.clone());
    println!(
        "{:>9} {:>10} {:>10} {:>10} {:>8}",
        "partition", "committed", "low", "high", "lag"
    );
    for p in kafka::group_offsets(&config.kafka, &group, &config.kafka.changes_topic)? {
        let committed = p.committed.map_or("-".to_owned(), |c| c.to_string());
        println!(
            "{:>9} {committed:>10} {:>10} {:>10} {:>8}",
            p.partition, p.low, p.high, p.lag
        );
    }
    Ok(())
}

/// The target of the options, and how to say it.
fn target(args: ResetTargetArgs) -> anyhow::Result<(ResetTarget, String)> {
    Ok(match args {
        ResetTargetArgs {
            to_earliest: true, ..
        } => (ResetTarget::Earliest, "the earliest offsets".to_owned()),
        ResetTargetArgs {
            to_latest: true, ..
        } => (ResetTarget::Latest, "the end of each partition".to_owned()),
        ResetTargetArgs {
            to_datetime: Some(When(ms)),
            ..
        } => (
            ResetTarget::Time(ms),
            format!("the first records at or after {}", rfc3339(Some(ms))),
        ),
        ResetTargetArgs {
            by_duration: Some(ago),
            ..
        } => {
            let at = SystemTime::now()
                .checked_sub(ago)
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .ok_or_else(|| anyhow::anyhow!("--by-duration: reaches before 1970"))?;
            let ms = at.as_millis() as i64;
            (
                ResetTarget::Time(ms),
                format!(
                    "the first records at or after {} ({} ago)",
                    rfc3339(Some(ms)),
                    humantime::format_duration(ago)
                ),
            )
        }
        ResetTargetArgs {
            to_offset: Some(text),
            ..
        } => (
            ResetTarget::Offsets(OffsetSpec::parse("--to-offset", &text)?),
            format!("offset {text}"),
        ),
        ResetTargetArgs {
            shift_by: Some(by), ..
        } => (
            ResetTarget::ShiftBy(by),
            format!("the committed offsets shifted by {by:+}"),
        ),
        // clap requires exactly one target.
        _ => refuse!(
            "offsets reset: give one of --to-earliest, --to-latest, --to-datetime, \
             --by-duration, --to-offset, --shift-by"
        ),
    })
}

/// The plan as a table, with what the group's members mean for `--execute`.
fn render(plan: &ResetPlan, described: &str) -> String {
    let mut out = format!(
        "group {} on {}: reset to {described}\n",
        plan.group, plan.topic
    );
    let _ = writeln!(
        out,
        "{:>9} {:>10} {:>10} {:>10} {:>10}  note",
        "partition", "current", "new", "lag now", "lag after"
    );
    for p in &plan.partitions {
        let current = p.current.map_or("-".to_owned(), |c| c.to_string());
        let note = p.note.map(|n| n.to_string()).unwrap_or_default();
        let _ = writeln!(
            out,
            "{:>9} {current:>10} {:>10} {:>10} {:>10}  {note}",
            p.partition, p.new, p.lag_before, p.lag_after
        );
    }
    let before: i64 = plan.partitions.iter().map(|p| p.lag_before).sum();
    let after: i64 = plan.partitions.iter().map(|p| p.lag_after).sum();
    let _ = writeln!(out, "total lag: {before} -> {after} ({:+})", after - before);
    match &plan.membership {
        Membership::Inactive => {}
        Membership::Active { members, state } => {
            let _ = writeln!(
                out,
                "the group has {members} active member(s) (state {state}): --execute is refused until they stop"
            );
        }
        Membership::Unknown(_) => {
            let _ = writeln!(
                out,
                "the broker did not say whether the group has active members: stop them, then --execute --force"
            );
        }
    }
    out
}

/// `graphcdc offsets reset`: preview, or commit with `execute`.
fn reset(
    config: &Config,
    group: Option<String>,
    args: ResetTargetArgs,
    partitions: Option<Vec<i32>>,
    execute: bool,
    force: bool,
) -> anyhow::Result<()> {
    let group = group.unwrap_or_else(|| config.kafka.group_id.clone());
    let (target, described) = target(args)?;
    let plan = offsets::plan_reset(
        &config.kafka,
        &group,
        &config.kafka.changes_topic,
        &target,
        partitions.as_deref(),
    )?;
    print!("{}", render(&plan, &described));
    if execute {
        offsets::execute_reset(&config.kafka, &plan, force)?;
        println!(
            "committed: {} partition(s) of group {} moved",
            plan.partitions.len(),
            plan.group
        );
    } else {
        println!("preview: nothing changed; add --execute to commit these offsets");
    }
    Ok(())
}
