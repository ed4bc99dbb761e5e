//! Looking back on a real broker: the key partitioner, an entity's history, and
//! consumer-group offsets show/reset.

mod support;

use graphcdc_core::codec::{Codec, Format};
use graphcdc_core::event::{Op, PropertyValue};
use graphcdc_core::inspect::history::{self, Diff, Start};
use graphcdc_core::inspect::offsets::{self, ResetTo};
use graphcdc_core::inspect::replay;
use graphcdc_core::stats::Stats;
use rdkafka::producer::FutureRecord;
use std::process::Command;
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
            history::partition_for(key.as_bytes(), support::PARTITIONS),
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
    let out = Command::new(env!("CARGO_BIN_EXE_graphcdc"))
        .args(["history", "watched", "--format", "json", "--config"])
        .arg(h.config_file())
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_reset_moves_a_stopped_group_and_refuses_an_active_one() {
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
    // Refused while a member runs. (tansu does not answer DescribeGroups, so here the
    // refusal is "cannot tell"; Kafka names the active members.)
    let refused = offsets::reset(
        k,
        &k.group_id,
        &k.changes_topic,
        ResetTo::Earliest,
        false,
        false,
    )
    .unwrap_err();
    assert!(refused.to_string().contains("active member"), "{refused}");
    assert_eq!(h.lag(), 0, "nothing moved");
    running.stop().await;

    let shown = offsets::show(k, &k.group_id, &k.changes_topic).unwrap();
    assert_eq!(shown.iter().map(|p| p.lag).sum::<i64>(), 0);
    assert_eq!(shown.iter().map(|p| p.high).sum::<i64>(), 300);

    let plan = offsets::reset(
        k,
        &k.group_id,
        &k.changes_topic,
        ResetTo::Earliest,
        true,
        true,
    )
    .unwrap();
    assert!(plan.iter().all(|(_, _, to)| *to == 0));
    assert_eq!(h.lag(), 0, "dry run changed nothing");

    offsets::reset(
        k,
        &k.group_id,
        &k.changes_topic,
        ResetTo::Earliest,
        false,
        true,
    )
    .unwrap();
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

    offsets::reset(
        k,
        &k.group_id,
        &k.changes_topic,
        ResetTo::Latest,
        false,
        true,
    )
    .unwrap();
    assert_eq!(h.lag(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_to_a_time_rebuilds_the_store_as_of_that_time() {
    let h = Harness::new("replay").await;
    let events = churn(50, 600, 12);
    let (before, after) = events.split_at(300);
    let publisher = h.publisher(Format::Avro);
    publisher.publish_all(before).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let cut = graphcdc_core::unix_ms();
    tokio::time::sleep(Duration::from_millis(500)).await;
    publisher.publish_all(after).await.unwrap();

    let shadow = |name: &str| {
        let mut config = h.config.clone();
        config.sink = graphcdc_core::config::SinkConfig::Embedded {
            path: h.dir.path().join(name),
        };
        let sink = graphcdc_core::sink::open(&config.sink).unwrap();
        (config, sink)
    };
    let (config, sink) = shadow("as-of-cut");
    let report = replay::replay(&config, sink.clone(), Start::Beginning, Some(cut))
        .await
        .unwrap();
    assert_eq!(report.records, 300, "only what was written before the cut");
    let cmp = Model::of(before).compare(sink.as_ref()).await;
    assert!(cmp.is_exact(), "the store as of the cut: {cmp:?}");

    let (config, sink) = shadow("now");
    replay::replay(&config, sink.clone(), Start::Beginning, None)
        .await
        .unwrap();
    let cmp = Model::of(&events).compare(sink.as_ref()).await;
    assert!(cmp.is_exact(), "deleted entities stay deleted: {cmp:?}");
}
