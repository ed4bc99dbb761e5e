//! One attempt at a batch: write it to the sink, then send its poison records to the
//! DLQ; both acknowledged, or an error that says whether to retry or stop.

use super::batch::{BatchApplier, BatchOutcome, PreparedBatch};
use crate::dlq::{DeadLetterQueue, DlqError};
use crate::kafka::Record;
use crate::sink::SinkError;
use crate::stats::Stats;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tracing::Instrument;

/// Why an attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    /// The sink (or the schema registry) failed: see [`SinkError`] for what to do.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The DLQ did not take a poison record.
    #[error(transparent)]
    Dlq(#[from] DlqError),
}

impl From<AttemptError> for crate::error::Error {
    fn from(e: AttemptError) -> Self {
        match e {
            AttemptError::Sink(e) => e.into(),
            AttemptError::Dlq(e) => e.into(),
        }
    }
}

impl AttemptError {
    /// Whether retrying cannot help and the process must stop.
    pub fn is_fatal(&self) -> bool {
        matches!(self, AttemptError::Dlq(DlqError::Fatal { .. }))
    }

    /// Whether splitting the batch may isolate an event that causes it.
    pub fn may_be_event_specific(&self) -> bool {
        matches!(
            self,
            AttemptError::Sink(SinkError::Internal(_) | SinkError::Rejected(_))
        )
    }
}

/// A batch being written by its own task: its records and the result.
pub(crate) type BatchResult = (Vec<Record>, Result<BatchOutcome, AttemptError>);
pub(crate) type InFlight = JoinHandle<BatchResult>;
/// A finished batch task: its result, or how it failed (panic).
pub(crate) type JoinResult = Result<BatchResult, tokio::task::JoinError>;

/// Apply one batch inside its `process_batch` span (continuing the events' traces).
pub(crate) async fn run_batch(
    applier: Arc<BatchApplier>,
    dlq: Arc<DeadLetterQueue>,
    stats: Arc<Stats>,
    records: Vec<Record>,
    prepared: Option<PreparedBatch>,
) -> BatchResult {
    let traceparents = prepared
        .as_ref()
        .map(|p| p.traceparents.clone())
        .unwrap_or_default();
    let span =
        crate::telemetry::batch_span(records.iter().map(|r| r.headers.as_slice()), &traceparents);
    let result = apply_once(&applier, &dlq, &stats, &records, prepared, false)
        .instrument(span)
        .await;
    (records, result)
}

/// Apply to the sink (preparing the batch unless `prepared`), then send poison records
/// to the DLQ; both acknowledged or error. With `isolate`, internal sink errors are
/// narrowed down by splitting, and what keeps failing goes to the DLQ.
pub(crate) async fn apply_once(
    applier: &BatchApplier,
    dlq: &DeadLetterQueue,
    stats: &Stats,
    batch: &[Record],
    prepared: Option<PreparedBatch>,
    isolate: bool,
) -> Result<BatchOutcome, AttemptError> {
    let prepared = match prepared {
        Some(prepared) if prepared.is_for(batch) => prepared,
        _ => applier.prepare(batch).await?,
    };
    let started = std::time::Instant::now();
    let mut outcome = applier.write(prepared, isolate).await.inspect_err(|e| {
        if e.is_retriable() {
            stats.sink_unavailable.add(1);
        }
    })?;
    if !outcome.poisoned.is_empty() {
        for (index, error) in &outcome.poisoned {
            let r = &batch[*index];
            tracing::warn!(topic = %r.topic, partition = r.partition, offset = r.offset, %error, "poison event sent to the DLQ");
        }
        let poisoned: Vec<_> = outcome
            .poisoned
            .iter()
            .map(|(index, error)| (&batch[*index], error.clone()))
            .collect();
        dlq.send_all(&poisoned).await?;
    }
    outcome.apply_ms = started.elapsed().as_millis() as u64;
    Ok(outcome)
}
