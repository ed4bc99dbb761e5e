//! What retrying and splitting can do about what the server returns.

use crate::sink::error::SinkError;
use qdrant_client::qdrant::{PointsOperationResponse, UpdateStatus};
use qdrant_client::QdrantError;

/// What retrying and splitting can do about a failure.
/// - Sink-wide, retried, never sent to the DLQ: unreachable, timeouts, rate limits, a
///   wrong API key, missing permissions, a deleted collection (`Unavailable`), and a
///   write-locked collection, a failed precondition or a strict-mode capacity limit
///   (`Misconfigured`).
/// - `Internal`/`Unknown`: retried, then narrowed down by splitting (one event may cause
///   them).
/// - Anything else is about the request: split, and what still fails goes to the DLQ.
pub(super) fn classify(e: QdrantError) -> SinkError {
    use tonic::Code;
    let message = e.to_string();
    match &e {
        QdrantError::ResourceExhaustedError { .. } | QdrantError::Io(_) => {
            SinkError::Unavailable(message)
        }
        QdrantError::ResponseError { status } => match status.code() {
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Unauthenticated
            | Code::PermissionDenied
            | Code::NotFound => SinkError::Unavailable(message),
            Code::FailedPrecondition => SinkError::Misconfigured(message),
            Code::InvalidArgument if is_capacity_limit(status.message()) => {
                SinkError::Misconfigured(message)
            }
            Code::Unknown | Code::Internal => SinkError::Internal(message),
            _ => SinkError::Rejected(message),
        },
        _ => SinkError::Rejected(message),
    }
}

/// Whether a refusal is a strict-mode limit of the whole collection (points count,
/// vector or payload storage size), which no event of its own can pass. Qdrant words
/// them "Max points count limit of 1000 reached!", "Max vectors storage size limit of …
/// reached!", "Max payload storage size limit of … reached!".
pub(super) fn is_capacity_limit(message: &str) -> bool {
    let message = message.to_ascii_lowercase();
    message.contains("reached")
        && ["points count limit", "storage size limit"]
            .iter()
            .any(|limit| message.contains(limit))
}

pub(super) fn check_completed(response: PointsOperationResponse) -> Result<(), SinkError> {
    match response.result.map(|r| r.status()) {
        Some(UpdateStatus::Completed) => Ok(()),
        other => Err(SinkError::Unavailable(format!(
            "write not confirmed by the server (status {other:?})"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: tonic::Code) -> QdrantError {
        QdrantError::ResponseError {
            status: tonic::Status::new(code, "test"),
        }
    }

    #[test]
    fn sink_wide_failures_are_retried_and_bad_points_rejected() {
        use tonic::Code;
        for code in [
            Code::Unavailable,
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::NotFound,
        ] {
            assert!(classify(status(code)).is_retriable(), "{code:?}");
        }
        for code in [Code::InvalidArgument, Code::OutOfRange] {
            assert!(!classify(status(code)).is_retriable(), "{code:?}");
        }
        assert!(matches!(
            classify(status(Code::FailedPrecondition)),
            SinkError::Misconfigured(_)
        ));
        for code in [Code::Internal, Code::Unknown] {
            assert!(
                matches!(classify(status(code)), SinkError::Internal(_)),
                "{code:?}"
            );
        }
        for message in [
            "Bad request: Max points count limit of 1000 reached!",
            "Bad request: Max vectors storage size limit of 1048576 bytes reached!",
            "Max payload storage size limit of 1024 reached!",
        ] {
            let limit = QdrantError::ResponseError {
                status: tonic::Status::invalid_argument(message),
            };
            assert!(
                matches!(classify(limit), SinkError::Misconfigured(_)),
                "{message}"
            );
        }
        let point_limit = QdrantError::ResponseError {
            status: tonic::Status::invalid_argument("Payload too large for one point"),
        };
        assert!(matches!(classify(point_limit), SinkError::Rejected(_)));
    }
}
