//! `graphcdc demo`: the whole pipeline in-process on embedded defaults, checked against
//! the demo's own model of the final state.

use crate::cli::DemoArgs;
use anyhow::Context;
use graphcdc_demo::stream::StreamShape;
use std::process::ExitCode;

pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let temp = tempfile::tempdir().context("creating a temporary directory")?;
    let dir = args.data_dir.unwrap_or_else(|| temp.path().join("qdrant"));
    let chunks = args.chunks;
    let shape = StreamShape {
        chunks,
        files: (chunks / 20).max(1),
        entities: (chunks / 5).max(1),
        mentions: chunks * 3 / 4,
        embed_chunks: !args.no_embedding,
        ..StreamShape::default()
    };
    let report = graphcdc_demo::run(shape, &dir, args.inject_drift).await?;
    print!("{}", report.summary());
    if let Some(line) = report.reconcile_line() {
        println!("{line}");
    }
    println!("{}", report.line());
    Ok(if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
