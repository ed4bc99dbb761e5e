//! Looking back on a real broker: the key partitioner, an entity's history, and
//! consumer-group offsets show/reset.

mod support;

use graphcdc_core::codec::{Codec, Format};
use graphcdc_core::event::{Op, PropertyValue};
use graphcdc_core::sink::embedded::EmbeddedSink;
use graphcdc_core::stats::Stats;
use graphcdc_core::timetravel::history::{self, Diff, Start};
use graphcdc_core::timetravel::offsets::{self, ResetTarget};
use graphcdc_core::timetravel::replay::{
    self, shadow_collection, AliasSwap, OffsetSpec, ReplayEnd, ReplayReport, ReplayStart,
    ShadowTarget,
};
use rdkafka::producer::FutureRecord;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use support::{churn, doc, Harness, Model};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_finds_the_partition_producers_use() {
    let h = Harness::new("partitioner").await;
    let publisher = h.publisher(Format::Json);
    for i in 0..100 {
        let key = format!("entity-{i}-{}", "x".repeat(i % 7));
        let delivery = publisher
            .producer()
            .send(
                FutureRecord::to(&h.config.kafka.changes_topic)
                    .key(&key)
                    .payload("{}"),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        assert_eq!(
            delivery.partition,
            graphcdc_core::kafka::partitioner::partition_for(key.as_bytes(), support::PARTITIONS),
            "{key}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_shows_every_version_in_order_with_diffs() {
    let h = Harness::new("history").await;
    let mut events = churn(30, 200, 5); // other keys around it
    let mut timeline = Vec::new();
    for v in 1..=4 {
        let mut e = doc("watched", v, Op::Upsert);
        if v >= 3 {
            e = e.with_property("topic", PropertyValue::String("graphs".into()));
        }
        timeline.push(e);
    }
    timeline.push(doc("watched", 5, Op::Delete));
    for (i, e) in timeline.iter().enumerate() {
        events.insert(i * 40, e.clone());
    }
    h.publisher(Format::Avro)
        .publish_all(&events)
        .await
        .unwrap();

    let codec = Codec::local();
    let entries = history::history(&h.config.kafka, &codec, "watched", Start::Beginning)
        .await
        .unwrap();
    let versions: Vec<i64> = entries.iter().map(|e| e.version).collect();
    assert_eq!(versions, [1, 2, 3, 4, 5]);
    assert!(entries.windows(2).all(|w| w[0].offset < w[1].offset));
    assert_eq!(entries[4].op, Op::Delete);
    assert!(entries[2].diff.contains(&Diff::Added {
        name: "topic".into(),
        value: PropertyValue::String("graphs".into())
    }));
    assert!(entries[1]
        .diff
        .iter()
        .any(|d| matches!(d, Diff::Changed { name, .. } if name == "text")));
    assert!(entries[4].diff.contains(&Diff::Removed {
        name: "text".into()
    }));

    // From an offset: only what follows.
    let later = history::history(
        &h.config.kafka,
        &codec,
        "watched",
        Start::Offset(entries[2].offset),
    )
    .await
    .unwrap();
    assert_eq!(
        later.iter().map(|e| e.version).collect::<Vec<_>>(),
        [3, 4, 5]
    );

    // The binary prints the same timeline as JSON.
    let out = h.cli(["history", "watched", "--format", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 5);

    // --from-datetime: an RFC 3339 time, or a duration ago.
    let versions_from = |from: &str| -> Vec<i64> {
        let out = h.cli([
            "history",
            "watched",
            "--format",
            "json",
            "--from-datetime",
            from,
        ]);
        assert!(
            out.status.success(),
            "{from}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        json.as_array()
            .unwrap()
            .iter()
            .map(|e| e["version"].as_i64().unwrap())
            .collect()
    };
    assert_eq!(versions_from("1h"), [1, 2, 3, 4, 5]);
    let t = entries[2].timestamp_ms.unwrap();
    let from_t: Vec<i64> = entries
        .iter()
        .filter(|e| e.timestamp_ms.unwrap() >= t)
        .map(|e| e.version)
        .collect();
    let t =
        humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(t as u64));
    assert_eq!(versions_from(&t.to_string()), from_t);
    let out = h.cli(["history", "watched", "--from-time", "1h"]);
    assert!(!out.status.success(), "the old spelling is gone");
}

/// Committed offsets of `h`'s group per partition (`None`: no commit).
fn committed(h: &Harness) -> BTreeMap<i32, Option<i64>> {
    let k = &h.config.kafka;
    graphcdc_core::kafka::group_offsets(k, &k.group_id, &k.changes_topic)
        .unwrap()
        .iter()
        .map(|p| (p.partition, p.committed))
        .collect()
}

/// High watermarks of `h`'s change topic per partition.
fn highs(h: &Harness) -> BTreeMap<i32, i64> {
    let k = &h.config.kafka;
    graphcdc_core::kafka::group_offsets(k, &k.group_id, &k.changes_topic)
        .unwrap()
        .iter()
        .map(|p| (p.partition, p.high))
        .collect()
}

/// Run the binary with `args` (on the blocking pool: a processor may run meanwhile);
/// stdout on success, stderr on failure.
fn cli(h: &Harness, args: &[&str]) -> Result<String, String> {
    let out = tokio::task::block_in_place(|| h.cli(args));
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_reset_previews_by_default_and_commits_only_with_execute() {
    let h = Harness::new("offsets").await;
    let events = churn(50, 300, 8);
    h.publisher(Format::Avro)
        .publish_all(&events)
        .await
        .unwrap();
    let sink = h.open_sink();
    let k = &h.config.kafka;

    let running = h.start_processor(sink.clone()).await;
    h.wait_caught_up(Duration::from_secs(60)).await;
    let caught_up = committed(&h);
    // Refused while a member runs. (tansu does not answer DescribeGroups, so here the
    // refusal is "cannot tell"; Kafka names the active members.)
    let plan = offsets::plan_reset(
        k,
        &k.group_id,
        &k.changes_topic,
        &ResetTarget::Earliest,
        None,
    )
    .unwrap();
    let refused = offsets::execute_reset(k, &plan, false).unwrap_err();
    assert!(refused.to_string().contains("active member"), "{refused}");
    let refused = cli(&h, &["offsets", "reset", "--to-earliest", "--execute"]).unwrap_err();
    assert!(refused.contains("active member"), "{refused}");
    // A preview is allowed and says what --execute needs.
    let preview = cli(&h, &["offsets", "reset", "--to-earliest"]).unwrap();
    assert!(preview.contains("active member"), "{preview}");
    assert_eq!(committed(&h), caught_up, "nothing moved");
    running.stop().await;

    let shown = graphcdc_core::kafka::group_offsets(k, &k.group_id, &k.changes_topic).unwrap();
    assert_eq!(shown.iter().map(|p| p.lag).sum::<i64>(), 0);
    assert_eq!(shown.iter().map(|p| p.high).sum::<i64>(), 300);

    // The default is a preview: current, new and lag per partition; nothing committed.
    let preview = cli(&h, &["offsets", "reset", "--to-earliest"]).unwrap();
    for p in &shown {
        let row = format!(
            "{:>9} {:>10} {:>10} {:>10} {:>10}",
            p.partition,
            p.committed.unwrap(),
            0,
            0,
            p.high
        );
        assert!(preview.contains(&row), "{row:?} in\n{preview}");
    }
    assert!(preview.contains("total lag: 0 -> 300"), "{preview}");
    assert!(preview.contains("preview: nothing changed"), "{preview}");
    assert_eq!(committed(&h), caught_up, "a preview commits nothing");

    let done = cli(
        &h,
        &["offsets", "reset", "--to-earliest", "--execute", "--force"],
    )
    .unwrap();
    assert!(done.contains("committed"), "{done}");
    assert!(committed(&h).values().all(|c| *c == Some(0)));
    assert_eq!(h.lag(), 300, "the group starts over");
    let stats = h.process_to_end(sink.clone()).await;
    assert_eq!(
        Stats::get(&stats.consumed),
        300,
        "re-read from the beginning"
    );
    assert_eq!(
        Stats::get(&stats.applied),
        0,
        "and fenced: nothing applied twice in effect"
    );

    // The library: a plan, then its execution.
    let plan =
        offsets::plan_reset(k, &k.group_id, &k.changes_topic, &ResetTarget::Latest, None).unwrap();
    assert!(plan.partitions.iter().all(|p| p.new == p.high));
    offsets::execute_reset(k, &plan, true).unwrap();
    assert_eq!(h.lag(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_reset_targets_times_offsets_shifts_and_partitions_and_clamps_like_kafka() {
    let h = Harness::new("offsets-targets").await;
    let events = churn(40, 400, 5);
    let (before, after) = events.split_at(200);
    let publisher = h.publisher(Format::Avro);
    publisher.publish_all(before).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let cut = std::time::SystemTime::now();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    publisher.publish_all(after).await.unwrap();
    let highs = highs(&h);
    assert!(highs.values().all(|h| *h >= 10), "{highs:?}");
    let reset = |args: &[&str]| {
        let mut all = vec!["offsets", "reset"];
        all.extend(args);
        all.extend(["--execute", "--force"]);
        cli(&h, &all)
    };
    let at = |offsets: [i64; 4]| -> BTreeMap<i32, Option<i64>> {
        (0..4).map(|p| (p, Some(offsets[p as usize]))).collect()
    };

    // One offset for every partition, then shifted on some of them.
    reset(&["--to-offset", "5"]).unwrap();
    assert_eq!(committed(&h), at([5, 5, 5, 5]));
    reset(&["--shift-by", "-2", "--partitions", "0,2"]).unwrap();
    assert_eq!(committed(&h), at([3, 5, 3, 5]));
    reset(&["--shift-by=+1"]).unwrap();
    assert_eq!(committed(&h), at([4, 6, 4, 6]));
    // Per partition, in replay's P:OFFSET form: only the listed partitions move.
    reset(&["--to-offset", "0:7,3:1"]).unwrap();
    assert_eq!(committed(&h), at([7, 6, 4, 1]));

    // Clamped to [earliest, end], and the preview says so.
    let preview = cli(
        &h,
        &[
            "offsets",
            "reset",
            "--shift-by",
            "10000",
            "--partitions",
            "1",
        ],
    )
    .unwrap();
    let clamped = format!("clamped: 10006 is past the end {}", highs[&1]);
    assert!(preview.contains(&clamped), "{preview}");
    let preview = cli(
        &h,
        &[
            "offsets",
            "reset",
            "--shift-by",
            "-10000",
            "--partitions",
            "1",
        ],
    )
    .unwrap();
    assert!(
        preview.contains("clamped: -9994 is below the earliest offset 0"),
        "{preview}"
    );
    assert_eq!(committed(&h), at([7, 6, 4, 1]), "previews commit nothing");
    reset(&["--shift-by", "10000", "--partitions", "1"]).unwrap();
    assert_eq!(committed(&h)[&1], Some(highs[&1]));

    // Times: RFC 3339, a duration ago (--to-datetime or --by-duration), or none after.
    let split: BTreeMap<i32, i64> = {
        let k = &h.config.kafka;
        let ms = cut
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        offsets::plan_reset(
            k,
            &k.group_id,
            &k.changes_topic,
            &ResetTarget::Time(ms),
            None,
        )
        .unwrap()
        .partitions
        .iter()
        .map(|p| (p.partition, p.new))
        .collect()
    };
    assert_eq!(
        split.values().sum::<i64>(),
        200,
        "the records before the cut"
    );
    reset(&["--to-datetime", "1h"]).unwrap();
    assert_eq!(committed(&h), at([0, 0, 0, 0]), "an hour ago: everything");
    reset(&[
        "--to-datetime",
        &humantime::format_rfc3339_millis(cut).to_string(),
    ])
    .unwrap();
    assert_eq!(
        committed(&h),
        split.iter().map(|(p, o)| (*p, Some(*o))).collect()
    );
    reset(&["--to-latest"]).unwrap();
    assert_eq!(
        committed(&h),
        highs.iter().map(|(p, o)| (*p, Some(*o))).collect(),
        "the end of every partition"
    );
    reset(&["--to-earliest"]).unwrap();
    let ago = format!("{}ms", cut.elapsed().unwrap().as_millis());
    reset(&["--by-duration", &ago]).unwrap();
    assert_eq!(
        committed(&h),
        split.iter().map(|(p, o)| (*p, Some(*o))).collect()
    );
    // Bad input names the option; nothing moves.
    let before_errors = committed(&h);
    let err = reset(&["--to-offset", "0:7", "--partitions", "1"]).unwrap_err();
    assert!(err.contains("--partitions"), "{err}");
    let err = reset(&["--to-latest", "--partitions", "9"]).unwrap_err();
    assert!(
        err.contains("--partitions") && err.contains("no partition 9"),
        "{err}"
    );
    let err = reset(&["--to-offset", "0:x"]).unwrap_err();
    assert!(err.contains("--to-offset"), "{err}");
    let err = reset(&["--to-datetime", "tomorrow"]).unwrap_err();
    assert!(err.contains("--to-datetime"), "{err}");
    assert_eq!(committed(&h), before_errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_to_a_time_rebuilds_the_store_as_of_that_time() {
    let h = Harness::new("replay").await;
    let events = churn(50, 600, 12);
    let (before, after) = events.split_at(300);
    let cut = publish_with_cut(&h, before, after).await;

    let shadow = |name: &str| {
        ShadowTarget::Directory(h.dir.path().join(name))
            .open(&h.config)
            .unwrap()
    };
    let (config, sink) = shadow("as-of-cut");
    let report = replay::replay(
        &config,
        sink.clone(),
        ReplayStart::Beginning,
        ReplayEnd::Time(cut),
    )
    .await
    .unwrap();
    assert_eq!(report.records, 300, "only what was written before the cut");
    let cmp = Model::of(before).compare(sink.as_ref()).await;
    assert!(cmp.is_exact(), "the store as of the cut: {cmp:?}");

    let (config, sink) = shadow("now");
    replay::replay(
        &config,
        sink.clone(),
        ReplayStart::Beginning,
        ReplayEnd::Now,
    )
    .await
    .unwrap();
    let cmp = Model::of(&events).compare(sink.as_ref()).await;
    assert!(cmp.is_exact(), "deleted entities stay deleted: {cmp:?}");

    // The binary: --to-datetime as RFC 3339, --from-datetime as a duration ago.
    let cut_text =
        humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(cut as u64))
            .to_string();
    let target = h.dir.path().join("cli-as-of-cut");
    let out = h.cli([
        "replay".as_ref(),
        "--from-datetime".as_ref(),
        "1d".as_ref(),
        "--to-datetime".as_ref(),
        cut_text.as_ref(),
        "--target-path".as_ref(),
        target.as_os_str(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("records=300 "), "{stdout}");
    let out = h.cli(["replay", "--to-time", &cut_text, "--target-path", "x"]);
    assert!(!out.status.success(), "the old spelling is gone");
}

/// Publish `before`, take the time, publish `after`; returns the time (Unix ms).
async fn publish_with_cut(
    h: &Harness,
    before: &[graphcdc_core::event::ChangeEvent],
    after: &[graphcdc_core::event::ChangeEvent],
) -> i64 {
    let publisher = h.publisher(Format::Avro);
    publisher.publish_all(before).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let cut = graphcdc_core::unix_ms();
    tokio::time::sleep(Duration::from_millis(500)).await;
    publisher.publish_all(after).await.unwrap();
    cut
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_takes_start_and_end_offsets_per_partition() {
    let h = Harness::new("replay-offsets").await;
    h.publisher(Format::Avro)
        .publish_all(&churn(40, 400, 21))
        .await
        .unwrap();
    let k = &h.config.kafka;
    let highs: BTreeMap<i32, i64> =
        graphcdc_core::kafka::group_offsets(k, &k.group_id, &k.changes_topic)
            .unwrap()
            .iter()
            .map(|p| (p.partition, p.high))
            .collect();
    assert_eq!(highs.values().sum::<i64>(), 400);
    // What a replay must read: per partition [start, end) within [0, high).
    let expected = |from: &OffsetSpec, to: Option<&OffsetSpec>| -> u64 {
        highs
            .iter()
            .map(|(p, high)| {
                let start = from.get(*p).unwrap_or(0);
                let end = to.and_then(|t| t.get(*p)).map_or(*high, |e| e.min(*high));
                (end - start).max(0) as u64
            })
            .sum()
    };
    let mut run = 0;
    let mut replay_records = |from: ReplayStart, to: ReplayEnd| {
        run += 1;
        let target = ShadowTarget::Directory(h.dir.path().join(format!("run-{run}")));
        let config = h.config.clone();
        async move {
            let (config, sink) = target.open(&config).unwrap();
            replay::replay(&config, sink, from, to).await
        }
    };

    // Partition 0 from its middle, partition 1 from its end, the unlisted ones from the
    // earliest offset; to today's end.
    let from = OffsetSpec::parse(
        "--from-offset",
        &format!("0:{},1:{}", highs[&0] / 2, highs[&1]),
    )
    .unwrap();
    let report = replay_records(ReplayStart::Offsets(from.clone()), ReplayEnd::Now)
        .await
        .unwrap();
    assert_eq!(report.records, expected(&from, None));
    assert_eq!(
        report.records,
        (highs[&0] - highs[&0] / 2 + highs[&2] + highs[&3]) as u64
    );

    // One end offset for every partition (exclusive), and one for partition 2 only.
    let all = OffsetSpec::All(0);
    for to in [
        OffsetSpec::parse("--to-offset", "30").unwrap(),
        OffsetSpec::parse("--to-offset", "2:5").unwrap(),
    ] {
        let report = replay_records(ReplayStart::Beginning, ReplayEnd::Offsets(to.clone()))
            .await
            .unwrap();
        assert_eq!(report.records, expected(&all, Some(&to)), "{to:?}");
    }

    // Both bounds from one list each.
    let from = OffsetSpec::parse("--from-offset", "0:3,3:1").unwrap();
    let to = OffsetSpec::parse("--to-offset", "0:10,1:4").unwrap();
    let report = replay_records(
        ReplayStart::Offsets(from.clone()),
        ReplayEnd::Offsets(to.clone()),
    )
    .await
    .unwrap();
    assert_eq!(report.records, expected(&from, Some(&to)));

    // A partition the topic does not have is refused, naming the flag.
    let err = replay_records(
        ReplayStart::Offsets(OffsetSpec::parse("--from-offset", "9:0").unwrap()),
        ReplayEnd::Now,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("--from-offset: "), "{err}");
    assert!(err.contains("no partition 9"), "{err}");

    // The binary names the flag of bad input before touching anything.
    let never = h.dir.path().join("never");
    let out = h.cli([
        "replay".as_ref(),
        "--from-offset".as_ref(),
        "0:abc".as_ref(),
        "--target-path".as_ref(),
        never.as_os_str(),
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--from-offset: offset \"abc\""), "{stderr}");
    assert!(!h.dir.path().join("never").exists());
}

/// Replay `h`'s topic from the beginning to `to` into the shadow directory `name`, then
/// point the symlink `alias` at it.
async fn replay_and_swap(
    h: &Harness,
    name: &str,
    to: ReplayEnd,
    alias: &Path,
    keep_old: bool,
) -> (ReplayReport, AliasSwap) {
    let target = ShadowTarget::Directory(h.dir.path().join(name));
    let alias = alias.to_str().unwrap();
    replay::check_alias(&h.config, &target, alias)
        .await
        .unwrap();
    let (config, sink) = target.open(&h.config).unwrap();
    // The replay owns the shadow store's only handle and drops it when done.
    let report = replay::replay(&config, sink, ReplayStart::Beginning, to)
        .await
        .unwrap();
    let mut swaps = replay::swap_alias(&h.config, &target, alias, keep_old)
        .await
        .unwrap();
    assert_eq!(swaps.len(), 1);
    (report, swaps.remove(0))
}

/// A reader opening the alias, as a processor with `[sink] path = <alias>` does.
async fn through_alias(alias: &Path, model: &Model) -> graphcdc_demo::verify::Comparison {
    let reader = EmbeddedSink::open(alias).unwrap();
    model.compare(&reader).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_the_alias_points_readers_at_the_new_shadow_store() {
    let h = Harness::new("alias").await;
    let events = churn(40, 400, 33);
    let (before, after) = events.split_at(200);
    let cut = publish_with_cut(&h, before, after).await;
    let alias = h.dir.path().join("store");
    let resolves_to = |name: &str| {
        std::fs::canonicalize(&alias).unwrap()
            == std::fs::canonicalize(h.dir.path().join(name)).unwrap()
    };

    // A: the store as of the cut, behind the new alias.
    let (report, swap) = replay_and_swap(&h, "a", ReplayEnd::Time(cut), &alias, false).await;
    assert_eq!(report.records, 200);
    assert_eq!(swap.previous, None);
    assert!(resolves_to("a"));
    let cmp = through_alias(&alias, &Model::of(before)).await;
    assert!(cmp.is_exact(), "A through the alias: {cmp:?}");

    // B: today's store; without --keep-old, A is removed.
    let (report, swap) = replay_and_swap(&h, "b", ReplayEnd::Now, &alias, false).await;
    assert_eq!(report.records, 400);
    assert!(resolves_to("b"));
    assert!(swap.removed);
    assert!(!h.dir.path().join("a").exists(), "A removed");
    let cmp = through_alias(&alias, &Model::of(&events)).await;
    assert!(cmp.is_exact(), "B through the alias: {cmp:?}");
    assert_eq!(cmp.live_points, cmp.expected_live);

    // An alias already pointing at the target is refused before a replay writes into it.
    let err = replay::check_alias(
        &h.config,
        &ShadowTarget::Directory(h.dir.path().join("b")),
        alias.to_str().unwrap(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("already points at"), "{err}");

    // C, through the binary, with --keep-old: B stays.
    let target = h.dir.path().join("c");
    let out = h.cli([
        "replay".as_ref(),
        "--target-path".as_ref(),
        target.as_os_str(),
        "--swap-alias".as_ref(),
        alias.as_os_str(),
        "--keep-old".as_ref(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("records=400"), "{stdout}");
    assert!(stdout.contains("alias: "), "{stdout}");
    assert!(resolves_to("c"));
    assert!(h.dir.path().join("b").is_dir(), "--keep-old keeps B");
    let cmp = through_alias(&alias, &Model::of(&events)).await;
    assert!(cmp.is_exact(), "C through the alias: {cmp:?}");
}

/// Runs only when `QDRANT_URL` points at a Qdrant server (gRPC port), like the sink
/// contract suite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_a_qdrant_alias_points_readers_and_processors_at_the_shadow_collection() {
    use graphcdc_core::config::Secret;
    use graphcdc_core::processor::Processor;
    use graphcdc_core::sink::qdrant::QdrantSink;
    use graphcdc_core::sink::SinkConfig;
    use graphcdc_core::stats::Health;
    use std::sync::Arc;

    let Ok(url) = std::env::var("QDRANT_URL") else {
        eprintln!("QDRANT_URL not set: server alias swap not run");
        return;
    };
    let api_key = std::env::var("QDRANT_API_KEY").ok();
    let h = Harness::new("alias-server").await;
    let live = format!("graphcdc_alias_{}", uuid::Uuid::new_v4().simple());
    let mut config = h.config.clone();
    config.sink = SinkConfig::Qdrant {
        url: url.clone(),
        api_key: api_key.clone().map(Secret::new),
        timeout_ms: 10_000,
    };
    config.mappings[0].collection = live.clone();
    let server = QdrantSink::from_config(&config.sink).unwrap();
    // The model keyed by the live collection name (the alias).
    let expected = |events: &[graphcdc_core::event::ChangeEvent]| {
        Model::of(events)
            .expected
            .into_iter()
            .map(|((_, key), e)| ((live.clone(), key), e))
            .collect::<BTreeMap<_, _>>()
    };

    let events = churn(40, 400, 44);
    let (before, after) = events.split_at(200);
    let cut = publish_with_cut(&h, before, after).await;

    let replay_into = |suffix: &str, to: ReplayEnd| {
        let target = ShadowTarget::Suffix(suffix.to_owned());
        let config = config.clone();
        let alias = live.clone();
        async move {
            replay::check_alias(&config, &target, &alias).await.unwrap();
            let (shadow, sink) = target.open(&config).unwrap();
            let report = replay::replay(&shadow, sink, ReplayStart::Beginning, to)
                .await
                .unwrap();
            (report, target)
        }
    };

    // A: as of the cut.
    let (report, a) = replay_into("a", ReplayEnd::Time(cut)).await;
    assert_eq!(report.records, 200);
    let swaps = replay::swap_alias(&config, &a, &live, false).await.unwrap();
    assert_eq!(swaps.len(), 1);
    assert_eq!(swaps[0].previous, None);
    assert_eq!(swaps[0].target, shadow_collection(&live, "a"));
    let cmp = graphcdc_demo::verify::compare(&server, &expected(before))
        .await
        .unwrap();
    assert!(cmp.is_exact(), "A through the alias: {cmp:?}");

    // B: today's store, --keep-old: A stays.
    let (_, b) = replay_into("b", ReplayEnd::Now).await;
    let swaps = replay::swap_alias(&config, &b, &live, true).await.unwrap();
    assert_eq!(
        swaps[0].previous.as_deref(),
        Some(shadow_collection(&live, "a").as_str())
    );
    assert!(!swaps[0].removed);
    assert_eq!(
        server.aliases().await.unwrap().get(&live),
        Some(&shadow_collection(&live, "b"))
    );
    let cmp = graphcdc_demo::verify::compare(&server, &expected(&events))
        .await
        .unwrap();
    assert!(cmp.is_exact(), "B through the alias: {cmp:?}");
    let names = server.collection_names().await.unwrap();
    assert!(
        names.contains(&shadow_collection(&live, "a")),
        "--keep-old keeps A"
    );

    // C: without --keep-old, B is deleted.
    let (_, c) = replay_into("c", ReplayEnd::Now).await;
    let swaps = replay::swap_alias(&config, &c, &live, false).await.unwrap();
    assert!(swaps[0].removed);
    let names = server.collection_names().await.unwrap();
    assert!(!names.contains(&shadow_collection(&live, "b")), "B deleted");
    assert!(names.contains(&shadow_collection(&live, "c")));

    // A processor writing to the alias computes the ids the shadow holds: re-reading the
    // whole topic applies nothing (all fenced) and adds no second point per entity.
    let stats = Arc::new(Stats::default());
    let processor = Processor::new(
        config.clone(),
        Arc::new(QdrantSink::from_config(&config.sink).unwrap()),
        stats.clone(),
        Arc::new(Health::default()),
    )
    .await
    .unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(processor.run(shutdown.clone()));
    h.wait_caught_up(Duration::from_secs(90)).await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    assert_eq!(Stats::get(&stats.applied), 0);
    let cmp = graphcdc_demo::verify::compare(&server, &expected(&events))
        .await
        .unwrap();
    assert!(
        cmp.is_exact(),
        "C after a processor ran through the alias: {cmp:?}"
    );

    for suffix in ["a", "c"] {
        let _ = server
            .delete_collection(&shadow_collection(&live, suffix))
            .await;
    }
}
