//! `graphcdc`: keeps a Qdrant vector store in sync with a Neo4j graph through Kafka.
//!
//! Thin binary: parses arguments, loads config, wires signals, calls the library.

mod cli;

use anyhow::Context;
use clap::Parser;
use cli::{parse_time, Cli, Command, LogFormat, OffsetsAction, OutputFormat, RepairArg};
use graphcdc_core::capture::backfill;
use graphcdc_core::capture::relay::Relay;
use graphcdc_core::codec::{Codec, SchemaRegistry};
use graphcdc_core::config::Config;
use graphcdc_core::demo::{self, stream::StreamShape};
use graphcdc_core::inspect::history::{self, Start};
use graphcdc_core::inspect::offsets::{self, ResetTo};
use graphcdc_core::inspect::replay;
use graphcdc_core::kafka::{self, Cleanup};
use graphcdc_core::ops::{self, Readiness};
use graphcdc_core::processor::Processor;
use graphcdc_core::reconcile::repair::{RepairMode, RepairOptions};
use graphcdc_core::reconcile::{report, ReconcileOptions, Reconciler};
use graphcdc_core::sink;
use graphcdc_core::stats::{DriftGauges, Health, RelayStats, Stats};
use graphcdc_core::telemetry;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Exit code of `reconcile --once` when drift remains.
const EXIT_DRIFT: u8 = 3;

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    // Before any service creates its stats: metric handles resolved earlier are no-ops.
    ops::install_recorder();
    // qdrant-edge warns about process-wide flags it cannot see initialised: not actionable.
    let default_level = match cli.command {
        Command::Demo { .. } => "warn,qdrant_edge=error",
        _ => "info,qdrant_edge=error",
    };
    let _telemetry = match telemetry::init(default_level, cli.log_format == LogFormat::Json) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("error: cannot set up logging and tracing: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    };
    // Stop the runtime before the trace exporter flushes (it blocks).
    drop(runtime);
    code
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Process {
            config,
            print_config,
            listen,
        } => {
            let config = Config::load(config.as_deref())?;
            if print_config {
                println!("{config:#?}");
                return Ok(ExitCode::SUCCESS);
            }
            process(config, listen).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Reconcile {
            config,
            once,
            repair,
            dry_run,
            force,
            max_delete_ratio,
            rate,
            grace_ms,
            interval_s,
            format,
            listen,
        } => {
            let config = Config::load(config.as_deref())?;
            let options = ReconcileOptions {
                grace: Duration::from_millis(grace_ms),
                repair: repair.map(|mode| RepairOptions {
                    mode: match mode {
                        RepairArg::Sink => RepairMode::Sink,
                        RepairArg::Log => RepairMode::Log,
                    },
                    dry_run,
                    force,
                    max_delete_ratio,
                    rate_per_s: rate,
                }),
                settle_timeout: Duration::from_secs(30),
            };
            let sink = sink::open(&config.sink)?;
            let gauges = Arc::new(DriftGauges::default());
            let mut reconciler = Reconciler::new(config, sink, gauges)?;
            if !once {
                let shutdown = CancellationToken::new();
                tokio::spawn(stop_on_signal(shutdown.clone()));
                serve_ops(listen, Readiness::Always, &shutdown).await?;
                reconciler
                    .run_continuous(&options, Duration::from_secs(interval_s), shutdown)
                    .await?;
                return Ok(ExitCode::SUCCESS);
            }
            let result = reconciler.run_once(&options).await?;
            match format {
                OutputFormat::Table => print!("{}", report::table(&result)),
                OutputFormat::Json => println!("{}", report::json(&result)),
            }
            Ok(if result.remaining.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_DRIFT)
            })
        }
        Command::Relay { config, listen } => {
            let config = Config::load(config.as_deref())?;
            ensure_topics(&config).await?;
            let stats = Arc::new(RelayStats::default());
            let relay = Relay::new(config, stats)?;
            let shutdown = CancellationToken::new();
            tokio::spawn(stop_on_signal(shutdown.clone()));
            serve_ops(listen, Readiness::Always, &shutdown).await?;
            relay.run(shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Backfill {
            config,
            checkpoint,
            page_size,
        } => {
            let config = Config::load(config.as_deref())?;
            ensure_topics(&config).await?;
            let shutdown = CancellationToken::new();
            tokio::spawn(stop_on_signal(shutdown.clone()));
            let report = backfill::run(&config, &checkpoint, page_size.max(1), shutdown).await?;
            println!(
                "backfill: published={} already_published={} complete={}",
                report.published, report.already_published, report.complete
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::History {
            key,
            config,
            from_offset,
            from_time,
            format,
        } => {
            let config = Config::load(config.as_deref())?;
            let start = match (from_offset, from_time) {
                (Some(o), _) => Start::Offset(o),
                (None, Some(t)) => Start::Time(parse_time("--from-time", &t)?),
                (None, None) => Start::Beginning,
            };
            let codec = Codec::new(SchemaRegistry::from_config(&config.registry)?);
            let entries = history::history(&config.kafka, &codec, &key, start).await?;
            match format {
                OutputFormat::Table => print!("{}", history::table(&entries)),
                OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&entries)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay {
            config,
            from_time,
            from_offset,
            to_time,
            to_offset,
            target_path,
            target_suffix,
            swap_alias,
            keep_old,
        } => {
            use replay::{OffsetSpec, ReplayEnd, ReplayStart, ShadowTarget};
            let config = Config::load(config.as_deref())?;
            let target = match (target_path, target_suffix) {
                (Some(path), _) => ShadowTarget::Directory(path),
                (None, Some(suffix)) => ShadowTarget::Suffix(suffix),
                (None, None) => anyhow::bail!(
                    "replay: give --target-path (embedded, jsonl) or --target-suffix (Qdrant server)"
                ),
            };
            let from = match (from_offset, from_time) {
                (Some(o), _) => ReplayStart::Offsets(OffsetSpec::parse("--from-offset", &o)?),
                (None, Some(t)) => ReplayStart::Time(parse_time("--from-time", &t)?),
                (None, None) => ReplayStart::Beginning,
            };
            let to = match (to_offset, to_time) {
                (Some(o), _) => ReplayEnd::Offsets(OffsetSpec::parse("--to-offset", &o)?),
                (None, Some(t)) => ReplayEnd::Time(parse_time("--to-time", &t)?),
                (None, None) => ReplayEnd::Now,
            };
            if let Some(alias) = &swap_alias {
                replay::check_alias(&config, &target, alias).await?;
            }
            let (shadow, sink) = target.open(&config)?;
            let report = replay::replay(&shadow, sink, from, to).await?;
            println!(
                "replay: records={} applied={} skipped_stale={} poison={}",
                report.records, report.applied, report.skipped_stale, report.poison
            );
            if let Some(alias) = &swap_alias {
                for swap in replay::swap_alias(&config, &target, alias, keep_old).await? {
                    println!(
                        "alias: {} -> {} (before: {}{})",
                        swap.alias,
                        swap.target,
                        swap.previous.as_deref().unwrap_or("none"),
                        if swap.removed { ", removed" } else { "" }
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Offsets { action } => {
            match action {
                OffsetsAction::Show { config, group } => {
                    let config = Config::load(config.as_deref())?;
                    let group = group.unwrap_or_else(|| config.kafka.group_id.clone());
                    println!(
                        "{:>9} {:>10} {:>10} {:>10} {:>8}",
                        "partition", "committed", "low", "high", "lag"
                    );
                    for p in offsets::show(&config.kafka, &group, &config.kafka.changes_topic)? {
                        let committed = p.committed.map_or("-".to_owned(), |c| c.to_string());
                        println!(
                            "{:>9} {committed:>10} {:>10} {:>10} {:>8}",
                            p.partition, p.low, p.high, p.lag
                        );
                    }
                }
                OffsetsAction::Reset {
                    config,
                    group,
                    to_earliest,
                    to_latest,
                    to_datetime,
                    dry_run,
                    force,
                } => {
                    let config = Config::load(config.as_deref())?;
                    let group = group.unwrap_or_else(|| config.kafka.group_id.clone());
                    let to = match (to_earliest, to_latest, to_datetime) {
                        (true, _, _) => ResetTo::Earliest,
                        (_, true, _) => ResetTo::Latest,
                        (_, _, Some(t)) => ResetTo::Time(parse_time("--to-datetime", &t)?),
                        _ => anyhow::bail!(
                            "offsets reset: give --to-earliest, --to-latest or --to-datetime"
                        ),
                    };
                    let moved = offsets::reset(
                        &config.kafka,
                        &group,
                        &config.kafka.changes_topic,
                        to,
                        dry_run,
                        force,
                    )?;
                    for (partition, old, new) in moved {
                        let old = old.map_or("-".to_owned(), |o| o.to_string());
                        println!(
                            "partition {partition}: {old} -> {new}{}",
                            if dry_run { " (dry run)" } else { "" }
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            chunks,
            data_dir,
            inject_drift,
        } => {
            let temp = tempfile::tempdir().context("creating a temporary directory")?;
            let dir = data_dir.unwrap_or_else(|| temp.path().join("qdrant"));
            let shape = StreamShape {
                chunks,
                files: (chunks / 20).max(1),
                entities: (chunks / 5).max(1),
                mentions: chunks * 3 / 4,
                ..StreamShape::default()
            };
            let report = demo::run(shape, &dir, inject_drift).await?;
            print!("{}", report.summary());
            if let Some(line) = report.reconcile_line() {
                println!("{line}");
            }
            println!("{}", report.line());
            Ok(if report.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

/// Create the change, state and DLQ topics when missing.
async fn ensure_topics(config: &Config) -> anyhow::Result<()> {
    let k = &config.kafka;
    kafka::ensure_topics(
        k,
        &[
            (&k.changes_topic, Cleanup::Delete),
            (&k.state_topic, Cleanup::Compact),
            (&k.dlq_topic, Cleanup::Delete),
        ],
        6,
    )
    .await
}

async fn process(config: Config, listen: Option<std::net::SocketAddr>) -> anyhow::Result<()> {
    ensure_topics(&config).await?;
    let sink = sink::open(&config.sink)?;
    let stats = Arc::new(Stats::default());
    let health = Arc::new(Health::default());
    let shutdown = CancellationToken::new();
    serve_ops(listen, Readiness::Processor(health.clone()), &shutdown).await?;
    let processor = Processor::new(config, sink, stats, health).await?;
    tokio::spawn(stop_on_signal(shutdown.clone()));
    processor.run(shutdown).await
}

/// Serve /metrics, /healthz and /readyz on `listen`, when given, until `shutdown`.
async fn serve_ops(
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

/// Cancel `shutdown` on SIGINT or SIGTERM.
async fn stop_on_signal(shutdown: CancellationToken) {
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
