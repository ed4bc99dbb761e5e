//! The demo's progress while the processor works through the stream: records consumed,
//! applied, skipped and dead-lettered, live on stderr's terminal, otherwise a line on
//! stdout every second (CI logs, pipes) next to the summary that follows.

use graphcdc_core::progress::Progress;
use graphcdc_core::stats::Stats;
use std::time::Duration;

pub(super) struct DemoProgress {
    total: u64,
    progress: Progress,
}

impl DemoProgress {
    /// Progress over `total` streamed records.
    pub(super) fn new(total: u64) -> Self {
        DemoProgress {
            total,
            progress: Progress::new(
                total,
                "demo {bar:30} {pos}/{len} records consumed, {msg}",
                Duration::from_secs(1),
            ),
        }
    }

    pub(super) fn update(&mut self, stats: &Stats) {
        let message = || {
            format!(
                "applied {}, skipped {}, DLQ {}",
                Stats::get(&stats.applied),
                Stats::get(&stats.skipped_stale),
                Stats::get(&stats.dlq)
            )
        };
        if self.progress.update(Stats::get(&stats.consumed), message) {
            self.log(stats);
        }
    }

    fn log(&self, stats: &Stats) {
        println!(
            "demo: progress consumed={}/{} applied={} skipped_stale={} dlq={}",
            Stats::get(&stats.consumed),
            self.total,
            Stats::get(&stats.applied),
            Stats::get(&stats.skipped_stale),
            Stats::get(&stats.dlq)
        );
    }

    pub(super) fn finish(&self, stats: &Stats) {
        self.progress.finish();
        if !self.progress.has_bar() {
            self.log(stats);
        }
    }
}
