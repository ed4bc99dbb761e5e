//! `graphcdc`: keeps a Qdrant vector store in sync with a Neo4j graph through Kafka.
//!
//! Thin binary: parses arguments, loads config, wires signals, calls the library.

use anyhow::Context;
use clap::{Parser, Subcommand};
use graphcdc_core::capture::backfill;
use graphcdc_core::capture::relay::Relay;
use graphcdc_core::config::Config;
use graphcdc_core::demo::{self, stream::StreamShape};
use graphcdc_core::kafka::{self, Cleanup};
use graphcdc_core::ops::{self, OpsState};
use graphcdc_core::processor::Processor;
use graphcdc_core::reconcile::repair::{RepairMode, RepairOptions};
use graphcdc_core::reconcile::{report, ReconcileOptions, Reconciler};
use graphcdc_core::sink;
use graphcdc_core::stats::{DriftGauges, Health, RelayStats, Stats};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "graphcdc",
    version,
    about = "Neo4j → Kafka → Qdrant change data capture"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply the change topic to the configured sink (a consumer group member).
    Process {
        /// TOML config file; `GRAPHCDC_…` variables override it.
        #[arg(long, short, env = "GRAPHCDC_CONFIG")]
        config: Option<PathBuf>,
        /// Print the effective config (secrets masked) and exit.
        #[arg(long)]
        print_config: bool,
        /// Serve /metrics, /healthz and /readyz on this address (e.g. 0.0.0.0:9187).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Compare the sink with the compacted state topic; report and repair drift.
    Reconcile {
        /// TOML config file; `GRAPHCDC_…` variables override it.
        #[arg(long, short, env = "GRAPHCDC_CONFIG")]
        config: Option<PathBuf>,
        /// Check once and exit: 0 when clean, 3 when drift remains.
        #[arg(long)]
        once: bool,
        /// Repair drift: `sink` writes fixes directly, `log` publishes corrective events.
        #[arg(long, value_enum)]
        repair: Option<RepairArg>,
        /// Print the repair plan, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Allow a repair that deletes more than --max-delete-ratio of the sink.
        #[arg(long)]
        force: bool,
        /// Largest share of the sink's live points one repair may delete.
        #[arg(long, default_value_t = 0.1)]
        max_delete_ratio: f64,
        /// Repairs per second at most.
        #[arg(long, default_value_t = 1_000)]
        rate: u32,
        /// States younger than this (ms) are not judged yet.
        #[arg(long, default_value_t = 10_000)]
        grace_ms: u64,
        /// Seconds between checks in continuous mode.
        #[arg(long, default_value_t = 60)]
        interval_s: u64,
        /// Output format of `--once`.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// Publish the Neo4j outbox to the change and state topics (one active per database).
    Relay {
        /// TOML config file; `GRAPHCDC_…` variables override it.
        #[arg(long, short, env = "GRAPHCDC_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Snapshot the existing graph into the topics; resumable from a checkpoint file.
    Backfill {
        /// TOML config file; `GRAPHCDC_…` variables override it.
        #[arg(long, short, env = "GRAPHCDC_CONFIG")]
        config: Option<PathBuf>,
        /// Checkpoint file (created when missing; resume by running again).
        #[arg(long, default_value = "graphcdc-backfill.json")]
        checkpoint: PathBuf,
        /// Entities per page.
        #[arg(long, default_value_t = 1_000)]
        page_size: usize,
    },
    /// Run the whole pipeline in-process on embedded defaults and check the result.
    Demo {
        /// Number of chunks (the stream grows with it).
        #[arg(long, default_value_t = 2_000)]
        chunks: usize,
        /// Keep the embedded store here instead of a temporary directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// After the stream, damage the store, reconcile, repair and check again.
        #[arg(long)]
        inject_drift: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum RepairArg {
    Sink,
    Log,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OutputFormat {
    Table,
    Json,
}

/// Exit code of `reconcile --once` when drift remains.
const EXIT_DRIFT: u8 = 3;

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    // qdrant-edge warns about process-wide flags it cannot see initialised: not actionable.
    let default_level = match cli.command {
        Command::Demo { .. } => "warn,qdrant_edge=error",
        _ => "info,qdrant_edge=error",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
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
            let mut reconciler = Reconciler::new(config, sink, Arc::new(DriftGauges::default()))?;
            if !once {
                let shutdown = CancellationToken::new();
                tokio::spawn(stop_on_signal(shutdown.clone()));
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
        Command::Relay { config } => {
            let config = Config::load(config.as_deref())?;
            ensure_topics(&config).await?;
            let relay = Relay::new(config, Arc::new(RelayStats::default()))?;
            let shutdown = CancellationToken::new();
            tokio::spawn(stop_on_signal(shutdown.clone()));
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
            if let Some(line) = &report.reconcile_line {
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
    if let Some(addr) = listen {
        let state = OpsState {
            stats: stats.clone(),
            health: health.clone(),
            group: config.kafka.group_id.clone(),
            topic: config.kafka.changes_topic.clone(),
        };
        let (bound, _) = ops::serve(addr, state, shutdown.clone()).await?;
        tracing::info!(%bound, "serving /metrics, /healthz, /readyz");
    }
    let processor = Processor::new(config, sink, stats, health).await?;
    tokio::spawn(stop_on_signal(shutdown.clone()));
    processor.run(shutdown).await
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
