//! One error classification for the whole pipeline.
//!
//! - [`PoisonError`]: the event can never be applied; it goes to the DLQ and the stream
//!   moves on.
//! - [`SinkError`]: `Unavailable` and `Misconfigured` concern the whole sink: the
//!   partitions pause, the batch is retried with backoff, nothing is committed meanwhile
//!   and nothing goes to the DLQ. `Internal` is retried too, but after the retry budget
//!   the batch is split so that one event that keeps failing goes to the DLQ. `Rejected`
//!   splits the batch at once.
//! - Everything else (bad config, a collection that does not match its mapping at start,
//!   a DLQ that refuses records for good) is fatal and stops the process.

use std::fmt;

/// Why an event was sent to the DLQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoisonKind {
    /// Neither Confluent wire format nor JSON, or broken bytes.
    Undecodable,
    /// Wire format whose schema id the registry does not know, or that does not resolve
    /// against the reader schema.
    SchemaMismatch,
    /// Empty entity key.
    MissingKey,
    /// Version negative or above 2^53.
    InvalidVersion,
    /// Vector length differs from the collection's dimension, or vector missing.
    VectorDimension,
    /// NaN or infinite vector component.
    NonFiniteVector,
    /// Mapped payload larger than the configured limit.
    PayloadTooLarge,
    /// The sink refused this single event even after the batch was split.
    SinkRejected,
    /// No vector, and the mapping's embedding template gives no text.
    MissingText,
    /// The embedding model refused this event's text (a 4xx about the input).
    EmbeddingRejected,
}

impl PoisonKind {
    /// Short name of the kind: the `reason` label of the DLQ metric.
    pub fn reason(self) -> &'static str {
        self.class_name().trim_start_matches("graphcdc.")
    }

    /// Value of the `__connect.errors.exception.class.name` DLQ header.
    pub fn class_name(self) -> &'static str {
        match self {
            PoisonKind::Undecodable => "graphcdc.Undecodable",
            PoisonKind::SchemaMismatch => "graphcdc.SchemaMismatch",
            PoisonKind::MissingKey => "graphcdc.MissingKey",
            PoisonKind::InvalidVersion => "graphcdc.InvalidVersion",
            PoisonKind::VectorDimension => "graphcdc.VectorDimension",
            PoisonKind::NonFiniteVector => "graphcdc.NonFiniteVector",
            PoisonKind::PayloadTooLarge => "graphcdc.PayloadTooLarge",
            PoisonKind::SinkRejected => "graphcdc.SinkRejected",
            PoisonKind::MissingText => "graphcdc.MissingText",
            PoisonKind::EmbeddingRejected => "graphcdc.EmbeddingRejected",
        }
    }
}

/// An event that can never be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PoisonError {
    pub kind: PoisonKind,
    pub message: String,
}

impl PoisonError {
    /// A poison error of `kind` with a human-readable `message`.
    pub fn new(kind: PoisonKind, message: impl Into<String>) -> Self {
        PoisonError {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for PoisonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.class_name(), self.message)
    }
}

/// A failed sink call, by what retrying and splitting can do about it.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Unreachable, timed out, overloaded, unauthorised: the whole sink is affected.
    /// Retry with backoff; never split, never DLQ.
    #[error("sink unavailable: {0}")]
    Unavailable(String),
    /// The sink is configured differently from the mapping (vector name, dimension,
    /// distance), write-locked or at a capacity limit: every write would fail alike.
    /// Retry with backoff (the circuit opens); never DLQ.
    #[error("sink misconfigured: {0}")]
    Misconfigured(String),
    /// An internal error of the sink that may be caused by one event (Qdrant `Internal`
    /// or `Unknown`, an edge `ServiceError`): retried, and after the retry budget the
    /// batch is split so that only the event that keeps failing goes to the DLQ.
    #[error("sink internal error: {0}")]
    Internal(String),
    /// The sink refused the request itself: retrying the same request cannot help.
    #[error("sink rejected the request: {0}")]
    Rejected(String),
}

impl SinkError {
    /// Whether retrying the same call later may succeed.
    pub fn is_retriable(&self) -> bool {
        !matches!(self, SinkError::Rejected(_))
    }

    /// Whether the failure concerns the whole sink, so splitting the batch cannot
    /// isolate a culprit (and no event may go to the DLQ because of it).
    pub fn is_sink_wide(&self) -> bool {
        matches!(
            self,
            SinkError::Unavailable(_) | SinkError::Misconfigured(_)
        )
    }
}
