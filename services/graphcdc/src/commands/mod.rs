//! The looking-back subcommands (`history`, `replay`, `offsets`, `dlq`) and `audit`: turn
//! parsed options into calls of `graphcdc_core::inspect` (or `::audit`) and print the
//! results.

pub(crate) mod audit;
pub(crate) mod dlq;
pub(crate) mod offsets;
pub(crate) mod search;
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

/// `text` cut to `max` characters, with `…` when cut; line breaks as spaces.
pub(crate) fn short(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() > max {
        format!(
            "{}…",
            flat.chars().take(max.saturating_sub(1)).collect::<String>()
        )
    } else {
        flat
    }
}
