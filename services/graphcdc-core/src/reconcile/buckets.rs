//! The bucketed check: after a first full pass, rescan only the buckets that may have
//! drifted.
//!
//! **Buckets.** A point's bucket is the top 16 bits of its id
//! ([`crate::mapping::bucket_of`], 65,536 buckets per collection): uniform for the UUIDv5
//! ids, and a contiguous id range in Qdrant's scroll order, so a run of buckets is one
//! scroll from its first id. Every point graphcdc writes carries it as the indexed
//! integer payload field `cdc_bucket`, so the sink can count its points per bucket in one
//! request (Qdrant's facet: [`VectorSink::bucket_counts`]).
//!
//! **Log side.** The expected state marks the buckets whose points a state record
//! changed as it reads the topic ([`super::expected::ExpectedState::take_touched`]); the
//! continuous mode reads the topic before every check, so this follows the topic.
//!
//! **Sink side.** The sink has no digest of (key, version, hash): Qdrant cannot aggregate
//! payload values. It can count: live points per bucket (all points with the field minus
//! the tombstones with it), and the points without the field.
//!
//! **Which buckets a check rescans** (page by page, payload only, no vectors):
//! - every bucket, at the first check (the full pass, [`super::classify::scan`]), and when
//!   the sink cannot count per bucket (JSON Lines);
//! - the buckets a state record changed since the last check (the processor should have
//!   applied that record: missing, stale, an orphan whose delete was not applied);
//! - the buckets whose live count in the sink differs from the state's (a point deleted or
//!   added behind the pipeline's back: missing, orphan, a foreign point with the field);
//! - the buckets where the last check found a candidate (drift, drift not yet judged, a
//!   foreign point): persistent drift is reported by every check, as a full check does;
//! - the buckets holding a point without `cdc_bucket` (written by a graphcdc before the
//!   field, or by another tool: found by one filtered scroll of just those points; they
//!   gain the field when the processor next writes them). Numeric-id points are reported
//!   from that scroll;
//! - a rotating slice of `1/rescan_every` of all buckets, so a point changed *in place*
//!   behind the pipeline's back (same count: an older version, other content, a version
//!   ahead) is found within `rescan_every` checks.
//!
//! Tombstones that kept their vector are found by their own filtered query at every check,
//! as in the full check. Within a rescanned bucket the judgement is the full check's
//! ([`super::classify::judge`]), and every candidate is looked at again
//! ([`super::recheck`]): for the buckets it rescans, a bucketed check reports exactly what
//! a full check reports. What it can miss for up to `rescan_every` checks: an in-place
//! change of a point in a bucket nothing else flags, and a point removed and another added
//! in the same bucket between two checks (the counts cancel). A point with a numeric id
//! that carries `cdc_bucket` (only another tool could write one) is not looked at.
//!
//! **Memory.** A check holds a few runs of buckets at a time (at most [`RUN_POINTS`]
//! expected points each, [`CONCURRENT_RUNS`] in flight), never the whole collection. The
//! expected state is in memory (~130 B per point) or, with `--state-dir`, in a file on
//! local disk ([`super::store`]); then a full check is this scan of every bucket
//! ([`Pick::All`]), and memory does not grow with the number of points.

use super::classify::{add_presence_drifts, judge, DriftReport, ScanExtent};
use super::expected::{ExpectedPoint, ExpectedState, Lookup};
use crate::mapping::{bucket_of, BUCKETS};
use crate::sink::{ScanCursor, StoredPoint, VectorSink};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;
use uuid::Uuid;

/// Largest sink page of a rescan.
const PAGE: usize = 1_000;

/// What the reconciler remembers per bucket between checks.
#[derive(Debug, Default)]
pub struct BucketBook {
    /// Per collection index, the buckets with a candidate at their last rescan.
    hot: Vec<HashSet<u16>>,
    /// A full pass was done: later checks may rescan only some buckets.
    primed: bool,
    /// First bucket of the next rotating slice.
    cursor: usize,
}

impl BucketBook {
    /// Whether a full pass was done.
    pub fn primed(&self) -> bool {
        self.primed
    }

    /// Remember the candidates of a scan (full or bucketed): their buckets are rescanned
    /// at the next check. `scanned` lists the buckets this scan covered (`None`: all).
    pub fn record(
        &mut self,
        expected: &ExpectedState,
        candidates: &DriftReport,
        scanned: Option<&[HashSet<u16>]>,
    ) {
        let collections = expected.collections();
        self.hot.resize_with(collections.len(), HashSet::new);
        match scanned {
            None => self.hot.iter_mut().for_each(HashSet::clear),
            Some(scanned) => {
                for (hot, scanned) in self.hot.iter_mut().zip(scanned) {
                    hot.retain(|b| !scanned.contains(b));
                }
            }
        }
        let index = |name: &str| collections.iter().position(|c| c == name);
        for d in &candidates.drifts {
            if let Some(c) = index(&d.collection) {
                self.hot[c].insert(bucket_of(&d.id));
            }
        }
        for (collection, ids) in &candidates.foreign {
            let Some(c) = index(collection) else { continue };
            for id in ids {
                if let Some(ScanCursor::Uuid(u)) = ScanCursor::parse(id) {
                    self.hot[c].insert(bucket_of(&u));
                }
            }
        }
        self.primed = true;
    }

    /// The next rotating slice: `1/rescan_every` of the buckets.
    fn rotation(&mut self, rescan_every: u32) -> HashSet<u16> {
        let slice = BUCKETS.div_ceil(rescan_every.max(1) as usize);
        let slice: HashSet<u16> = (0..slice)
            .map(|i| ((self.cursor + i) % BUCKETS) as u16)
            .collect();
        self.cursor = (self.cursor + slice.len()) % BUCKETS;
        slice
    }
}

/// Which buckets a scan reads.
#[derive(Debug, Clone, Copy)]
pub enum Pick<'a> {
    /// Every bucket: a full check, bucket by bucket (a state on disk is checked this way).
    All,
    /// The buckets that may have drifted (module doc): `touched` are the buckets the
    /// state topic changed since the last check.
    Changed {
        touched: &'a HashSet<(u16, u16)>,
        rescan_every: u32,
    },
}

/// Scan the buckets `pick` selects in every collection and classify their points: the
/// candidates of a check, and the buckets scanned per collection. `None` when `pick` is
/// [`Pick::Changed`] and some collection cannot be counted per bucket (the caller then
/// scans everything).
///
/// # Errors
/// When the sink or the state cannot be read.
pub async fn scan(
    sink: &dyn VectorSink,
    expected: &ExpectedState,
    vector_names: &BTreeMap<String, String>,
    book: &mut BucketBook,
    pick: Pick<'_>,
) -> crate::error::Result<Option<(DriftReport, Vec<HashSet<u16>>)>> {
    let started = Instant::now();
    let mut stages: Vec<(&str, u128)> = Vec::new();
    let mut stage = |name, since: &mut Instant| {
        stages.push((name, since.elapsed().as_millis()));
        *since = Instant::now();
    };
    let mut since = Instant::now();
    let collections = expected.collections();
    let mut counts = Vec::with_capacity(collections.len());
    if let Pick::Changed { .. } = pick {
        for collection in collections {
            match sink.bucket_counts(collection).await? {
                Some(c) => counts.push(c),
                None => return Ok(None),
            }
        }
    }
    let mut report = DriftReport {
        expected_points: expected.len(),
        ..DriftReport::default()
    };
    stage("counts", &mut since);
    let mut selected: Vec<HashSet<u16>> = Vec::with_capacity(collections.len());
    let mut extent = ScanExtent::default();
    let rotation = match pick {
        Pick::All => HashSet::new(),
        Pick::Changed { rescan_every, .. } => book.rotation(rescan_every),
    };
    for (c, collection) in collections.iter().enumerate() {
        let expected_live = expected.store().live_per_bucket(c as u16);
        let mut pick_here: HashSet<u16> = HashSet::new();
        match pick {
            Pick::All => {
                pick_here.extend(0..=u16::MAX);
                report
                    .foreign
                    .entry(collection.clone())
                    .or_default()
                    .extend(numeric_ids(sink, collection).await?);
            }
            Pick::Changed { touched, .. } => {
                pick_here.extend(&rotation);
                pick_here.extend(
                    touched
                        .iter()
                        .filter(|(tc, _)| *tc as usize == c)
                        .map(|(_, b)| *b),
                );
                if let Some(hot) = book.hot.get(c) {
                    pick_here.extend(hot);
                }
                let sink_live = &counts[c].live;
                for (b, n) in expected_live.iter().enumerate() {
                    if *n > 0 && sink_live.get(&(b as u16)).copied().unwrap_or(0) != *n as u64 {
                        pick_here.insert(b as u16);
                    }
                }
                for (b, n) in sink_live {
                    if expected_live[*b as usize] as u64 != *n {
                        pick_here.insert(*b);
                    }
                }
                stage("select", &mut since);
                if counts[c].unbucketed > 0 {
                    let (numeric, buckets) = unbucketed(sink, collection).await?;
                    pick_here.extend(buckets);
                    report
                        .foreign
                        .entry(collection.clone())
                        .or_default()
                        .extend(numeric);
                }
            }
        }
        report.foreign.retain(|_, ids| !ids.is_empty());
        let rescan = Rescan {
            collection,
            c: c as u16,
            buckets: &pick_here,
            expected_live,
        };
        stage("unbucketed", &mut since);
        let points = rescan.run(sink, expected, &mut report).await?;
        stage("rescan", &mut since);
        extent.buckets += pick_here.len() as u64;
        extent.points += points;
        let live = sink.count_live(collection).await?;
        report.sink_live_points += live;
        report.live_by_collection.insert(collection.clone(), live);
        selected.push(pick_here);
    }
    stage("live", &mut since);
    vector_presence_drifts(sink, expected, vector_names, &mut report).await?;
    stage("tombstones", &mut since);
    tracing::debug!(
        ?stages,
        buckets = extent.buckets,
        points = extent.points,
        "bucketed scan (ms per stage)"
    );
    report.sort();
    report.duration = started.elapsed();
    report.rescanned = Some(extent);
    Ok(Some((report, selected)))
}

/// The ids of the numeric points of `collection` (foreign: graphcdc writes UUIDs). They
/// come before every UUID in the scan order, so reading stops at the first UUID.
async fn numeric_ids(sink: &dyn VectorSink, collection: &str) -> crate::error::Result<Vec<String>> {
    let mut numeric = Vec::new();
    let mut from = None;
    loop {
        let page = sink.scan(collection, from, PAGE).await?;
        let mut reached_uuids = !page.points.is_empty();
        for f in page.foreign {
            match ScanCursor::parse(&f.id) {
                Some(ScanCursor::Num(_)) => numeric.push(f.id),
                _ => reached_uuids = true,
            }
        }
        match page.next {
            Some(next @ ScanCursor::Num(_)) if !reached_uuids => from = Some(next),
            _ => return Ok(numeric),
        }
    }
}

/// The ids of the numeric points without `cdc_bucket` (foreign), and the buckets of the
/// UUID ones.
async fn unbucketed(
    sink: &dyn VectorSink,
    collection: &str,
) -> crate::error::Result<(Vec<String>, HashSet<u16>)> {
    let (mut numeric, mut buckets) = (Vec::new(), HashSet::new());
    let mut from = None;
    loop {
        let page = sink.scan_unbucketed(collection, from, PAGE).await?;
        buckets.extend(page.points.iter().map(|p| bucket_of(&p.id)));
        for f in &page.foreign {
            match ScanCursor::parse(&f.id) {
                Some(ScanCursor::Uuid(u)) => {
                    buckets.insert(bucket_of(&u));
                }
                _ => numeric.push(f.id.clone()),
            }
        }
        match page.next {
            Some(next) => from = Some(next),
            None => return Ok((numeric, buckets)),
        }
    }
}

/// The buckets of one collection a check rescans.
struct Rescan<'a> {
    collection: &'a str,
    c: u16,
    buckets: &'a HashSet<u16>,
    /// Expected live points per bucket.
    expected_live: &'a [u32],
}

/// Most expected points in one run of buckets: longer runs are split, so a full pass
/// holds a few runs at a time, not the collection.
const RUN_POINTS: u64 = 20_000;

/// A run of consecutive buckets scanned with one scroll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    first: u16,
    last: u16,
    /// Expected live points in the run.
    expected: u64,
}

impl Rescan<'_> {
    /// Runs of consecutive buckets, each with at most [`RUN_POINTS`] expected points
    /// (unless one bucket has more).
    fn runs(&self) -> Vec<Run> {
        let mut sorted: Vec<u16> = self.buckets.iter().copied().collect();
        sorted.sort_unstable();
        let mut runs: Vec<Run> = Vec::new();
        for b in sorted {
            let n = self.expected_live.get(b as usize).copied().unwrap_or(0) as u64;
            match runs.last_mut() {
                Some(run)
                    if run.last.checked_add(1) == Some(b) && run.expected + n <= RUN_POINTS =>
                {
                    run.last = b;
                    run.expected += n;
                }
                _ => runs.push(Run {
                    first: b,
                    last: b,
                    expected: n,
                }),
            }
        }
        runs
    }

    /// Scan the runs (one scroll each, several at once) and judge every point found and
    /// every expected point of the run not found (missing); returns the points read.
    async fn run(
        &self,
        sink: &dyn VectorSink,
        expected: &ExpectedState,
        report: &mut DriftReport,
    ) -> crate::error::Result<u64> {
        use futures::{StreamExt, TryStreamExt};
        let collection = self.collection;
        let mut scrolls = std::pin::pin!(futures::stream::iter(self.runs())
            .map(|run| async move {
                let found = scroll_run(sink, collection, run).await?;
                Ok::<_, crate::error::Error>((run, found))
            })
            .buffered(CONCURRENT_RUNS));
        let mut read = 0;
        while let Some((run, (points, foreign))) = scrolls.try_next().await? {
            read += (points.len() + foreign.len()) as u64;
            let mut wanted: HashMap<Uuid, ExpectedPoint> = HashMap::new();
            expected
                .store()
                .each_live(self.c, run.first..=run.last, |id, e| {
                    wanted.insert(id, e.clone());
                })?;
            for stored in &points {
                let lookup = match wanted.remove(&stored.id) {
                    Some(point) => Lookup {
                        point: Some(point),
                        deleted: None,
                    },
                    None => expected.lookup(&stored.id)?,
                };
                report
                    .drifts
                    .extend(judge(collection, stored.id, Some(stored), &lookup));
            }
            for (id, point) in wanted {
                let lookup = Lookup {
                    point: Some(point),
                    deleted: None,
                };
                report.drifts.extend(judge(collection, id, None, &lookup));
            }
            if !foreign.is_empty() {
                let entry = report.foreign.entry(collection.to_owned()).or_default();
                entry.extend(foreign);
            }
        }
        Ok(read)
    }
}

/// Scrolls of runs in flight during a rescan.
const CONCURRENT_RUNS: usize = 4;

/// The points (ours, and the ids of foreign ones) of a run of buckets.
async fn scroll_run(
    sink: &dyn VectorSink,
    collection: &str,
    run: Run,
) -> crate::error::Result<(Vec<StoredPoint>, Vec<String>)> {
    let limit = (run.expected as usize + 16).min(PAGE);
    let within = |id: &Uuid| bucket_of(id) <= run.last;
    let (mut points, mut foreign) = (Vec::new(), Vec::new());
    let mut from = Some(ScanCursor::Uuid(Uuid::from_u128(
        (run.first as u128) << 112,
    )));
    while let Some(cursor) = from {
        let page = sink.scan(collection, Some(cursor), limit).await?;
        points.extend(page.points.into_iter().filter(|p| within(&p.id)));
        for f in page.foreign {
            if let Some(ScanCursor::Uuid(u)) = ScanCursor::parse(&f.id) {
                if within(&u) {
                    foreign.push(f.id);
                }
            }
        }
        from = match page.next {
            Some(ScanCursor::Uuid(next)) if within(&next) => Some(ScanCursor::Uuid(next)),
            _ => None,
        };
    }
    Ok((points, foreign))
}

/// Tombstones that kept their vector and live points without one, in every collection
/// (filtered queries).
async fn vector_presence_drifts(
    sink: &dyn VectorSink,
    expected: &ExpectedState,
    vector_names: &BTreeMap<String, String>,
    report: &mut DriftReport,
) -> crate::error::Result<()> {
    for collection in expected.collections() {
        if let Some(vector_name) = vector_names.get(collection) {
            add_presence_drifts(sink, expected, collection, vector_name, report).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rotation_covers_every_bucket_within_rescan_every_checks() {
        for every in [1, 2, 7, 60, 100_000] {
            let mut book = BucketBook::default();
            let mut covered = HashSet::new();
            let checks = every.min(BUCKETS as u32);
            for _ in 0..checks {
                covered.extend(book.rotation(every));
            }
            assert_eq!(covered.len(), BUCKETS, "rescan_every {every}");
        }
        let mut book = BucketBook::default();
        assert_eq!(book.rotation(60).len(), BUCKETS.div_ceil(60));
    }
}
