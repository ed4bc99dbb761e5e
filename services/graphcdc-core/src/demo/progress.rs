//! The demo's progress line while the processor works through the stream: a live line
//! on a terminal, an info log line every second otherwise (CI logs, pipes, JSON logs).

use crate::stats::Stats;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Off a terminal, a log line this often.
const PRINT_EVERY: Duration = Duration::from_secs(1);

pub(super) struct Progress {
    total: u64,
    last_print: Instant,
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    /// Progress over `total` streamed records.
    pub(super) fn new(total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "demo {bar:30} {pos}/{len} records consumed, {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        Progress {
            total,
            last_print: Instant::now(),
            bar,
        }
    }

    fn message(stats: &Stats) -> String {
        format!(
            "applied {}, skipped {}, DLQ {}",
            Stats::get(&stats.applied),
            Stats::get(&stats.skipped_stale),
            Stats::get(&stats.dlq)
        )
    }

    pub(super) fn update(&mut self, stats: &Stats) {
        let consumed = Stats::get(&stats.consumed);
        if let Some(bar) = &self.bar {
            bar.set_position(consumed);
            bar.set_message(Self::message(stats));
        } else if self.last_print.elapsed() >= PRINT_EVERY {
            self.last_print = Instant::now();
            self.print(stats);
        }
    }

    fn print(&self, stats: &Stats) {
        tracing::info!(
            consumed = Stats::get(&stats.consumed),
            total = self.total,
            applied = Stats::get(&stats.applied),
            skipped_stale = Stats::get(&stats.skipped_stale),
            dlq = Stats::get(&stats.dlq),
            "demo progress"
        );
    }

    pub(super) fn finish(&self, stats: &Stats) {
        match &self.bar {
            Some(bar) => bar.finish_and_clear(),
            None => self.print(stats),
        }
    }
}
