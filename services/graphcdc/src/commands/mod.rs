//! One module per subcommand: each turns its parsed options into calls of the library
//! and prints the result; [`run`] picks the module. `lifecycle` holds what the
//! long-running ones share (topics, the ops endpoint, signals).

mod audit;
mod capture;
#[cfg(feature = "demo")]
mod demo;
mod dlq;
mod lifecycle;
mod offsets;
mod process;
mod reconcile;
mod search;
mod timetravel;

use crate::cli::Command;
use graphcdc_core::config::Config;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

/// Refuse options that do not fit together: an error of the config kind (exit 78).
macro_rules! refuse {
    ($($arg:tt)*) => {
        return Err(graphcdc_core::Error::invalid(format!($($arg)*)).into())
    };
}
use refuse;

/// Exit code of `reconcile --once` and `audit` when drift remains.
const EXIT_DRIFT: u8 = 3;

/// Run `command` with the config file `config` (the global `--config`).
pub(crate) async fn run(command: Command, config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    // Every subcommand but `demo` reads the config.
    let load = || Config::load(config.as_deref());
    let done = |()| ExitCode::SUCCESS;
    match command {
        Command::Process(args) => process::run(load()?, args).await,
        Command::Reconcile(args) => reconcile::run(load()?, args).await,
        Command::Audit(args) => audit::run(load()?, args).await,
        Command::Relay(args) => capture::relay(load()?, args).await.map(done),
        Command::Backfill(args) => capture::backfill(load()?, args).await.map(done),
        Command::History(args) => timetravel::history(&load()?, args).await.map(done),
        Command::Replay(args) => timetravel::replay(&load()?, args).await.map(done),
        Command::Offsets(args) => offsets::run(&load()?, args).map(done),
        Command::Dlq(args) => dlq::run(&load()?, args).await.map(done),
        Command::Search(args) => search::run(&load()?, args).await.map(done),
        #[cfg(feature = "demo")]
        Command::Demo(args) => demo::run(args).await,
    }
}

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
