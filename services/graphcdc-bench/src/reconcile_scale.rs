//! `--reconcile-scale`: the bucketed check at scale. Loads `--entities` entities into the
//! state topic and the embedded sink, runs the first (full) check, drifts 0.1 % of the
//! entities, and times the incremental checks that follow, with the process's memory.
//!
//! The drift, a quarter each: points removed from the sink and orphans added (a bucket's
//! count changes), updates published to the state topic that the processor never
//! applied (stale), and points whose content is changed in place in the sink (found
//! when the rotation reaches their bucket: the checks go on until every one is found).

use crate::reconcile::{item, Fixture};
use crate::{Args, Figure};
use graphcdc_core::event::ChangeEvent;
use graphcdc_core::reconcile::classify::{DriftClass, DriftReport};
use graphcdc_core::reconcile::Reconciler;
use graphcdc_core::sink::VectorSink;
use graphcdc_core::stats::DriftGauges;
use graphcdc_demo::drift::{self, DriftPlan};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Memory of this process (Linux): resident anonymous and file-backed pages, and the
/// peak resident set, in MiB.
pub(crate) fn memory() -> (f64, f64, f64) {
    let field = crate::proc_status_mib;
    (field("RssAnon:"), field("RssFile:"), field("VmHWM:"))
}

fn found(report: &DriftReport) -> String {
    let counts = report.counts();
    DriftClass::ALL
        .iter()
        .filter(|c| counts[c] > 0)
        .map(|c| format!("{} {}", counts[c], c.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

pub async fn run(args: &Args, figures: &mut Vec<Figure>) -> anyhow::Result<()> {
    let n = args.entities;
    // The mock broker keeps about 5 MB per partition: ~15,000 of these records.
    let partitions = (n / 15_000).max(64) as i32;
    let fixture = Fixture::new("bench-reconcile-scale", partitions).await?;
    let Fixture {
        dir,
        mock,
        config,
        mapper,
        publisher,
        sink: edge,
    } = &fixture;
    mock.create_topic(&config.kafka.changes_topic, 4, 1)?;
    let sink: Arc<dyn VectorSink> = edge.clone();
    let started = Instant::now();
    fixture.load(n, 20_000).await?;
    let load = started.elapsed();
    println!(
        "reconcile-scale: {n} entities loaded in {:.1} s ({partitions} partitions)",
        load.as_secs_f64()
    );
    let disk = dir_size(dir.path());

    let (anon_before, _, _) = memory();
    let mut reconciler = Reconciler::new(
        config.clone(),
        sink.clone(),
        Arc::new(DriftGauges::default()),
    )?;
    reconciler.allow_non_compacted_state(true);
    reconciler.rescan_every(args.rescan_every);
    if let Some(dir) = &args.state_dir {
        reconciler.state_dir(dir)?;
    }
    let started = Instant::now();
    let first = reconciler.check(Duration::ZERO).await?;
    let first_took = started.elapsed();
    let (anon_first, file_first, hwm_first) = memory();
    anyhow::ensure!(
        first.is_clean(),
        "the loaded sink drifted: {}",
        found(&first)
    );
    println!(
        "reconcile-scale: first (full) check {:.1} s, RSS anon +{:.0} MiB",
        first_took.as_secs_f64(),
        anon_first - anon_before
    );

    // 0.1 % drift.
    let damaged = (n / 1_000).max(4);
    let quarter = damaged / 4;
    let pick = |j: usize| (j * 7_919 + 13) % n;
    let live: Vec<(String, i64)> = (0..3 * quarter)
        .map(|j| {
            let e = item(pick(j), 1 + (pick(j) % 5) as i64);
            (e.key, e.version)
        })
        .collect();
    let plan = DriftPlan {
        missing: quarter,
        orphans: quarter,
        stale: 0,
        mismatched: quarter,
        ahead: 0,
    };
    // Leave the in-place ones last in `live`: inject takes missing, then mismatched.
    let mut ordered = live[..quarter].to_vec();
    ordered.extend_from_slice(&live[2 * quarter..]);
    drift::inject(sink.as_ref(), mapper, &config.mappings[0], &ordered, plan).await?;
    let unapplied: Vec<ChangeEvent> = live[quarter..2 * quarter]
        .iter()
        .enumerate()
        .map(|(j, (_, version))| item(pick(quarter + j), version + 1))
        .collect();
    publisher.publish_states(&unapplied).await?;
    let injected = damaged.min(4 * quarter);
    let in_place = quarter;

    let mut checks = Vec::new();
    let mut seen = std::collections::HashSet::new();
    loop {
        let started = Instant::now();
        let report = reconciler.check(Duration::ZERO).await?;
        let took = started.elapsed();
        seen.extend(report.drifts.iter().map(|d| d.id));
        let extent = report.rescanned.unwrap_or_default();
        println!(
            "reconcile-scale: incremental check {} took {:.2} s, {} buckets / {} points rescanned, found {} ({} distinct so far of {injected})",
            checks.len() + 1,
            took.as_secs_f64(),
            extent.buckets,
            extent.points,
            found(&report),
            seen.len()
        );
        checks.push((took, report));
        if seen.len() >= injected || checks.len() > args.rescan_every as usize {
            break;
        }
    }
    let (anon_after, file_after, hwm) = memory();
    let (took, report) = &checks[0];
    let slowest = checks.iter().map(|(t, _)| *t).max().unwrap_or_default();
    figures.push(Figure {
        name: format!("7. reconciler first (full) check, {n} entities"),
        value: format!("{:.1} s", first_took.as_secs_f64()),
        note: format!(
            "state {}; state read + full sink scan; RSS anon +{:.0} MiB after it ({:.0} B/entity), file-backed {file_first:.0} MiB, process peak {hwm_first:.0} MiB; load {:.0} s, sink directory {:.0} MiB",
            where_state(args),
            anon_first - anon_before,
            (anon_first - anon_before) * 1048576.0 / n as f64,
            load.as_secs_f64(),
            disk as f64 / 1048576.0
        ),
    });
    figures.push(Figure {
        name: format!("8. reconciler incremental check, {n} entities, 0.1 % drift"),
        value: format!("{:.2} s", took.as_secs_f64()),
        note: format!(
            "--rescan-every {}: {} of {injected} drifted points found at once ({}), {} buckets / {} points rescanned; the {in_place} changed in place found within {} checks (slowest {:.2} s); RSS anon {:.0} MiB (+{:.0} since the first check), file {file_after:.0} MiB, peak {hwm:.0} MiB",
            args.rescan_every,
            report.drifts.len(),
            found(report),
            report.rescanned.unwrap_or_default().buckets,
            report.rescanned.unwrap_or_default().points,
            checks.len(),
            slowest.as_secs_f64(),
            anon_after,
            anon_after - anon_first,
        ),
    });
    // The sink flushes when its last handle drops: before its directory goes.
    drop((reconciler, sink));
    drop(fixture);
    Ok(())
}

fn dir_size(path: &std::path::Path) -> u64 {
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn where_state(args: &Args) -> String {
    match &args.state_dir {
        Some(dir) => format!("on disk ({})", dir.display()),
        None => "in memory".into(),
    }
}

/// `--reconcile-scale --state-only`: the reconciler's expected state for `--entities`
/// points, without a broker or a sink (the load of a 10 M run takes longer than this
/// machine's sessions), folded as the reader folds state records: its memory (and file,
/// with `--state-dir`), and what reading it back costs: a 0.1 % sample of buckets, every
/// bucket, and point lookups.
pub fn state_only(args: &Args, figures: &mut Vec<Figure>) -> anyhow::Result<()> {
    use graphcdc_core::mapping::{point_id, BUCKETS};
    use graphcdc_core::reconcile::expected::{fold_upsert, ExpectedPoint};
    use graphcdc_core::reconcile::store::StateStore;
    let n = args.entities;
    let (anon_before, _, _) = memory();
    let started = Instant::now();
    let mut store = match &args.state_dir {
        Some(dir) => StateStore::on_disk(dir, 1)?,
        None => StateStore::memory(1),
    };
    for i in 0..n {
        let key = format!("item-{i:08}");
        let id = point_id("items", &key);
        let point = ExpectedPoint {
            collection: 0,
            key: key.into(),
            version: 1 + (i % 5) as i64,
            hash: (i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834),
            partition: (i % 667) as i32,
            offset: (i / 667) as i64,
            timestamp_ms: 1_700_000_000_000,
        };
        fold_upsert(&mut store, id, point)?;
        if i > 0 && i % 10_000_000 == 0 {
            let (anon, _, _) = memory();
            println!(
                "reconcile-scale: {i} points folded in {:.0} s, RSS anon +{:.0} MiB",
                started.elapsed().as_secs_f64(),
                anon - anon_before
            );
        }
    }
    store.flush()?;
    let built = started.elapsed();
    anyhow::ensure!(
        store.len() == n as u64,
        "{} points held of {n}",
        store.len()
    );
    let (anon_built, _, hwm) = memory();
    let file = store
        .path()
        .and_then(|p| std::fs::metadata(p).ok())
        .map_or(0, |m| m.len());
    // Read back: 65 buckets (0.1 %), every bucket, 100,000 lookups.
    let started = Instant::now();
    let mut sampled = 0;
    for b in (0..BUCKETS).step_by(1_000) {
        sampled += store.live_in(0, b as u16..=b as u16)?.len();
    }
    let sample_took = started.elapsed();
    let started = Instant::now();
    let mut all = 0u64;
    store.each_live(0, 0..=u16::MAX, |_, _| all += 1)?;
    let sweep_took = started.elapsed();
    anyhow::ensure!(all == n as u64, "{all} points read back of {n}");
    let started = Instant::now();
    let lookups = 100_000.min(n.max(1));
    for i in 0..lookups {
        let key = format!("item-{:08}", (i * 7_919) % n.max(1));
        store.get(&point_id("items", &key))?;
    }
    let lookup_took = started.elapsed();
    let (anon_after, _, hwm_after) = memory();
    let per = |mib: f64| mib * 1048576.0 / n as f64;
    println!(
        "reconcile-scale: expected state of {n} points {}: RSS anon +{:.0} MiB ({:.0} B/point), file {:.0} MiB ({:.0} B/point), built in {:.1} s; 65 buckets ({sampled} points) read in {:.1} ms, all buckets in {:.1} s, {lookups} lookups in {:.2} s; process peak {:.0} MiB",
        where_state(args),
        anon_built - anon_before,
        per(anon_built - anon_before),
        file as f64 / 1048576.0,
        file as f64 / n as f64,
        built.as_secs_f64(),
        sample_took.as_secs_f64() * 1e3,
        sweep_took.as_secs_f64(),
        lookup_took.as_secs_f64(),
        hwm.max(hwm_after),
    );
    figures.push(Figure {
        name: format!("9. reconciler expected state, {n} points, {}", where_state(args)),
        value: format!("+{:.0} MiB RSS", anon_after.max(anon_built) - anon_before),
        note: format!(
            "{:.0} B/point in memory; file {:.0} MiB ({:.0} B/point); built in {:.0} s ({:.0} points/s); 0.1 % of the buckets read in {:.1} ms, all in {:.1} s; {:.1} µs per lookup; process peak {:.0} MiB",
            per(anon_built - anon_before),
            file as f64 / 1048576.0,
            file as f64 / n as f64,
            built.as_secs_f64(),
            n as f64 / built.as_secs_f64(),
            sample_took.as_secs_f64() * 1e3,
            sweep_took.as_secs_f64(),
            lookup_took.as_secs_f64() * 1e6 / lookups as f64,
            hwm.max(hwm_after),
        ),
    });
    Ok(())
}
