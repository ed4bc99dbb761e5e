//! Replay progress: a bar with events/s and ETA on a terminal, log lines otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Off a terminal, a progress line this often.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Replay progress over `total` offsets: an indicatif bar with events/s and ETA when
/// stderr is a terminal, otherwise a log line every [`LOG_EVERY`].
pub(super) struct Progress {
    total: u64,
    started: Instant,
    last_log: Instant,
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    pub(super) fn new(total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "replay {wide_bar} {human_pos}/{human_len} events, {per_sec}, ETA {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        let now = Instant::now();
        Progress {
            total,
            started: now,
            last_log: now,
            bar,
        }
    }

    pub(super) fn update(&mut self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            return;
        }
        if self.last_log.elapsed() < LOG_EVERY {
            return;
        }
        self.last_log = Instant::now();
        let (per_s, eta) = rate_and_eta(done, self.total, self.started.elapsed());
        tracing::info!(
            events = done,
            total = self.total,
            events_per_s = per_s.round() as u64,
            eta = %eta.map_or_else(|| "unknown".to_owned(), |d| format!("{}s", d.as_secs())),
            "replay progress"
        );
    }

    pub(super) fn finish(&self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        let (per_s, _) = rate_and_eta(done, self.total, self.started.elapsed());
        tracing::info!(
            events = done,
            events_per_s = per_s.round() as u64,
            elapsed_s = self.started.elapsed().as_secs(),
            "replay finished"
        );
    }
}

/// Events per second so far, and the time the rest takes at that rate (`None` before the
/// first event).
pub(super) fn rate_and_eta(done: u64, total: u64, elapsed: Duration) -> (f64, Option<Duration>) {
    let secs = elapsed.as_secs_f64();
    if done == 0 || secs <= 0.0 {
        return (0.0, None);
    }
    let per_s = done as f64 / secs;
    let left = total.saturating_sub(done) as f64 / per_s;
    (per_s, Some(Duration::from_secs_f64(left)))
}
