//! `graphcdc`: keeps a Qdrant vector store in sync with a Neo4j graph through Kafka.
//!
//! Thin binary: parses arguments, sets up logging and the runtime, runs the subcommand
//! ([`commands`]) and turns its error into an exit code by kind ([`exit`]).

mod cli;
mod commands;
mod exit;

use clap::Parser;
use cli::{Cli, LogFormat};
use graphcdc_core::{ops, telemetry, ErrorKind};
use std::process::ExitCode;

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    // Before any service creates its stats: metric handles resolved earlier are no-ops.
    ops::install_recorder();
    // qdrant-edge warns about process-wide flags it cannot see initialised: not actionable.
    let default_level = match cli.command {
        #[cfg(feature = "demo")]
        cli::Command::Demo(_) => "warn,qdrant_edge=error",
        _ => "info,qdrant_edge=error",
    };
    let _telemetry = match telemetry::init(default_level, cli.log_format == LogFormat::Json) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("error: cannot set up logging and tracing: {e:#}");
            return exit::exit_code(ErrorKind::Internal);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit::exit_code(ErrorKind::External);
        }
    };
    let code = match runtime.block_on(commands::run(cli.command, cli.config)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            exit::exit_code(exit::kind_of(&e))
        }
    };
    // Stop the runtime before the trace exporter flushes (it blocks).
    drop(runtime);
    code
}
