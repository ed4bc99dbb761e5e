//! `[processor]`: batching, limits, retry policy and commit interval.

use crate::settings::{invalid, ConfigError};
use serde::Deserialize;

/// Batching, limits and retry policy of the processor.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessorConfig {
    /// A batch is applied once it holds this many events…
    pub batch_max_events: usize,
    /// …or once its first event has waited this long.
    pub batch_max_wait_ms: u64,
    /// Mapped payloads larger than this (JSON bytes) go to the DLQ.
    pub max_payload_bytes: usize,
    /// First retry delay after a transient failure.
    pub retry_initial_ms: u64,
    /// Cap of the exponential backoff.
    pub retry_max_ms: u64,
    /// Consecutive failures after which the circuit opens (process reports not ready).
    pub breaker_threshold: u32,
    /// Failed attempts of a batch, with an error one event may cause (an internal sink
    /// error), after which the batch is split and the events that keep failing go to
    /// the DLQ. Sink-wide failures (unavailable, misconfigured) are never split.
    pub isolate_after_retries: u32,
    /// How often the sink is made durable (`VectorSink::sync`: the embedded sink flushes)
    /// and the offsets of what it holds are committed; 0 (default): after every batch.
    /// Writes are visible in the sink as soon as they are applied; a crash or rebalance
    /// redoes at most this much. Above 0 the embedded sink's freshness improves, but a
    /// commit that falls into a stall of the group coordinator holds the group's rejoin
    /// until it times out (`socket.timeout.ms`, 60 s): seen against tansu in
    /// `tests/chaos.rs`.
    pub commit_interval_ms: u64,
    /// Batches written at once (default 1). Only batches with disjoint record keys are in
    /// flight together, so each entity's events still reach the sink in order and
    /// offsets are still committed only up to the contiguous written prefix. Above 1 it
    /// hides a Qdrant server's round trip (Qdrant's guidance: several parallel upload
    /// streams); an embedded sink gains little.
    pub max_batches_in_flight: usize,
}

impl Default for ProcessorConfig {
    fn default() -> Self {
        ProcessorConfig {
            batch_max_events: 500,
            batch_max_wait_ms: 50,
            max_payload_bytes: 64 * 1024,
            retry_initial_ms: 100,
            retry_max_ms: 10_000,
            breaker_threshold: 5,
            isolate_after_retries: 5,
            commit_interval_ms: 0,
            max_batches_in_flight: 1,
        }
    }
}

impl ProcessorConfig {
    /// Checks that need no I/O.
    ///
    /// # Errors
    /// The first field found out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.batch_max_events == 0 {
            return Err(invalid("processor.batch_max_events", "must be at least 1"));
        }
        if self.retry_initial_ms == 0 || self.retry_max_ms < self.retry_initial_ms {
            return Err(invalid(
                "processor.retry_max_ms",
                "need 0 < retry_initial_ms <= retry_max_ms",
            ));
        }
        if self.max_batches_in_flight == 0 {
            return Err(invalid(
                "processor.max_batches_in_flight",
                "must be at least 1",
            ));
        }
        if self.breaker_threshold == 0 {
            return Err(invalid("processor.breaker_threshold", "must be at least 1"));
        }
        if self.isolate_after_retries == 0 {
            return Err(invalid(
                "processor.isolate_after_retries",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}
