//! `graphcdc-bench`: repeatable figures for the claims in `docs/benchmarks.md`.
//!
//! One run measures, on this machine, side by side:
//! 1. the ceiling: fenced bulk writes of 384-d points with ~1 KB payload into the
//!    embedded sink, best batch size;
//! 2. the pipeline: events produced to a broker, consumed and applied by the processor
//!    with manual commits, end to end, and its ratio to (1);
//! 3. a naive baseline: one write and one synchronous commit per event;
//! 4. freshness at fixed rates (`--freshness-rates`);
//! 5. CPU per 1,000 events during (2); the reconciler's full check of a large state
//!    with 0.1 % drift;
//! 6. the bench process's peak RSS during (2);
//! 7. the processor's RSS at steady state during the fastest freshness run;
//! 8. decode + map µs per event, apache-avro's generic values against the
//!    schema-specific reader.
//!
//! The ceiling of (2) is the lower of the sink's bulk write rate and a bare consumer's
//! read rate of the same topic from the same broker.
//!
//! With `--reconcile-scale` it measures only the reconciler at scale (`--entities`): the
//! first full check, then the bucketed checks after 0.1 % drift, with their memory.
//!
//! With `--relay-backlog N` it measures only the outbox relay draining an N-entry
//! backlog from a Bolt server (`--bolt`) to a real broker (`--bootstrap`).
//!
//! The broker is librdkafka's in-process mock cluster unless `--bootstrap` names a real
//! one.

mod audit_state;
mod consumer;
mod decode;
mod embedding;
mod freshness;
mod pipeline;
mod process_rss;
mod reconcile;
mod reconcile_scale;
mod relay;
mod usage;
mod workload;

use clap::Parser;
use std::time::Duration;

#[derive(Parser, Clone)]
#[command(name = "graphcdc-bench")]
pub struct Args {
    /// Events for the ceiling and the pipeline.
    #[arg(long, default_value_t = 20_000)]
    pub events: usize,
    /// Events for the naive baseline.
    #[arg(long, default_value_t = 1_000)]
    pub naive_events: usize,
    /// Seconds of the fixed-rate freshness run (0 skips it).
    #[arg(long, default_value_t = 30)]
    pub freshness_seconds: u64,
    /// Rates of the freshness runs, events/s, comma-separated; one run of
    /// `--freshness-seconds` each. The processor's steady-state RSS is taken in the
    /// fastest.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,10000")]
    pub freshness_rates: Vec<u64>,
    /// `processor.commit_interval_ms` of the pipeline and freshness runs: how often the
    /// sink is synced (flushed) and offsets committed; 0 syncs after every batch, as
    /// every write flushed before it was acknowledged until #15.
    #[arg(long, default_value_t = 0)]
    pub commit_interval_ms: u64,
    /// `processor.max_batches_in_flight` of the pipeline and freshness runs, and the
    /// parallel write streams of the sink ceiling (disjoint batches written at once).
    #[arg(long, default_value_t = 1)]
    pub batches_in_flight: usize,
    /// Encoded events decoded both ways for the decode figure (0 skips it).
    #[arg(long, default_value_t = 5_000)]
    pub decode_events: usize,
    /// Entities of the reconciler check (0 skips it).
    #[arg(long, default_value_t = 1_000_000)]
    pub entities: usize,
    /// Only the reconciler at scale: first full check, then bucketed checks after 0.1 %
    /// drift, of `--entities` entities.
    #[arg(long)]
    pub reconcile_scale: bool,
    /// With --reconcile-scale: only the memory of the expected state (no broker, no sink).
    #[arg(long)]
    pub state_only: bool,
    /// With --reconcile-scale --state-only: what `graphcdc audit` holds per key instead
    /// (graph.state's entries and the keys met in Neo4j).
    #[arg(long, requires = "state_only")]
    pub audit_state: bool,
    /// With --reconcile-scale: keep the reconciler's expected state in a file in this
    /// directory (`reconcile --state-dir`) instead of memory.
    #[arg(long)]
    pub state_dir: Option<std::path::PathBuf>,
    /// The bucketed checks' `--rescan-every` (every bucket rescanned at least every N
    /// checks).
    #[arg(long, default_value_t = 60)]
    pub rescan_every: u32,
    /// A real broker instead of the in-process mock cluster.
    #[arg(long)]
    pub bootstrap: Option<String>,
    /// Only the relay: drain an outbox backlog of this many entries (0: skip).
    #[arg(long, default_value_t = 0)]
    pub relay_backlog: usize,
    /// Outbox entries per relay round.
    #[arg(long, default_value_t = 500)]
    pub relay_batch: usize,
    /// Partitions of the relay's topics.
    #[arg(long, default_value_t = 4)]
    pub relay_partitions: i32,
    /// Bolt server of the relay run.
    #[arg(long, default_value = "bolt://127.0.0.1:7687")]
    pub bolt: String,
    #[arg(long, default_value = "root")]
    pub bolt_user: String,
    #[arg(long, default_value = "")]
    pub bolt_password: String,
    #[arg(long, default_value = "neo4j")]
    pub bolt_database: String,
    /// Only the processor in its own process: `graphcdc process` (next to this binary)
    /// fed at this rate for `--freshness-seconds` from `--bootstrap`; its RSS and CPU.
    #[arg(long, default_value_t = 0)]
    pub process_rss_rate: u64,
    /// With --process-rss-rate: the processor's sink, `embedded` (Qdrant's engine in the
    /// processor's process, holding every point) or `jsonl` (files: the processor's own
    /// footprint, as with a Qdrant server).
    #[arg(long, default_value = "embedded", value_parser = ["embedded", "jsonl"])]
    pub process_rss_sink: String,
    /// With --process-rss-rate: a librdkafka property of the processor's consumer,
    /// `name=value` (repeatable), e.g. `queued.max.messages.kbytes=16384`.
    #[arg(long)]
    pub process_rss_property: Vec<String>,
    /// Only the embeddings: the local model's texts/s and the text-hash cache on a stream
    /// of this many metadata-only updates (0: skip).
    #[arg(long, default_value_t = 0)]
    pub embed_texts: usize,
}

/// One measured figure.
pub struct Figure {
    pub name: String,
    pub value: String,
    pub note: String,
}

/// A memory field of this process's `/proc/self/status` (`VmRSS:`, `VmHWM:`, `RssAnon:`,
/// …) in MiB; 0 where there is none (not Linux).
pub fn proc_status_mib(name: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Resident set size of this process now and at its peak, in MiB (Linux).
pub fn rss_mib() -> (f64, f64) {
    (proc_status_mib("VmRSS:"), proc_status_mib("VmHWM:"))
}

/// Per second, from a count and a duration.
pub fn per_s(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(1e-9)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // RUST_LOG=graphcdc_core::reconcile=debug shows the stages of each check.
    let _telemetry = match std::env::var_os("RUST_LOG") {
        Some(_) => Some(graphcdc_core::telemetry::init("info", false)?),
        None => None,
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let mut figures = Vec::new();
    runtime.block_on(async {
        if args.relay_backlog > 0 {
            return relay::run(&args, &mut figures).await;
        }
        if args.reconcile_scale && args.audit_state {
            return audit_state::run(&args, &mut figures);
        }
        if args.reconcile_scale && args.state_only {
            return reconcile_scale::state_only(&args, &mut figures);
        }
        if args.reconcile_scale {
            return reconcile_scale::run(&args, &mut figures).await;
        }
        if args.embed_texts > 0 {
            return embedding::run(args.embed_texts, &mut figures).await;
        }
        if args.process_rss_rate > 0 {
            return process_rss::run(&args, &mut figures).await;
        }
        pipeline::run(&args, &mut figures).await?;
        if args.entities > 0 {
            reconcile::run(&args, &mut figures).await?;
        }
        anyhow::Ok(())
    })?;
    println!("\n| measure | value | note |\n|---|---|---|");
    for f in &figures {
        println!("| {} | {} | {} |", f.name, f.value, f.note);
    }
    Ok(())
}
