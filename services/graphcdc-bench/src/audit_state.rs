//! `--reconcile-scale --state-only --audit-state`: what `graphcdc audit` holds per entity
//! key for `--entities` keys, in memory or (with `--state-dir`) in files: graph.state's
//! entries, folded as the audit folds them (a lookup, then a write, keys in an order
//! unrelated to their sort order), the keys a pass meets in Neo4j, and the pass's walk over
//! every entry looking it up among those keys. No broker, no Neo4j.

use crate::reconcile_scale::memory;
use crate::Figure;
use graphcdc_core::audit::keyed::Keyed;
use graphcdc_core::audit::state::{LogEntry, FILE_NAME};
use std::time::Instant;

/// A permutation of 0..n (a multiplier prime to every n below it).
fn shuffled(i: usize, n: usize, salt: usize) -> usize {
    ((i as u128 * 2_654_435_761 + salt as u128) % n as u128) as usize
}

pub fn run(args: &crate::Args, figures: &mut Vec<Figure>) -> anyhow::Result<()> {
    let n = args.entities.max(1);
    let key = |i: usize| format!("Doc:item-{i:09}");
    let (anon_before, _, _) = memory();
    let started = Instant::now();
    let mut entries: Keyed<LogEntry> = match &args.state_dir {
        Some(dir) => Keyed::on_disk(dir, FILE_NAME)?,
        None => Keyed::memory(),
    };
    for i in 0..n {
        let k = key(shuffled(i, n, 0));
        let held = entries.get(&k)?;
        anyhow::ensure!(held.is_none(), "{k} folded twice");
        let entry = LogEntry {
            version: 1 + (i % 5) as i64,
            hash: Some((i as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834)),
            targets: 1,
        };
        entries.insert(&k, entry)?;
    }
    entries.flush()?;
    let folded = started.elapsed();
    let (anon_entries, _, _) = memory();
    let started = Instant::now();
    let mut seen: Keyed<()> = entries.beside("audit-seen.redb")?;
    for i in 0..n {
        seen.insert(&key(shuffled(i, n, 7)), ())?;
    }
    seen.flush()?;
    let marked = started.elapsed();
    let started = Instant::now();
    let (mut walked, mut lost) = (0usize, 0usize);
    let mut failed = Ok(());
    entries.each(|k, _| {
        walked += 1;
        match seen.contains(k) {
            Ok(true) => {}
            Ok(false) => lost += 1,
            Err(e) => failed = Err(e),
        }
    })?;
    failed?;
    let walk = started.elapsed();
    anyhow::ensure!(
        walked == n && lost == 0,
        "{walked} walked, {lost} lost of {n}"
    );
    let (anon_after, _, hwm) = memory();
    let size = |p: Option<&std::path::Path>| {
        p.and_then(|p| std::fs::metadata(p).ok())
            .map_or(0.0, |m| m.len() as f64 / 1048576.0)
    };
    let files = size(entries.path()) + size(seen.path());
    let place = match &args.state_dir {
        Some(dir) => format!("on disk in {}", dir.display()),
        None => "in memory".into(),
    };
    let rss = anon_after.max(anon_entries) - anon_before;
    println!(
        "audit-state: {n} keys {place}: RSS anon +{rss:.0} MiB ({:.0} B/key; entries alone +{:.0} MiB), files {files:.0} MiB; entries folded in {:.1} s, keys met marked in {:.1} s, walk for lost keys {:.1} s; process peak {hwm:.0} MiB",
        rss * 1048576.0 / n as f64,
        anon_entries - anon_before,
        folded.as_secs_f64(),
        marked.as_secs_f64(),
        walk.as_secs_f64(),
    );
    figures.push(Figure {
        name: format!("10. audit: graph.state entries + keys met, {n} keys, {place}"),
        value: format!("+{rss:.0} MiB RSS"),
        note: format!(
            "files {files:.0} MiB; folded in {:.0} s, marked in {:.0} s, walked in {:.0} s; process peak {hwm:.0} MiB",
            folded.as_secs_f64(),
            marked.as_secs_f64(),
            walk.as_secs_f64()
        ),
    });
    Ok(())
}
