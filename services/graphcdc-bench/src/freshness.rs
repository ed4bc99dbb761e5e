//! Freshness at fixed rates (produced → visible in the sink), and the processor's
//! resident memory at steady state during the fastest of those runs.
//!
//! Each rate gets its own topics and processor. Events are produced in 10 ms ticks with
//! their commit time set when they are built, so a producer falling behind shows as
//! staleness too; a tick does not wait for the broker to acknowledge the one before (up
//! to 1 s of ticks in flight); the rate actually reached is reported next to the asked
//! one.

use crate::usage::{median_max, trim_heap};
use crate::workload::{broker_name, chunk, Broker};
use crate::{proc_status_mib, Args, Figure};
use graphcdc_core::codec::{Codec, Format};
use graphcdc_core::config::Secret;
use graphcdc_core::event::ChangeEvent;
use graphcdc_core::kafka::ChangePublisher;
use graphcdc_core::processor::Processor;
use graphcdc_core::stats::{Health, Stats};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What one fixed-rate run measured.
struct RateRun {
    stats: Arc<Stats>,
    /// Events per second actually produced.
    reached: f64,
    /// VmRSS (MiB) just before the processor was created, after trimming the heap.
    rss_before: f64,
    /// VmRSS (MiB) every 100 ms over the second half of the run.
    rss_samples: Vec<f64>,
    /// Events still not applied [`CATCH_UP`] after the last was produced: the processor
    /// did not keep up with this rate.
    behind: Option<usize>,
}

/// Ticks whose events may await the broker's acknowledgement at once (1 s of ticks).
const MAX_TICKS_IN_FLIGHT: usize = 100;

/// How long the processor may take to apply the last events once production stops.
const CATCH_UP: Duration = Duration::from_secs(60);

/// One freshness figure per `--freshness-rates` entry, then the steady-state RSS of the
/// fastest run.
pub async fn run(
    broker: &Broker,
    args: &Args,
    store: &std::path::Path,
    figures: &mut Vec<Figure>,
) -> anyhow::Result<()> {
    let mut fastest: Option<(u64, RateRun)> = None;
    for &rate in &args.freshness_rates {
        let run = at_rate(broker, args, rate, &store.join(format!("fresh-{rate}"))).await?;
        let q = |x| (run.stats.freshness.quantile(x).unwrap_or(0.0) * 1000.0).round();
        println!(
            "freshness at {rate}/s (reached {:.0}/s): p50 {} ms, p99 {} ms",
            run.reached,
            q(0.5),
            q(0.99)
        );
        let kept_up = match run.behind {
            None => String::new(),
            Some(n) => format!(
                "; **did not keep up**: {n} events not applied {} s after the last was produced (quantiles of the applied ones)",
                CATCH_UP.as_secs()
            ),
        };
        figures.push(Figure {
            name: format!("4. freshness at {rate} events/s (visible in sink − produced)"),
            value: format!("p50 {} ms, p99 {} ms, max {} ms{kept_up}", q(0.5), q(0.99), q(1.0)),
            note: format!(
                "{:.0} events/s reached for {} s, batch wait 5 ms, linger 1 ms, fetch wait 10 ms, commit interval {} ms, {} batch(es) in flight; {} sink, {}",
                run.reached,
                args.freshness_seconds,
                args.commit_interval_ms,
                args.batches_in_flight,
                crate::workload::sink_name(),
                broker_name(args)
            ),
        });
        if fastest.as_ref().is_none_or(|(r, _)| rate > *r) {
            fastest = Some((rate, run));
        }
    }
    if let Some((rate, run)) = fastest {
        let deltas: Vec<f64> = run.rss_samples.iter().map(|s| s - run.rss_before).collect();
        let (median, max) = median_max(&deltas);
        let (whole, _) = median_max(&run.rss_samples);
        let broker_note = if args.bootstrap.is_some() {
            "the broker is another process".to_owned()
        } else {
            "includes the in-process mock broker's growing log: use --bootstrap for the processor alone".to_owned()
        };
        figures.push(Figure {
            name: format!("7. processor RSS at steady state, {rate} events/s, 384-d"),
            value: format!("+{median:.0} MiB (max +{max:.0} MiB)"),
            note: format!(
                "VmRSS every 100 ms over the run's second half minus VmRSS before the processor started (after malloc_trim; producer and sink included); whole bench process {whole:.0} MiB; {broker_note}; MALLOC_ARENA_MAX={}",
                std::env::var("MALLOC_ARENA_MAX").unwrap_or_else(|_| "unset".into())
            ),
        });
    }
    Ok(())
}

/// Publishes `per_tick` chunk events a tick, stamped with the time they are sent, without
/// awaiting each tick's acknowledgement (a broker slower to acknowledge than a tick would
/// otherwise hold the offered rate down); at most [`MAX_TICKS_IN_FLIGHT`] ticks pending.
pub struct Ticker {
    publisher: Arc<ChangePublisher>,
    per_tick: usize,
    sent: usize,
    in_flight: VecDeque<JoinHandle<anyhow::Result<()>>>,
}

impl Ticker {
    pub fn new(publisher: Arc<ChangePublisher>, per_tick: usize) -> Self {
        Ticker {
            publisher,
            per_tick,
            sent: 0,
            in_flight: VecDeque::new(),
        }
    }

    /// Send one tick's events.
    pub async fn tick(&mut self) -> anyhow::Result<()> {
        let batch: Vec<ChangeEvent> = (self.sent..self.sent + self.per_tick)
            .map(|i| chunk(i, graphcdc_core::unix_ms()))
            .collect();
        self.sent += self.per_tick;
        let publisher = self.publisher.clone();
        self.in_flight.push_back(tokio::spawn(async move {
            publisher.publish_changes(&batch).await?;
            Ok(())
        }));
        while self.in_flight.len() > MAX_TICKS_IN_FLIGHT {
            self.in_flight.pop_front().expect("not empty").await??;
        }
        Ok(())
    }

    /// Wait for every pending tick; the number of events sent.
    pub async fn finish(self) -> anyhow::Result<usize> {
        for publish in self.in_flight {
            publish.await??;
        }
        Ok(self.sent)
    }
}

async fn at_rate(
    broker: &Broker,
    args: &Args,
    rate: u64,
    store: &std::path::Path,
) -> anyhow::Result<RateRun> {
    let mut config = broker.config(&format!("fresh{rate}"), store).await?;
    config.processor.batch_max_wait_ms = 5;
    config.processor.commit_interval_ms = args.commit_interval_ms;
    config.processor.max_batches_in_flight = args.batches_in_flight;
    for (key, value) in [("linger.ms", "1"), ("fetch.wait.max.ms", "10")] {
        config
            .kafka
            .properties
            .insert(key.into(), Secret::new(value));
    }
    let publisher = Arc::new(ChangePublisher::new(
        &config.kafka,
        Arc::new(Codec::local()),
        Format::Avro,
    )?);
    let sink = crate::workload::open_sink(&config)?;
    trim_heap();
    let rss_before = proc_status_mib("VmRSS:");
    let stats = Arc::new(Stats::default());
    let health = Arc::new(Health::default());
    let processor = Processor::new(config.clone(), sink, stats.clone(), health.clone()).await?;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(processor.run(shutdown.clone()));
    while health.assigned_partitions() == 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let per_tick = (rate / 100).max(1) as usize;
    let ticks = args.freshness_seconds * 100;
    let mut interval = tokio::time::interval(Duration::from_millis(10));
    let mut ticker = Ticker::new(publisher, per_tick);
    let mut rss_samples = Vec::new();
    let started = Instant::now();
    for tick in 0..ticks {
        interval.tick().await;
        ticker.tick().await?;
        if tick >= ticks / 2 && tick % 10 == 0 {
            rss_samples.push(proc_status_mib("VmRSS:"));
        }
    }
    let sent = ticker.finish().await?;
    let reached = crate::per_s(sent, started.elapsed());
    let caught_up = crate::workload::wait_caught_up(&config, &stats, sent as u64, CATCH_UP)
        .await?
        .is_some();
    shutdown.cancel();
    task.await??;
    Ok(RateRun {
        behind: (!caught_up).then(|| sent.saturating_sub(Stats::get(&stats.consumed) as usize)),
        stats,
        reached,
        rss_before,
        rss_samples,
    })
}
