//! Progress of a long run: an indicatif bar on a terminal, and, off a terminal (CI logs,
//! pipes, JSON logs), a signal every few seconds for the caller to log its own line.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// A bar over `total` steps when stderr is a terminal; otherwise a log clock.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    last_log: Instant,
    log_every: Duration,
}

impl Progress {
    /// `template` is an indicatif template (`{bar}`, `{pos}`, `{len}`, `{msg}`, …).
    pub fn new(total: u64, template: &str, log_every: Duration) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(template)
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        Progress {
            bar,
            last_log: Instant::now(),
            log_every,
        }
    }

    /// Move to `position` with `message`; `true` when there is no bar and a log line is
    /// due.
    pub fn update(&mut self, position: u64, message: impl FnOnce() -> String) -> bool {
        if let Some(bar) = &self.bar {
            bar.set_position(position);
            bar.set_message(message());
            return false;
        }
        if self.last_log.elapsed() < self.log_every {
            return false;
        }
        self.last_log = Instant::now();
        true
    }

    /// Whether a bar is drawn (stderr is a terminal).
    pub fn has_bar(&self) -> bool {
        self.bar.is_some()
    }

    /// Clear the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
