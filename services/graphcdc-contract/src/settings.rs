//! What every config section is made of: a [`Secret`] that never prints, and a
//! [`ConfigError`] that names the offending field. The sections live next to the code
//! they configure; `graphcdc_core::config` puts them together.

use serde::Deserialize;
use std::fmt;

/// A value that never prints: `Debug` and `Display` show `***`.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// A secret holding `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value, for handing to a client library.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A config error that names the offending field.
#[derive(Debug, thiserror::Error)]
#[error("invalid config: {field}: {message}")]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        message: message.into(),
    }
}
