//! The command line: subcommands, flags and their parsing.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "graphcdc",
    version,
    about = "Neo4j → Kafka → Qdrant change data capture"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
    /// Log lines as text or as JSON objects (stderr; level from RUST_LOG). Traces are
    /// exported over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set.
    #[arg(
        long,
        global = true,
        env = "GRAPHCDC_LOG_FORMAT",
        default_value = "text"
    )]
    pub(crate) log_format: LogFormat,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
        /// Continuous mode: serve /metrics (drift gauges) and /healthz on this address.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Publish the Neo4j outbox to the change and state topics (one active per database).
    Relay {
        /// TOML config file; `GRAPHCDC_…` variables override it.
        #[arg(long, short, env = "GRAPHCDC_CONFIG")]
        config: Option<PathBuf>,
        /// Serve /metrics and /healthz on this address.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
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
    /// Show an entity's timeline on the change topic, with property diffs.
    History {
        /// Entity key.
        key: String,
        /// TOML config file; `GRAPHCDC_…` variables override it.
        #[arg(long, short, env = "GRAPHCDC_CONFIG")]
        config: Option<PathBuf>,
        /// Start at this offset of the key's partition.
        #[arg(long, conflicts_with = "from_time")]
        from_offset: Option<i64>,
        /// Start at this time (RFC 3339, e.g. 2026-11-22T10:00:00Z).
        #[arg(long)]
        from_time: Option<String>,
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// Rebuild the store as of a time into a shadow target (live collections untouched).
    Replay {
        #[arg(long, short, env = "GRAPHCDC_CONFIG")]
        config: Option<PathBuf>,
        /// Start at this time (RFC 3339); default: the beginning.
        #[arg(long, conflicts_with = "from_offset")]
        from_time: Option<String>,
        /// Start at this offset on every partition (`120`), or per partition
        /// (`0:120,1:95`; unlisted partitions start at the earliest offset).
        #[arg(long, value_name = "OFFSET|P:OFFSET,…")]
        from_offset: Option<String>,
        /// Stop before this time (RFC 3339); default: today's end of the topic.
        #[arg(long, conflicts_with = "to_offset")]
        to_time: Option<String>,
        /// Stop before this offset (exclusive) on every partition (`500`), or per partition
        /// (`0:500,2:80`; unlisted partitions run to today's end).
        #[arg(long, value_name = "OFFSET|P:OFFSET,…")]
        to_offset: Option<String>,
        /// Embedded (or jsonl) sink: the shadow store's directory.
        #[arg(long, conflicts_with = "target_suffix")]
        target_path: Option<PathBuf>,
        /// Server sink: shadow collections are named `{collection}_{suffix}`.
        #[arg(long)]
        target_suffix: Option<String>,
        /// After the replay, point this alias at the shadow target atomically. Server: the
        /// collection name of the mappings (`{collection}` for several). Embedded: a symlink
        /// path; point `[sink] path` at it.
        #[arg(long)]
        swap_alias: Option<String>,
        /// With --swap-alias: keep what the alias pointed at before (default: delete it).
        #[arg(long, requires = "swap_alias")]
        keep_old: bool,
    },
    /// Show or reset a consumer group's offsets on the change topic.
    Offsets {
        #[command(subcommand)]
        action: OffsetsAction,
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

#[derive(Subcommand)]
pub(crate) enum OffsetsAction {
    /// Committed offset and lag per partition.
    Show {
        #[arg(long, short, env = "GRAPHCDC_CONFIG")]
        config: Option<PathBuf>,
        /// Consumer group (default: kafka.group_id).
        #[arg(long)]
        group: Option<String>,
    },
    /// Move a stopped group (refused while it has active members).
    Reset {
        #[arg(long, short, env = "GRAPHCDC_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long)]
        group: Option<String>,
        #[arg(long, group = "target")]
        to_earliest: bool,
        #[arg(long, group = "target")]
        to_latest: bool,
        /// RFC 3339 time, e.g. 2026-11-22T10:00:00Z.
        #[arg(long, group = "target")]
        to_datetime: Option<String>,
        /// Print the new offsets, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Reset even when the broker cannot list the group's members (you stopped them).
        #[arg(long)]
        force: bool,
    },
}

/// Unix ms of an RFC 3339 time, with the option named in the error.
pub(crate) fn parse_time(option: &str, text: &str) -> anyhow::Result<i64> {
    let time = humantime::parse_rfc3339_weak(text)
        .map_err(|e| anyhow::anyhow!("{option}: {text:?} is not an RFC 3339 time: {e}"))?;
    Ok(time.duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64)
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum RepairArg {
    Sink,
    Log,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum OutputFormat {
    Table,
    Json,
}
