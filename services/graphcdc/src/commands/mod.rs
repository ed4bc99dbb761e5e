//! The looking-back subcommands (`history`, `replay`, `offsets`): turn parsed
//! options into calls of `graphcdc_core::inspect` and print the results.

pub(crate) mod offsets;
pub(crate) mod timetravel;

use std::time::{Duration, UNIX_EPOCH};

/// A Unix-ms timestamp as RFC 3339 (UTC, milliseconds); `-` when unknown.
pub(crate) fn rfc3339(ms: Option<i64>) -> String {
    match ms.and_then(|ms| u64::try_from(ms).ok()) {
        Some(ms) => {
            humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        }
        None => "-".to_owned(),
    }
}
