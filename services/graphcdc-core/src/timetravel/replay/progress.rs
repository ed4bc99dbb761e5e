//! Replay progress: a bar with events/s and ETA on a terminal, log lines otherwise.

use crate::progress::Progress as Bar;
use std::time::{Duration, Instant};

/// Off a terminal, a progress line this often.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Replay progress over `total` offsets: a bar with events/s and ETA when stderr is a
/// terminal, otherwise a log line every [`LOG_EVERY`].
pub(super) struct Progress {
    total: u64,
    started: Instant,
    bar: Bar,
}

impl Progress {
    pub(super) fn new(total: u64) -> Self {
        Progress {
            total,
            started: Instant::now(),
            bar: Bar::new(
                total,
                "replay {wide_bar} {human_pos}/{human_len} events, {per_sec}, ETA {eta}",
                LOG_EVERY,
            ),
        }
    }

    pub(super) fn update(&mut self, done: u64) {
        if !self.bar.update(done, String::new) {
            return;
        }
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
        self.bar.finish();
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
