//! A failed sink call, by what retrying and splitting can do about it: the processor's
//! retry, circuit breaker and DLQ decisions all start from [`SinkError`].

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
