//! `graphcdc dlq list|show|redrive` against a real broker: the processor sends poison
//! events to the DLQ, the binary lists and shows them, a redrive previews by default and
//! publishes only with `--execute`, and a redriven record is applied once its cause is
//! gone.

mod support;

use graphcdc_core::codec::Format;
use graphcdc_core::dlq::headers;
use graphcdc_core::dlq::{REDRIVE_FROM, REDRIVE_TIMESTAMP};
use graphcdc_core::event::Op;
use graphcdc_core::mapping::point_id;
use graphcdc_core::sink::SinkError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use support::{doc, read_topic, Call, FaultySink, Harness, COLLECTION};

/// Run the binary with `args` and this test's config; stdout, or stderr on failure.
fn cli(h: &Harness, args: &[&str]) -> Result<String, String> {
    let out = tokio::task::block_in_place(|| h.cli(args));
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// `dlq list --format json`.
fn list(h: &Harness) -> Vec<Value> {
    let out = cli(h, &["dlq", "list", "--format", "json"]).unwrap();
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Sum of the change topic's high watermarks: what was ever published to it.
fn published(h: &Harness) -> i64 {
    let k = &h.config.kafka;
    graphcdc_core::kafka::group_offsets(k, &k.group_id, &k.changes_topic)
        .unwrap()
        .iter()
        .map(|p| p.high)
        .sum()
}

fn position(entry: &Value) -> String {
    format!("{}:{}", entry["partition"], entry["offset"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_list_show_and_redrive_through_the_binary() {
    let h = Harness::new("dlq-cli").await;
    let k = h.config.kafka.clone();
    let publisher = h.publisher(Format::Avro);
    publisher
        .publish(&doc("before", 1, Op::Upsert))
        .await
        .unwrap();
    let garbage = FutureRecord::to(&k.changes_topic)
        .key("garbage-key")
        .payload(b"\x13 definitely not an event".as_slice())
        .headers(OwnedHeaders::new().insert(Header {
            key: "origin",
            value: Some("test".as_bytes()),
        }));
    publisher
        .producer()
        .send(garbage, Duration::from_secs(10))
        .await
        .unwrap();
    publisher
        .publish(&doc("culprit", 1, Op::Upsert))
        .await
        .unwrap();
    publisher
        .publish(&doc("after", 1, Op::Upsert))
        .await
        .unwrap();

    // The sink refuses the culprit (say, a payload Qdrant rejects until an index is
    // fixed): it goes to the DLQ with the garbage, and the stream goes on.
    let culprit = point_id(COLLECTION, "culprit");
    let store = h.open_sink();
    let refusing = Arc::new(FaultySink::new(store.clone(), move |call| match call {
        Call::Write(points) if points.iter().any(|p| p.id == culprit) => {
            Some(SinkError::Rejected("injected: refused payload".into()))
        }
        _ => None,
    }));
    h.process_to_end(refusing).await;
    assert!(store.get(COLLECTION, culprit).await.unwrap().is_none());

    // dlq list: both records with their error headers, then exit.
    let entries = list(&h);
    assert_eq!(entries.len(), 2, "{entries:?}");
    let by_key = |key: &str| {
        entries
            .iter()
            .find(|e| e["key"] == key)
            .unwrap_or_else(|| panic!("{key} in {entries:?}"))
            .clone()
    };
    let (bad, refused) = (by_key("garbage-key"), by_key("culprit"));
    let errors = &bad["error_headers"];
    assert_eq!(errors[headers::CLASS_NAME], "graphcdc.Undecodable");
    assert_eq!(errors[headers::TOPIC], k.changes_topic.as_str());
    assert!(
        errors.get("origin").is_none(),
        "only error headers: {errors}"
    );
    assert!(bad["timestamp_ms"].as_i64().unwrap() > 0);
    let errors = &refused["error_headers"];
    assert_eq!(errors[headers::CLASS_NAME], "graphcdc.SinkRejected");
    assert!(errors[headers::MESSAGE]
        .as_str()
        .unwrap()
        .contains("injected: refused payload"));
    let table = cli(&h, &["dlq", "list"]).unwrap();
    assert!(table.contains("garbage-key"), "{table}");
    assert!(
        table.contains("graphcdc.SinkRejected: sink rejected the request: injected"),
        "{table}"
    );
    assert!(
        table.contains("__connect.errors.stage: VALUE_CONVERTER"),
        "{table}"
    );
    assert!(table.contains("2 record(s)"), "{table}");
    let limited = cli(&h, &["dlq", "list", "--limit", "1", "--format", "json"]).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&limited)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // dlq show: every header; the value decoded, or the decode error and a preview.
    let shown = cli(&h, &["dlq", "show", &position(&bad)]).unwrap();
    assert!(shown.contains("origin: test"), "{shown}");
    assert!(shown.contains("decode error: "), "{shown}");
    assert!(shown.contains("definitely not an event"), "{shown}");
    assert!(shown.contains("value (hex): 13 20 64 65"), "{shown}");
    let shown = cli(
        &h,
        &["dlq", "show", &position(&refused), "--format", "json"],
    )
    .unwrap();
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["value"]["decoded"], "event");
    assert_eq!(shown["value"]["event"]["key"], "culprit");
    assert_eq!(shown["value"]["event"]["version"], 1);
    assert_eq!(shown["headers"][headers::STAGE], "TASK_PUT");
    let err = cli(&h, &["dlq", "show", "0:99999"]).unwrap_err();
    assert!(
        err.contains("PARTITION:OFFSET: no record at 0:99999"),
        "{err}"
    );
    let err = cli(&h, &["dlq", "show", "zero"]).unwrap_err();
    assert!(err.contains("is not PARTITION:OFFSET"), "{err}");

    // dlq redrive previews by default: nothing published.
    let before = published(&h);
    assert_eq!(before, 4);
    let preview = cli(&h, &["dlq", "redrive", "--all"]).unwrap();
    assert!(preview.contains("preview: nothing published"), "{preview}");
    assert!(preview.contains("2 record(s)"), "{preview}");
    let preview = cli(
        &h,
        &["dlq", "redrive", "--partition-offsets", &position(&refused)],
    )
    .unwrap();
    assert!(preview.contains("1 record(s)"), "{preview}");
    assert_eq!(published(&h), before, "a preview publishes nothing");
    let err = cli(
        &h,
        &["dlq", "redrive", "--partition-offsets", "0:x", "--execute"],
    )
    .unwrap_err();
    assert!(err.contains("--partition-offsets"), "{err}");
    assert_eq!(published(&h), before);

    // --execute publishes the record with its key, value and own headers, and where it
    // came from.
    let out = cli(
        &h,
        &[
            "dlq",
            "redrive",
            "--partition-offsets",
            &position(&refused),
            "--execute",
        ],
    )
    .unwrap();
    assert!(out.contains("published 1 record(s)"), "{out}");
    assert_eq!(published(&h), before + 1);
    let dlq = read_topic(&h, &k.dlq_topic, 2).await;
    let original = dlq
        .iter()
        .find(|r| r.key.as_deref() == Some(b"culprit".as_slice()))
        .unwrap();
    let changes = read_topic(&h, &k.changes_topic, 5).await;
    let redriven: Vec<_> = changes
        .iter()
        .filter(|r| r.headers.contains_key(REDRIVE_FROM))
        .collect();
    assert_eq!(redriven.len(), 1);
    let copy = redriven[0];
    assert_eq!(copy.key.as_deref(), Some(b"culprit".as_slice()));
    assert_eq!(copy.value, original.value);
    assert_eq!(
        copy.headers[REDRIVE_FROM],
        format!(
            "{}/{}/{}",
            k.dlq_topic, refused["partition"], refused["offset"]
        )
    );
    let at: i64 = copy.headers[REDRIVE_TIMESTAMP].parse().unwrap();
    assert!((graphcdc_core::unix_ms() - at).abs() < 600_000, "{at}");
    assert!(
        copy.headers
            .keys()
            .all(|k| !k.starts_with("__connect.errors.")),
        "the failure's headers stay in the DLQ: {:?}",
        copy.headers
    );

    // The cause is gone: the redriven record is applied.
    h.process_to_end(store.clone()).await;
    let point = store
        .get(COLLECTION, culprit)
        .await
        .unwrap()
        .expect("applied");
    assert_eq!(point.version, 1);
    assert!(!point.deleted);

    // Redriving everything again: the garbage fails again and comes back to the DLQ,
    // marked as a redrive; the culprit is fenced (already applied).
    let out = cli(&h, &["dlq", "redrive", "--all", "--execute"]).unwrap();
    assert!(out.contains("published 2 record(s)"), "{out}");
    assert_eq!(published(&h), before + 3);
    // The garbage keeps its own header on the way back to the change topic.
    let garbage = read_topic(&h, &k.changes_topic, (before + 3) as usize).await;
    let garbage = garbage
        .iter()
        .find(|r| {
            r.key.as_deref() == Some(b"garbage-key".as_slice())
                && r.headers.contains_key(REDRIVE_FROM)
        })
        .expect("the redriven garbage");
    assert_eq!(
        garbage.headers.get("origin").map(String::as_str),
        Some("test")
    );
    h.process_to_end(store.clone()).await;
    let entries = list(&h);
    assert_eq!(entries.len(), 3, "{entries:?}");
    let again = entries
        .iter()
        .find(|e| !e["error_headers"][REDRIVE_FROM].is_null())
        .expect("the garbage failed again");
    assert_eq!(again["key"], "garbage-key");
    assert_eq!(
        again["error_headers"][REDRIVE_FROM],
        format!("{}/{}", k.dlq_topic, position(&bad).replace(':', "/"))
    );
}
