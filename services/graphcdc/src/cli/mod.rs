//! The command line: subcommands, options and their parsing.
//!
//! Conventions, shared with Kafka's own tools:
//! - `--config`/`-c` is global: before or after the subcommand.
//! - Times are `--from-datetime`/`--to-datetime` everywhere; each takes an RFC 3339 time
//!   (`2026-11-22T10:00:00Z`, or with an offset `…+02:00`) or a duration meaning "that
//!   long ago" (`10s`, `5m`, `2h`, `1d`).
//! - Durations are humantime text (`10s`, `5m`, `1h 30m`).
//! - Commands that change something outside the sink (`offsets reset`, `dlq redrive`)
//!   print a preview and change nothing unless `--execute`.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

mod values;
pub(crate) use values::{duration, ratio, when, When};

#[derive(Parser)]
#[command(
    name = "graphcdc",
    version,
    about = "Neo4j → Kafka → Qdrant change data capture",
    after_help = "Times (--from-datetime, --to-datetime): RFC 3339 (2026-11-22T10:00:00Z) or a \
                  duration ago (10s, 5m, 2h, 1d). Durations: 10s, 5m, 1h 30m."
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
    /// TOML config file; `GRAPHCDC_…` variables override it. Goes before or after the
    /// subcommand.
    #[arg(
        long,
        short,
        global = true,
        env = "GRAPHCDC_CONFIG",
        value_name = "FILE"
    )]
    pub(crate) config: Option<PathBuf>,
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
    Process(ProcessArgs),
    /// Compare the sink with the compacted state topic; report and repair drift.
    Reconcile(ReconcileArgs),
    /// Audit Neo4j against graph.state and the sink (three-way); repair through the log.
    Audit(AuditArgs),
    /// Publish the Neo4j outbox to the change and state topics (one active per database).
    Relay(RelayArgs),
    /// Snapshot the existing graph as outbox entries (source backfill) that the relay
    /// publishes (run it); resumable from a checkpoint file.
    Backfill(BackfillArgs),
    /// Show an entity's timeline on the change topic, with property diffs.
    History(HistoryArgs),
    /// Rebuild the store as of a time into a shadow target (live collections untouched).
    Replay(ReplayArgs),
    /// Show or reset a consumer group's offsets on the change topic.
    Offsets(OffsetsArgs),
    /// List, inspect and re-publish the dead-letter queue's records.
    Dlq(DlqArgs),
    /// Run the whole pipeline in-process on embedded defaults and check the result.
    #[cfg(feature = "demo")]
    Demo(DemoArgs),
    /// Semantic search: embed a query with a collection's own model
    /// ([mappings.embedding]) and print the nearest points the pipeline wrote.
    Search(SearchArgs),
}

/// Options of `graphcdc process`.
#[derive(clap::Args)]
pub(crate) struct ProcessArgs {
    /// Print the effective config (secrets masked) and exit.
    #[arg(long)]
    pub(crate) print_config: bool,
    /// Serve /metrics, /healthz and /readyz on this address (e.g. 0.0.0.0:9187).
    #[arg(long)]
    pub(crate) listen: Option<std::net::SocketAddr>,
}

/// Options of `graphcdc reconcile`.
#[derive(clap::Args)]
pub(crate) struct ReconcileArgs {
    /// Check once and exit: 0 when clean, 3 when drift remains.
    #[arg(long)]
    pub(crate) once: bool,
    /// Repair drift: `sink` writes fixes directly, `log` publishes corrective events.
    #[arg(long, value_enum)]
    pub(crate) repair: Option<RepairArg>,
    /// Print the repair plan, change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Lift the budget of deletes and same-version rewrites (--max-delete-ratio,
    /// --max-rewrite-ratio).
    #[arg(long)]
    pub(crate) force: bool,
    /// Largest share (0 to 1) of a collection's live points that repairs may delete
    /// per --budget-window.
    #[arg(long, default_value_t = 0.1, value_parser = ratio)]
    pub(crate) max_delete_ratio: f64,
    /// Largest share (0 to 1) of a collection's live points that repairs may rewrite
    /// at the same version (content mismatches) per --budget-window.
    #[arg(long, default_value_t = 0.1, value_parser = ratio)]
    pub(crate) max_rewrite_ratio: f64,
    /// Window of the delete and rewrite budgets; continuous mode counts every check in
    /// it (e.g. 24h).
    #[arg(long, default_value = "24h", value_parser = duration, value_name = "DURATION")]
    pub(crate) budget_window: Duration,
    /// Run even if the state topic is not verified to keep every key
    /// (cleanup.policy=compact, or compact,delete with retention.ms=-1).
    #[arg(long)]
    pub(crate) allow_non_compacted_state: bool,
    /// With --repair sink: also delete the points graphcdc did not write (reported as
    /// `foreign`: a numeric id or no cdc_* fields), within the delete budget.
    #[arg(long, requires = "repair")]
    pub(crate) delete_foreign: bool,
    /// Repairs per second at most.
    #[arg(long, default_value_t = 1_000)]
    pub(crate) rate: u32,
    /// How long a check waits for the processor to apply what the sink lacks; a
    /// state the sink lacks that is older than this is drift (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = duration, value_name = "DURATION")]
    pub(crate) grace: Duration,
    /// Time between checks in continuous mode (e.g. 60s, 5m).
    #[arg(long, default_value = "60s", value_parser = duration, value_name = "DURATION")]
    pub(crate) interval: Duration,
    /// Continuous mode: after the first full check, rescan only the buckets that may
    /// have drifted (changed on the state topic, counted differently in the sink, or
    /// drifted last time) plus a rotating slice, so that every bucket is rescanned at
    /// least every N checks; 1 scans everything at every check.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) rescan_every: u32,
    /// Keep the expected state (key, version, hash and record position per point) in
    /// a file in DIR instead of memory, so memory stays flat whatever the number of
    /// entities (about 130 B per point in memory otherwise); the file is made anew at
    /// start. Every full check then goes bucket by bucket.
    #[arg(long, value_name = "DIR")]
    pub(crate) state_dir: Option<std::path::PathBuf>,
    /// Output format of `--once`.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub(crate) format: OutputFormat,
    /// Continuous mode: serve /metrics (drift gauges) and /healthz on this address.
    #[arg(long)]
    pub(crate) listen: Option<std::net::SocketAddr>,
}

/// Options of `graphcdc relay`.
#[derive(clap::Args)]
pub(crate) struct RelayArgs {
    /// Serve /metrics and /healthz on this address.
    #[arg(long)]
    pub(crate) listen: Option<std::net::SocketAddr>,
}

/// Options of `graphcdc backfill`.
#[derive(clap::Args)]
pub(crate) struct BackfillArgs {
    /// Checkpoint file (created when missing; resume by running again).
    #[arg(long, default_value = "graphcdc-backfill.json")]
    pub(crate) checkpoint: PathBuf,
    /// Entities per page.
    #[arg(long, default_value_t = 1_000)]
    pub(crate) page_size: usize,
}

/// Options of `graphcdc history`.
#[derive(clap::Args)]
pub(crate) struct HistoryArgs {
    /// Entity key.
    pub(crate) key: String,
    /// Start at this offset of the key's partition.
    #[arg(long, conflicts_with = "from_datetime")]
    pub(crate) from_offset: Option<i64>,
    /// Start at the first record at or after this time: RFC 3339 or a duration ago.
    #[arg(long, value_parser = when, value_name = "TIME|AGO")]
    pub(crate) from_datetime: Option<When>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub(crate) format: OutputFormat,
}

/// Options of `graphcdc offsets`.
#[derive(clap::Args)]
pub(crate) struct OffsetsArgs {
    #[command(subcommand)]
    pub(crate) action: OffsetsAction,
}

/// Options of `graphcdc dlq`.
#[derive(clap::Args)]
pub(crate) struct DlqArgs {
    #[command(subcommand)]
    pub(crate) action: DlqAction,
}

/// Options of `graphcdc demo`.
#[cfg(feature = "demo")]
#[derive(clap::Args)]
pub(crate) struct DemoArgs {
    /// Number of chunks (the stream grows with it).
    #[arg(long, default_value_t = 2_000)]
    pub(crate) chunks: usize,
    /// Keep the embedded store here instead of a temporary directory.
    #[arg(long)]
    pub(crate) data_dir: Option<PathBuf>,
    /// After the stream, damage the store, reconcile, repair and check again.
    #[arg(long)]
    pub(crate) inject_drift: bool,
    /// Chunks carry their own random vectors instead of text embedded on the way by
    /// the local model (faster; no search step).
    #[arg(long)]
    pub(crate) no_embedding: bool,
}

/// Options of `graphcdc search`.
#[derive(clap::Args)]
pub(crate) struct SearchArgs {
    /// The query text.
    pub(crate) query: String,
    /// Collection to search (default: the first mapping with [mappings.embedding]).
    #[arg(long)]
    pub(crate) collection: Option<String>,
    /// Number of points to print.
    #[arg(long, default_value_t = 5)]
    pub(crate) limit: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub(crate) format: OutputFormat,
}

/// Options of `graphcdc audit`.
#[derive(clap::Args)]
pub(crate) struct AuditArgs {
    /// Repair through the log: upserts and tombstones (source mode `repair`) written as
    /// outbox entries that the relay publishes (it must run) to the change topic and
    /// graph.state, so graph.state and every sink heal.
    #[arg(long)]
    pub(crate) repair: bool,
    /// With --repair: print the plan (and what the guard would refuse), write nothing.
    #[arg(long, requires = "repair")]
    pub(crate) dry_run: bool,
    /// With --repair: lift the delete budget (--max-delete-ratio).
    #[arg(long, requires = "repair")]
    pub(crate) force: bool,
    /// Largest share (0 to 1) of a label's (or type's) entities live in graph.state that
    /// a repair may delete per --budget-window; a larger loss is refused unless --force.
    #[arg(long, default_value_t = 0.1, value_parser = ratio)]
    pub(crate) max_delete_ratio: f64,
    /// Window of the delete budget (e.g. 24h).
    #[arg(long, default_value = "24h", value_parser = duration, value_name = "DURATION")]
    pub(crate) budget_window: Duration,
    /// Entities written to the outbox per second at most.
    #[arg(long, default_value_t = 1_000)]
    pub(crate) rate: u32,
    /// Entities per Neo4j page.
    #[arg(long, default_value_t = 1_000)]
    pub(crate) page_size: usize,
    /// Findings held (listed, looked at again and repaired) per run, about 200 B each;
    /// more are counted only, and a run after the repair finds them.
    #[arg(long, default_value_t = graphcdc_core::audit::MAX_FINDINGS)]
    pub(crate) max_findings: usize,
    /// Wait before the second look at what differs (the relay may be publishing it), and
    /// the sink check's grace (e.g. 5s, 0s).
    #[arg(long, default_value = "5s", value_parser = duration, value_name = "DURATION")]
    pub(crate) grace: Duration,
    /// After a repair: how long to wait for the relay to publish the repair's outbox
    /// entries and for graph.state and the sink to converge.
    #[arg(long, default_value = "60s", value_parser = duration, value_name = "DURATION")]
    pub(crate) settle_timeout: Duration,
    /// A restored Neo4j: first move every version counter into the next epoch (a multiple
    /// of 2^32 above every version graph.state holds; stop the relay first), then audit
    /// (add --repair to publish what the restore changed).
    #[arg(long)]
    pub(crate) bump_epoch: bool,
    /// Leave the sink out (only Neo4j against graph.state), e.g. while a processor holds
    /// an embedded store.
    #[arg(long)]
    pub(crate) no_sink: bool,
    /// Check the sink even if the state topic is not verified to keep every key.
    #[arg(long)]
    pub(crate) allow_non_compacted_state: bool,
    /// Keep graph.state's entries (version, hash per key), the keys met in Neo4j and the
    /// sink check's expected state in files in DIR instead of memory, so memory stays
    /// flat whatever the size of the graph; the files are made anew at start.
    #[arg(long, value_name = "DIR")]
    pub(crate) state_dir: Option<std::path::PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub(crate) format: OutputFormat,
    /// Shorthand for --format json.
    #[arg(long, conflicts_with = "format")]
    pub(crate) json: bool,
}

/// Bounds, target and alias swap of `graphcdc replay`.
#[derive(clap::Args)]
pub(crate) struct ReplayArgs {
    /// Start at the first record at or after this time (RFC 3339 or a duration ago);
    /// default: the beginning.
    #[arg(long, conflicts_with = "from_offset", value_parser = when, value_name = "TIME|AGO")]
    pub(crate) from_datetime: Option<When>,
    /// Start at this offset on every partition (`120`), or per partition
    /// (`0:120,1:95`; unlisted partitions start at the earliest offset).
    #[arg(long, value_name = "OFFSET|P:OFFSET,…")]
    pub(crate) from_offset: Option<String>,
    /// Stop before the first record at or after this time (RFC 3339 or a duration
    /// ago); default: today's end of the topic.
    #[arg(long, conflicts_with = "to_offset", value_parser = when, value_name = "TIME|AGO")]
    pub(crate) to_datetime: Option<When>,
    /// Stop before this offset (exclusive) on every partition (`500`), or per partition
    /// (`0:500,2:80`; unlisted partitions run to today's end).
    #[arg(long, value_name = "OFFSET|P:OFFSET,…")]
    pub(crate) to_offset: Option<String>,
    /// Embedded (or jsonl) sink: the shadow store's directory.
    #[arg(long, conflicts_with = "target_suffix")]
    pub(crate) target_path: Option<PathBuf>,
    /// Server sink: shadow collections are named `{collection}_{suffix}`.
    #[arg(long)]
    pub(crate) target_suffix: Option<String>,
    /// After the replay, point this alias at the shadow target atomically. Server: the
    /// collection name of the mappings (`{collection}` for several). Embedded: a symlink
    /// path; point `[sink] path` at it.
    #[arg(long)]
    pub(crate) swap_alias: Option<String>,
    /// With --swap-alias: keep what the alias pointed at before (default: delete it).
    #[arg(long, requires = "swap_alias")]
    pub(crate) keep_old: bool,
}

#[derive(Subcommand)]
pub(crate) enum OffsetsAction {
    /// Committed offset and lag per partition.
    Show {
        /// Consumer group (default: kafka.group_id).
        #[arg(long)]
        group: Option<String>,
    },
    /// Preview (default) or commit new offsets for a stopped group, like
    /// `kafka-consumer-groups --reset-offsets`; offsets are clamped to what the topic holds.
    Reset {
        /// Consumer group (default: kafka.group_id).
        #[arg(long)]
        group: Option<String>,
        #[command(flatten)]
        target: ResetTargetArgs,
        /// Only these partitions (e.g. 0,2); default: every partition.
        #[arg(long, value_delimiter = ',', value_name = "P,…",
              value_parser = clap::value_parser!(i32).range(0..))]
        partitions: Option<Vec<i32>>,
        /// Commit the new offsets; without it the plan is printed and nothing changes.
        #[arg(long)]
        execute: bool,
        /// With --execute: reset even when the broker cannot list the group's members
        /// (you stopped them).
        #[arg(long, requires = "execute")]
        force: bool,
    },
}

/// Where `offsets reset` moves the group: exactly one.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub(crate) struct ResetTargetArgs {
    /// To the earliest offset still on the topic.
    #[arg(long)]
    pub(crate) to_earliest: bool,
    /// To the end of each partition (skip everything not read yet).
    #[arg(long)]
    pub(crate) to_latest: bool,
    /// To the first record at or after this time (RFC 3339 or a duration ago); the end
    /// where there is none.
    #[arg(long, value_parser = when, value_name = "TIME|AGO")]
    pub(crate) to_datetime: Option<When>,
    /// To the first record at or after now minus this duration (e.g. 10m).
    #[arg(long, value_parser = duration, value_name = "DURATION")]
    pub(crate) by_duration: Option<Duration>,
    /// To this offset on every selected partition (`120`), or per partition (`0:120,1:95`;
    /// only the listed partitions move).
    #[arg(long, value_name = "OFFSET|P:OFFSET,…")]
    pub(crate) to_offset: Option<String>,
    /// By this many records from the committed offset (`-100` back, `+100` forward).
    #[arg(long, allow_negative_numbers = true, value_name = "±N")]
    pub(crate) shift_by: Option<i64>,
}

#[derive(Subcommand)]
pub(crate) enum DlqAction {
    /// List the DLQ's records, earliest to the end at the time of the call, with their
    /// error headers.
    List {
        /// Show the first N records at most (partition, then offset order).
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// One DLQ record with every header and its value decoded.
    Show {
        /// The record, as PARTITION:OFFSET (as `dlq list` prints it).
        #[arg(value_name = "PARTITION:OFFSET")]
        position: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// Re-publish DLQ records to the change topic with their key, value and headers
    /// (preview unless --execute).
    Redrive {
        #[command(flatten)]
        selection: RedriveSelection,
        /// Publish; without it the records are listed and nothing is published.
        #[arg(long)]
        execute: bool,
    },
}

/// Which DLQ records `dlq redrive` takes: exactly one.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub(crate) struct RedriveSelection {
    /// These records, as PARTITION:OFFSET pairs (e.g. 0:12,3:7).
    #[arg(long, value_name = "P:OFFSET,…")]
    pub(crate) partition_offsets: Option<String>,
    /// Every record, earliest to the end at the time of the call.
    #[arg(long)]
    pub(crate) all: bool,
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every option and positional of every subcommand, with its command path.
    fn all_args(command: &clap::Command, path: &str, out: &mut Vec<(String, clap::Arg)>) {
        for arg in command.get_arguments() {
            out.push((path.to_owned(), arg.clone()));
        }
        for sub in command.get_subcommands() {
            all_args(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_option_and_positional_has_help() {
        let command = Cli::command();
        command.clone().debug_assert();
        let mut args = Vec::new();
        all_args(&command, "graphcdc", &mut args);
        assert!(args.len() > 40, "walked {} arguments", args.len());
        let missing: Vec<String> = args
            .iter()
            .filter(|(_, arg)| !matches!(arg.get_id().as_str(), "help" | "version"))
            .filter(|(_, arg)| {
                arg.get_help()
                    .or(arg.get_long_help())
                    .is_none_or(|h| h.to_string().trim().is_empty())
            })
            .map(|(path, arg)| format!("{path}: {}", arg.get_id()))
            .collect();
        assert!(missing.is_empty(), "without help text: {missing:?}");
        for sub in command.get_subcommands() {
            assert!(sub.get_about().is_some(), "{} has no about", sub.get_name());
        }
    }

    #[test]
    fn config_goes_before_or_after_the_subcommand() {
        for argv in [
            &["graphcdc", "--config", "x.toml", "process"][..],
            &["graphcdc", "process", "--config", "x.toml"],
            &["graphcdc", "-c", "x.toml", "dlq", "list"],
            &["graphcdc", "offsets", "show", "-c", "x.toml"],
        ] {
            let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
            assert_eq!(cli.config, Some(PathBuf::from("x.toml")), "{argv:?}");
        }
    }

    #[test]
    fn bad_values_name_the_option() {
        let cases: [(&[&str], &str); 5] = [
            (
                &["graphcdc", "replay", "--to-datetime", "yesterday"],
                "--to-datetime",
            ),
            (
                &["graphcdc", "history", "k", "--from-datetime", "nope"],
                "--from-datetime",
            ),
            (
                &["graphcdc", "reconcile", "--grace", "10 parsecs"],
                "--grace",
            ),
            (
                &["graphcdc", "offsets", "reset", "--by-duration", "x"],
                "--by-duration",
            ),
            (
                &[
                    "graphcdc",
                    "offsets",
                    "reset",
                    "--to-latest",
                    "--partitions",
                    "0,-1",
                ],
                "--partitions",
            ),
        ];
        for (argv, option) in cases {
            let err = Cli::try_parse_from(argv)
                .err()
                .expect("refused")
                .to_string();
            assert!(err.contains(option), "{argv:?}: {err}");
        }
    }

    #[test]
    fn offsets_reset_takes_exactly_one_target_and_previews_by_default() {
        let parse = |argv: &[&str]| Cli::try_parse_from(argv);
        let err = parse(&["graphcdc", "offsets", "reset"]).err().unwrap();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        let err = parse(&[
            "graphcdc",
            "offsets",
            "reset",
            "--to-earliest",
            "--to-latest",
        ])
        .err()
        .unwrap();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
        assert!(parse(&["graphcdc", "offsets", "reset", "--to-latest", "--dry-run"]).is_err());
        let cli = parse(&["graphcdc", "offsets", "reset", "--shift-by", "-50"]).unwrap();
        let Command::Offsets(OffsetsArgs {
            action: OffsetsAction::Reset {
                target, execute, ..
            },
        }) = cli.command
        else {
            panic!("offsets reset")
        };
        assert_eq!(target.shift_by, Some(-50));
        assert!(!execute, "preview unless --execute");
        let cli = parse(&["graphcdc", "offsets", "reset", "--shift-by", "+7"]).unwrap();
        let Command::Offsets(OffsetsArgs {
            action: OffsetsAction::Reset { target, .. },
        }) = cli.command
        else {
            panic!("offsets reset")
        };
        assert_eq!(target.shift_by, Some(7));
    }
}
