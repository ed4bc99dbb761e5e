//! The library's errors, typed by whose move it is: a [`Config`](Error::Config) error
//! names the field to fix, an external one (Kafka, the sink, Neo4j, a file, another
//! service) may pass by itself, an internal one is a bug. [`Error::kind`] says which; the
//! binary's exit code follows it.
//!
//! Why an *event* fails ([`PoisonError`]) is the contract's, and what a sink failure
//! means to the processor is [`SinkError`]'s: both travel inside [`Error`] when they stop
//! a call.
//!
//! [`Context`] adds what was being done to an error, as `anyhow` does, while keeping its
//! kind.

use crate::settings::ConfigError;
use crate::sink::error::SinkError;
use std::fmt::Display;

pub use graphcdc_contract::error::{PoisonError, PoisonKind};

/// The result of a library call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Whose move it is when an error stops a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The configuration or the input is wrong: fix it and start again.
    Config,
    /// Something outside the process failed or refused: it may pass.
    External,
    /// A bug, or an invariant the code relies on broke.
    Internal,
}

/// A failed library call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is wrong; the error names the field.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Bad input given to a command: an option, a file, a key.
    #[error("{0}")]
    Invalid(String),
    /// Kafka failed or refused.
    #[error(transparent)]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The sink failed or refused.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// Neo4j (Bolt) failed or refused.
    #[error(transparent)]
    Neo4j(#[from] neo4rs::Error),
    /// A file or a socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A service's own typed error (a DLQ that refuses records, a lost relay lease, a
    /// reconciler guard's refusal), with its kind; [`Error::downcast_ref`] finds it.
    #[error("{error}")]
    Service {
        kind: ErrorKind,
        error: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Another service or library failed: the schema registry, an embedding endpoint,
    /// a model download, the expected-state file.
    #[error("{0}")]
    External(String),
    /// A bug, or an invariant the code relies on broke.
    #[error("{0}")]
    Internal(String),
    /// `inner`, with what was being done when it failed. Shown as `context: inner`, as
    /// anyhow shows a chain, so that a log line of the error says it all.
    #[error("{context}: {inner}")]
    Context { context: String, inner: Box<Error> },
}

impl Error {
    /// Whose move it is: the kind of the innermost error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config(_) | Error::Invalid(_) => ErrorKind::Config,
            Error::Kafka(_)
            | Error::Sink(_)
            | Error::Neo4j(_)
            | Error::Io(_)
            | Error::External(_) => ErrorKind::External,
            Error::Service { kind, .. } => *kind,
            Error::Internal(_) => ErrorKind::Internal,
            Error::Context { inner, .. } => inner.kind(),
        }
    }

    /// The error under every layer of context.
    pub fn root(&self) -> &Error {
        match self {
            Error::Context { inner, .. } => inner.root(),
            other => other,
        }
    }

    /// A service's typed error `source`, of `kind`.
    pub fn service(
        kind: ErrorKind,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Service {
            kind,
            error: Box::new(source),
        }
    }

    /// The service error of type `T` under every layer of context, if that is what
    /// this is.
    pub fn downcast_ref<T: std::error::Error + 'static>(&self) -> Option<&T> {
        match self.root() {
            Error::Service { error, .. } => error.downcast_ref::<T>(),
            _ => None,
        }
    }

    /// This error with what was being done when it happened.
    #[must_use]
    pub fn context(self, context: impl Display) -> Self {
        Error::Context {
            context: context.to_string(),
            inner: Box::new(self),
        }
    }

    /// Bad input given to a command.
    pub fn invalid(message: impl Display) -> Self {
        Error::Invalid(message.to_string())
    }

    /// Another service or library failed.
    pub fn external(message: impl Display) -> Self {
        Error::External(message.to_string())
    }

    /// A bug, or a broken invariant.
    pub fn internal(message: impl Display) -> Self {
        Error::Internal(message.to_string())
    }
}

/// Errors of other libraries, by the kind they are.
macro_rules! from_foreign {
    ($kind:ident: $($ty:ty),+ $(,)?) => {
        $(impl From<$ty> for Error {
            fn from(e: $ty) -> Self {
                Error::$kind(e.to_string())
            }
        })+
    };
}

from_foreign!(External:
    reqwest::Error,
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    tokio::task::JoinError,
    neo4rs::DeError,
);
from_foreign!(Internal:
    serde_json::Error,
    std::num::ParseIntError,
    std::time::SystemTimeError,
    std::str::Utf8Error,
    std::array::TryFromSliceError,
    opentelemetry_otlp::ExporterBuildError,
    tracing_subscriber::util::TryInitError,
);
#[cfg(feature = "local-embeddings")]
from_foreign!(External: candle_core::Error, zip::result::ZipError);

impl From<graphcdc_contract::codec::EncodeError> for Error {
    fn from(e: graphcdc_contract::codec::EncodeError) -> Self {
        match e {
            graphcdc_contract::codec::EncodeError::Registry(_) => Error::External(e.to_string()),
            other => Error::Internal(other.to_string()),
        }
    }
}

impl From<graphcdc_contract::codec::DecodeError> for Error {
    fn from(e: graphcdc_contract::codec::DecodeError) -> Self {
        Error::External(e.to_string())
    }
}

impl From<PoisonError> for Error {
    fn from(e: PoisonError) -> Self {
        Error::Invalid(e.to_string())
    }
}

/// Add what was being done to an error (or to a missing value), keeping its kind.
pub trait Context<T> {
    /// `context` around the error.
    ///
    /// # Errors
    /// The error, with `context`.
    fn context<C: Display>(self, context: C) -> Result<T>;

    /// The context made by `f`, only when there is an error.
    ///
    /// # Errors
    /// The error, with the context.
    fn with_context<C: Display, F: FnOnce() -> C>(self, f: F) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context<C: Display>(self, context: C) -> Result<T> {
        self.map_err(|e| e.into().context(context))
    }

    fn with_context<C: Display, F: FnOnce() -> C>(self, f: F) -> Result<T> {
        self.map_err(|e| e.into().context(f()))
    }
}

/// A missing value is an internal error: the code expected it.
impl<T> Context<T> for Option<T> {
    fn context<C: Display>(self, context: C) -> Result<T> {
        self.ok_or_else(|| Error::Internal(context.to_string()))
    }

    fn with_context<C: Display, F: FnOnce() -> C>(self, f: F) -> Result<T> {
        self.ok_or_else(|| Error::Internal(f().to_string()))
    }
}

/// Return an internal error made by `format!` (`bail!(Invalid, …)`, `bail!(External, …)`
/// for the other kinds).
macro_rules! bail {
    ($kind:ident, $fmt:literal $($arg:tt)*) => {
        return Err($crate::error::Error::$kind(format!($fmt $($arg)*)))
    };
    ($fmt:literal $($arg:tt)*) => {
        return Err($crate::error::Error::Internal(format!($fmt $($arg)*)))
    };
}

/// `bail!` unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($rest:tt)+) => {
        if !$cond {
            $crate::error::bail!($($rest)+);
        }
    };
}

/// An internal error made by `format!` (`err!(External, …)` for another kind).
macro_rules! err {
    ($kind:ident, $fmt:literal $($arg:tt)*) => {
        $crate::error::Error::$kind(format!($fmt $($arg)*))
    };
    ($fmt:literal $($arg:tt)*) => {
        $crate::error::Error::Internal(format!($fmt $($arg)*))
    };
}

pub(crate) use {bail, ensure, err};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_keeps_the_kind_and_the_chain() {
        let io: Result<()> = Err(std::io::Error::other("disk full")).context("writing the index");
        let e = io.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::External);
        assert_eq!(e.to_string(), "writing the index: disk full");
        let chain = format!("{:#}", anyhow::Error::new(e));
        assert_eq!(chain, "writing the index: disk full", "said once");
        let missing: Result<u8> = None.context("no partition 3");
        assert_eq!(missing.unwrap_err().kind(), ErrorKind::Internal);
        let config = crate::config::Config::from_toml("").unwrap_err();
        assert_eq!(Error::from(config).kind(), ErrorKind::Config);
    }

    #[test]
    fn bail_takes_a_kind() {
        fn refuse(input: &str) -> Result<()> {
            bail!(Invalid, "{input:?} is not PARTITION:OFFSET");
        }
        fn broken() -> Result<()> {
            ensure!(1 + 1 == 3, "arithmetic");
            Ok(())
        }
        assert_eq!(refuse("x").unwrap_err().kind(), ErrorKind::Config);
        assert_eq!(broken().unwrap_err().kind(), ErrorKind::Internal);
    }
}
