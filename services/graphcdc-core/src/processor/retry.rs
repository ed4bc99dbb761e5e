//! Exponential backoff with jitter, and the circuit breaker that turns repeated
//! failures into "not ready".

use rand::Rng;
use std::time::Duration;

/// Exponential backoff: `initial · 2^n`, capped at `max`, with ±25 % jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff starting at `initial` and capped at `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            attempt: 0,
        }
    }

    /// Delay before the next retry.
    pub fn next_delay(&mut self) -> Duration {
        let base = self
            .initial
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let jitter = rand::rng().random_range(0.75..=1.25);
        base.mul_f64(jitter).min(self.max)
    }
}

/// Opens after `threshold` consecutive failures; closes on the next success.
#[derive(Debug)]
pub struct CircuitBreaker {
    threshold: u32,
    consecutive_failures: u32,
}

impl CircuitBreaker {
    /// A closed breaker that opens after `threshold` consecutive failures.
    pub fn new(threshold: u32) -> Self {
        CircuitBreaker {
            threshold,
            consecutive_failures: 0,
        }
    }

    /// Record a failure; returns whether the circuit is open now.
    pub fn failure(&mut self) -> bool {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.is_open()
    }

    /// Record a success; the circuit closes.
    pub fn success(&mut self) {
        self.consecutive_failures = 0;
    }

    /// Whether the circuit is open.
    pub fn is_open(&self) -> bool {
        self.consecutive_failures >= self.threshold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let first = b.next_delay();
        assert!((75..=125).contains(&first.as_millis()), "{first:?}");
        let second = b.next_delay();
        assert!((150..=250).contains(&second.as_millis()), "{second:?}");
        for _ in 0..10 {
            assert!(b.next_delay() <= Duration::from_millis(1000));
        }
    }

    #[test]
    fn breaker_opens_after_threshold_and_closes_on_success() {
        let mut c = CircuitBreaker::new(3);
        assert!(!c.failure());
        assert!(!c.failure());
        assert!(c.failure());
        c.success();
        assert!(!c.is_open());
    }
}
