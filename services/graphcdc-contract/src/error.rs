//! Why an event can never be applied ([`PoisonError`]): it goes to the DLQ, with its
//! [`PoisonKind`] in the Kafka Connect error headers, and the stream moves on. Failures
//! of the sink are `graphcdc_core::sink::SinkError`.

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
