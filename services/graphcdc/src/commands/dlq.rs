//! `graphcdc dlq list|show|redrive`.

use super::refuse;
use super::{rfc3339, short};
use crate::cli::{DlqAction, DlqArgs, OutputFormat, RedriveSelection};
use graphcdc_core::codec::{Codec, SchemaRegistry};
use graphcdc_core::config::Config;
use graphcdc_core::dlq::{self, headers, ListEntry, Position, Selection, ShownValue};
use std::fmt::Write as _;

/// `graphcdc dlq list|show|redrive`.
pub(crate) async fn run(config: &Config, args: DlqArgs) -> anyhow::Result<()> {
    match args.action {
        DlqAction::List { limit, format } => list(config, limit, format).await,
        DlqAction::Show { position, format } => show(config, &position, format).await,
        DlqAction::Redrive { selection, execute } => redrive(config, selection, execute).await,
    }
}

/// `graphcdc dlq list`.
async fn list(config: &Config, limit: Option<usize>, format: OutputFormat) -> anyhow::Result<()> {
    let topic = &config.kafka.dlq_topic;
    let records = dlq::list(&config.kafka, topic, limit).await?;
    let entries: Vec<ListEntry> = records.iter().map(ListEntry::of).collect();
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&entries)?),
        OutputFormat::Table => {
            println!(
                "{:<12} {:<24} {:<24} {:<28} error",
                "record", "time", "key", "failed at"
            );
            for e in &entries {
                println!(
                    "{:<12} {:<24} {:<24} {:<28} {}",
                    format!("{}:{}", e.partition, e.offset),
                    rfc3339(e.timestamp_ms),
                    short(e.key.as_deref().unwrap_or("-"), 24),
                    e.source().unwrap_or_else(|| "-".to_owned()),
                    short(&e.error(), 160)
                );
                // The rest of the error headers (stage, connector, graphcdc's own).
                let summarised = [
                    headers::TOPIC,
                    headers::PARTITION,
                    headers::OFFSET,
                    headers::CLASS_NAME,
                    headers::MESSAGE,
                ];
                let rest = e
                    .error_headers
                    .iter()
                    .filter(|(key, _)| !summarised.contains(&key.as_str()));
                for (key, value) in rest {
                    let value = value.as_deref().unwrap_or("(null)");
                    println!("{:12} {key}: {}", "", short(value, 200));
                }
            }
            println!("{} record(s) on {topic}", entries.len());
        }
    }
    Ok(())
}

/// `graphcdc dlq show PARTITION:OFFSET`.
async fn show(config: &Config, position: &str, format: OutputFormat) -> anyhow::Result<()> {
    let at = Position::parse("PARTITION:OFFSET", position)?;
    let topic = &config.kafka.dlq_topic;
    let record = dlq::read(&config.kafka, topic, "PARTITION:OFFSET", &[at])
        .await?
        .remove(0);
    let codec = Codec::new(SchemaRegistry::from_config(&config.registry)?);
    let shown = dlq::show(&codec, &record).await;
    if format == OutputFormat::Json {
        println!("{}", serde_json::to_string_pretty(&shown)?);
        return Ok(());
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "record:    {}/{}/{}",
        shown.topic, shown.partition, shown.offset
    );
    let _ = writeln!(out, "time:      {}", rfc3339(shown.timestamp_ms));
    let _ = writeln!(
        out,
        "key:       {}",
        shown.key.as_deref().unwrap_or("(null)")
    );
    let _ = writeln!(
        out,
        "value:     {}",
        shown
            .value_bytes
            .map_or("(null)".to_owned(), |b| format!("{b} bytes"))
    );
    let _ = writeln!(out, "headers:");
    for (key, value) in &shown.headers {
        let _ = writeln!(out, "  {key}: {}", value.as_deref().unwrap_or("(null)"));
    }
    match &shown.value {
        ShownValue::Null => {}
        ShownValue::Event { event } => {
            let _ = writeln!(
                out,
                "decoded value:\n{}",
                serde_json::to_string_pretty(event)?
            );
        }
        ShownValue::Undecodable {
            error,
            utf8_lossy,
            hex,
        } => {
            let _ = writeln!(out, "decode error: {error}");
            let _ = writeln!(out, "value (utf-8, lossy): {utf8_lossy}");
            let _ = writeln!(out, "value (hex): {hex}");
        }
    }
    print!("{out}");
    Ok(())
}

/// `graphcdc dlq redrive`: preview, or publish with `execute`.
async fn redrive(
    config: &Config,
    selection: RedriveSelection,
    execute: bool,
) -> anyhow::Result<()> {
    let selection = match selection {
        RedriveSelection {
            partition_offsets: Some(text),
            ..
        } => Selection::Positions(Position::parse_list("--partition-offsets", &text)?),
        RedriveSelection { all: true, .. } => Selection::All,
        // clap requires exactly one.
        _ => refuse!("dlq redrive: give --partition-offsets or --all"),
    };
    let plan = dlq::plan_redrive(&config.kafka, &selection).await?;
    println!(
        "redrive from {} to {}: {} record(s)",
        plan.dlq_topic,
        plan.target_topic,
        plan.items.len()
    );
    for item in &plan.items {
        let entry = ListEntry::of(&item.record);
        let what = match &item.skipped {
            Some(why) => format!("skipped: {why}"),
            None => short(&entry.error(), 120),
        };
        println!(
            "  {:<12} key {:<24} {what}",
            format!("{}:{}", entry.partition, entry.offset),
            short(entry.key.as_deref().unwrap_or("-"), 24)
        );
    }
    let publish = plan.to_publish().count();
    if !execute {
        println!("preview: nothing published; add --execute to publish {publish} record(s)");
        return Ok(());
    }
    let published = dlq::execute_redrive(&config.kafka, &plan).await?;
    println!(
        "published {published} record(s) to {} (header {} names each one's DLQ record)",
        plan.target_topic,
        dlq::REDRIVE_FROM
    );
    Ok(())
}
