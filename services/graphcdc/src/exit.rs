//! The process exit code follows what kind of error stopped it, so that a supervisor can
//! tell a configuration to fix from a dependency to wait for from a bug to report
//! (`sysexits.h` codes):
//!
//! - 78 (`EX_CONFIG`): the configuration or the input is wrong (a [`ConfigError`] names
//!   the field), or a topic is set up so that running would be unsafe;
//! - 69 (`EX_UNAVAILABLE`): something outside the process failed or refused: Kafka, the
//!   sink, Neo4j, a file or the network;
//! - 70 (`EX_SOFTWARE`): an internal error.
//!
//! The library says which ([`graphcdc_core::Error::kind`]); errors of the binary's own
//! making are classified by their type.
//!
//! Besides these, 0 is success, 1 a demo whose check failed, 2 bad arguments (clap), and
//! 3 and 4 are the drift results of `reconcile --once` and `audit`.

use graphcdc_core::config::ConfigError;
use graphcdc_core::ErrorKind;
use std::process::ExitCode;

/// The kind of `error`: the first cause in its chain that says.
pub(crate) fn kind_of(error: &anyhow::Error) -> ErrorKind {
    for cause in error.chain() {
        if let Some(e) = cause.downcast_ref::<graphcdc_core::Error>() {
            return e.kind();
        }
        if cause.is::<ConfigError>() {
            return ErrorKind::Config;
        }
        if cause.is::<std::io::Error>() || cause.is::<serde_json::Error>() {
            return ErrorKind::External;
        }
    }
    ErrorKind::Internal
}

/// The process exit code of an error of `kind`.
pub(crate) fn exit_code(kind: ErrorKind) -> ExitCode {
    ExitCode::from(match kind {
        ErrorKind::Config => 78,
        ErrorKind::External => 69,
        ErrorKind::Internal => 70,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_cause_that_says_decides() {
        let config = graphcdc_core::config::Config::from_toml("").unwrap_err();
        let wrapped = anyhow::Error::new(config).context("loading the config");
        assert_eq!(kind_of(&wrapped), ErrorKind::Config);
        let sink =
            graphcdc_core::Error::from(graphcdc_core::sink::SinkError::Unavailable("down".into()))
                .context("writing");
        assert_eq!(kind_of(&anyhow::Error::new(sink)), ErrorKind::External);
        let io = anyhow::Error::new(std::io::Error::other("disk")).context("reading");
        assert_eq!(kind_of(&io), ErrorKind::External);
        assert_eq!(
            kind_of(&anyhow::anyhow!("an invariant broke")),
            ErrorKind::Internal
        );
    }
}
