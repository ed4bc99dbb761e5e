//! `graphcdc`: keeps a Qdrant vector store in sync with a Neo4j graph through Kafka.
//!
//! Thin binary: parses arguments, loads config, wires signals, calls the library.

mod cli;
mod commands;

use anyhow::Context;
use clap::Parser;
use cli::{Cli, Command, DlqAction, LogFormat, OffsetsAction, OutputFormat, RepairArg};
use graphcdc_core::capture::backfill;
use graphcdc_core::capture::relay::Relay;
use graphcdc_core::config::Config;
use graphcdc_core::demo::{self, stream::StreamShape};
use graphcdc_core::kafka::{self, Cleanup};
use graphcdc_core::ops::{self, Readiness};
use graphcdc_core::processor::Processor;
use graphcdc_core::reconcile::repair::{RepairMode, RepairOptions};
use graphcdc_core::reconcile::{report, ReconcileOptions, Reconciler};
use graphcdc_core::sink;
use graphcdc_core::stats::{DriftGauges, Health, RelayStats, Stats};
use graphcdc_core::telemetry;
use std::path::PathBuf;
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
    let code = match runtime.block_on(run(cli.command, cli.config)) {
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

/// Run `command` with the config file `config` (the global `--config`).
async fn run(command: Command, config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    // Every subcommand but `demo` reads the config.
    let load = || Config::load(config.as_deref());
    match command {
        Command::Process {
            print_config,
            listen,
        } => {
            let config = load()?;
            if print_config {
                println!("{config:#?}");
                return Ok(ExitCode::SUCCESS);
            }
            process(config, listen).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Reconcile {
            once,
            repair,
            dry_run,
            force,
            max_delete_ratio,
            max_rewrite_ratio,
            budget_window,
            allow_non_compacted_state,
            delete_foreign,
            rate,
            grace,
            interval,
            rescan_every,
            state_dir,
            format,
            listen,
        } => {
            let config = load()?;
            let options = ReconcileOptions {
                grace,
                repair: repair.map(|mode| RepairOptions {
                    mode: match mode {
                        RepairArg::Sink => RepairMode::Sink,
                        RepairArg::Log => RepairMode::Log,
                    },
                    dry_run,
                    force,
                    max_delete_ratio,
                    max_rewrite_ratio,
                    budget_window,
                    rate_per_s: rate,
                    delete_foreign,
                }),
                settle_timeout: Duration::from_secs(30),
            };
            let sink = sink::open(&config.sink)?;
            let gauges = Arc::new(DriftGauges::default());
            let mut reconciler = Reconciler::new(config, sink, gauges)?;
            reconciler.allow_non_compacted_state(allow_non_compacted_state);
            reconciler.rescan_every(rescan_every);
            if let Some(dir) = &state_dir {
                reconciler.state_dir(dir)?;
            }
            if !once {
                let shutdown = CancellationToken::new();
                tokio::spawn(stop_on_signal(shutdown.clone()));
                serve_ops(listen, Readiness::Always, &shutdown).await?;
                reconciler
                    .run_continuous(&options, interval, shutdown)
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
        Command::Audit(args) => commands::audit::run(load()?, args).await,
        Command::Relay { listen } => {
            let config = load()?;
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
            checkpoint,
            page_size,
        } => {
            let config = load()?;
            let shutdown = CancellationToken::new();
            tokio::spawn(stop_on_signal(shutdown.clone()));
            let report = backfill::run(&config, &checkpoint, page_size.max(1), shutdown).await?;
            println!(
                "backfill: written={} failed={} complete={} (outbox entries: the relay publishes them)",
                report.written, report.failed, report.complete
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::History {
            key,
            from_offset,
            from_datetime,
            format,
        } => {
            commands::timetravel::history(&load()?, &key, from_offset, from_datetime, format)
                .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay(args) => {
            commands::timetravel::replay(&load()?, args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Offsets { action } => {
            match action {
                OffsetsAction::Show { group } => commands::offsets::show(&load()?, group)?,
                OffsetsAction::Reset {
                    group,
                    target,
                    partitions,
                    execute,
                    force,
                } => commands::offsets::reset(&load()?, group, target, partitions, execute, force)?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Dlq { action } => {
            match action {
                DlqAction::List { limit, format } => {
                    commands::dlq::list(&load()?, limit, format).await?;
                }
                DlqAction::Show { position, format } => {
                    commands::dlq::show(&load()?, &position, format).await?;
                }
                DlqAction::Redrive { selection, execute } => {
                    commands::dlq::redrive(&load()?, selection, execute).await?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Search {
            query,
            collection,
            limit,
            format,
        } => {
            commands::search::run(&load()?, &query, collection, limit, format).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            chunks,
            data_dir,
            inject_drift,
            no_embedding,
        } => {
            let temp = tempfile::tempdir().context("creating a temporary directory")?;
            let dir = data_dir.unwrap_or_else(|| temp.path().join("qdrant"));
            let shape = StreamShape {
                chunks,
                files: (chunks / 20).max(1),
                entities: (chunks / 5).max(1),
                mentions: chunks * 3 / 4,
                embed_chunks: !no_embedding,
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
