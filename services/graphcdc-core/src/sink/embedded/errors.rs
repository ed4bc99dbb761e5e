//! What the embedded engine's errors mean to the processor.

use crate::sink::error::SinkError;
use qdrant_edge::OperationError;

pub(super) fn rejected(e: impl std::fmt::Display) -> SinkError {
    SinkError::Rejected(e.to_string())
}

/// Memory and timeouts are sink-wide and retried; internal errors are retried and may be
/// narrowed down to one event; bad input is rejected.
pub(super) fn classify(e: OperationError) -> SinkError {
    match e {
        OperationError::OutOfMemory { .. }
        | OperationError::Cancelled { .. }
        | OperationError::Timeout { .. } => SinkError::Unavailable(e.to_string()),
        OperationError::ServiceError { .. } | OperationError::InconsistentStorage { .. } => {
            SinkError::Internal(e.to_string())
        }
        other => SinkError::Rejected(other.to_string()),
    }
}
