//! The processor in its own process (`graphcdc process`, the binary next to this one)
//! at a fixed rate against a real broker: its resident memory at steady state and its
//! CPU per 1,000 events, with nothing else (producer, bench) in the figures.
//!
//! The bench produces the events; the child consumes them into an embedded store of
//! its own (Qdrant's engine is in the child: the server sink would leave it out).

use crate::freshness::Ticker;
use crate::usage::median_max;
use crate::workload::{broker_name, Broker};
use crate::{Args, Figure};
use anyhow::Context;
use graphcdc_core::codec::{Codec, Format};
use graphcdc_core::kafka::ChangePublisher;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A `/proc/PID/status` memory field in MiB.
fn status_mib(pid: u32, name: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// User + system CPU seconds of process `pid`.
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<u64>().ok()))
        .sum::<u64>() as f64
        / 100.0
}

/// `name=value` pairs as TOML lines of `[kafka.properties]`.
fn properties(pairs: &[String]) -> anyhow::Result<String> {
    pairs
        .iter()
        .map(|pair| {
            let (name, value) = pair
                .split_once('=')
                .with_context(|| format!("--process-rss-property {pair:?}: name=value"))?;
            Ok(format!("{name:?} = {value:?}\n"))
        })
        .collect()
}

/// `graphcdc process` at `--process-rss-rate` events/s for `--freshness-seconds`.
pub async fn run(args: &Args, figures: &mut Vec<Figure>) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.bootstrap.is_some(),
        "--process-rss needs a real broker (--bootstrap): the mock broker lives in this process"
    );
    let rate = args.process_rss_rate;
    let dir = tempfile::tempdir()?;
    let broker = Broker::new(args)?;
    let config = broker.config("procrss", &dir.path().join("store")).await?;
    let k = &config.kafka;
    let toml = format!(
        r#"
        [kafka]
        bootstrap_servers = "{bootstrap}"
        group_id = "{group}"
        changes_topic = "{changes}"
        state_topic = "{state}"
        dlq_topic = "{dlq}"

        [kafka.properties]
        {properties}

        [processor]
        batch_max_events = 1000
        batch_max_wait_ms = 5
        commit_interval_ms = {interval}

        [sink]
        kind = "{sink}"
        path = "{store}"

        [[mappings]]
        label = "Chunk"
        collection = "chunks"
        dimension = 384
        exclude = ["uuid"]
        "#,
        bootstrap = k.bootstrap_servers,
        group = k.group_id,
        changes = k.changes_topic,
        state = k.state_topic,
        dlq = k.dlq_topic,
        interval = args.commit_interval_ms,
        sink = args.process_rss_sink,
        properties = properties(&args.process_rss_property)?,
        store = dir.path().join("store").display(),
    );
    let config_file = dir.path().join("graphcdc.toml");
    std::fs::write(&config_file, toml)?;
    let binary = std::env::current_exe()?
        .parent()
        .context("the bench's directory")?
        .join("graphcdc");
    let mut child = Command::new(&binary)
        .args(["process", "--config"])
        .arg(&config_file)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (cargo build --release -p graphcdc)",
                binary.display()
            )
        })?;
    let pid = child.id();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_idle = status_mib(pid, "VmRSS:");
    let publisher = Arc::new(ChangePublisher::new(
        &config.kafka,
        Arc::new(Codec::local()),
        Format::Avro,
    )?);
    let per_tick = (rate / 100).max(1) as usize;
    let ticks = args.freshness_seconds * 100;
    let mut interval = tokio::time::interval(Duration::from_millis(10));
    let mut ticker = Ticker::new(publisher, per_tick);
    let mut samples = Vec::new();
    let (cpu_start, started) = (cpu_s(pid), Instant::now());
    for tick in 0..ticks {
        interval.tick().await;
        ticker.tick().await?;
        if tick >= ticks / 2 && tick % 10 == 0 {
            samples.push(status_mib(pid, "VmRSS:"));
        }
    }
    let sent = ticker.finish().await?;
    let reached = crate::per_s(sent, started.elapsed());
    let lag = loop {
        let lag = tokio::task::block_in_place(|| {
            graphcdc_core::kafka::group_lag(k, &k.group_id, &k.changes_topic)
        })?;
        if lag == 0 || started.elapsed() > Duration::from_secs(args.freshness_seconds + 60) {
            break lag;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let cpu = cpu_s(pid) - cpu_start;
    let peak = status_mib(pid, "VmHWM:");
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let _ = child.wait();
    let (median, max) = median_max(&samples);
    println!("processor process: RSS median {median:.0} MiB, max {max:.0} MiB at {reached:.0}/s");
    figures.push(Figure {
        name: format!(
            "7b. processor RSS in its own process, {rate} events/s, 384-d, sink {}",
            args.process_rss_sink
        ),
        value: format!("{median:.0} MiB (max {max:.0} MiB, peak {peak:.0} MiB)"),
        note: format!(
            "`graphcdc process`, sink {}{}, VmRSS every 100 ms over the run's second half; {rss_idle:.0} MiB idle before the first event; {reached:.0} events/s reached for {} s; lag at the end {lag}; commit interval {} ms; {}",
            match args.process_rss_sink.as_str() {
                "embedded" => "embedded Qdrant (in the same process, holding every point)",
                _ => "JSON Lines files (the processor's own footprint)",
            },
            match args.process_rss_property.is_empty() {
                true => String::new(),
                false => format!(", consumer {}", args.process_rss_property.join(", ")),
            },
            args.freshness_seconds,
            args.commit_interval_ms,
            broker_name(args)
        ),
    });
    figures.push(Figure {
        name: format!(
            "5b. CPU per 1,000 events, processor process alone, sink {}",
            args.process_rss_sink
        ),
        value: format!("{:.0} ms", cpu * 1e6 / sent.max(1) as f64),
        note: format!("{cpu:.1} s CPU for {sent} events, first event to caught up"),
    });
    Ok(())
}
