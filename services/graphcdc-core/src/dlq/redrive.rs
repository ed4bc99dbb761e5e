//! `graphcdc dlq redrive`: re-publishing DLQ records to the change topic with their key,
//! value and own headers, plus where each came from.

use super::browse::{header, list, read, REDRIVE_FROM, REDRIVE_TIMESTAMP};
use super::reader::Position;
use super::writer::headers;
use crate::kafka::KafkaConfig;
use crate::kafka::{self, Record};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use std::time::Duration;

/// Whether a redrive leaves a header out: those the processor added to describe the
/// failure, and the marks of an earlier redrive (replaced by new ones).
fn dropped_on_redrive(key: &str) -> bool {
    ["__connect.errors.", "graphcdc.dlq.", "graphcdc.redrive."]
        .iter()
        .any(|prefix| key.starts_with(prefix))
}

/// Which DLQ records a redrive takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every record, from the earliest to the end at the time of the call.
    All,
    /// These records (`--partition-offsets`).
    Positions(Vec<Position>),
}

/// One record of a redrive plan.
#[derive(Debug, Clone)]
pub struct RedriveItem {
    pub record: Record,
    /// Why it is left out (a value truncated on its way into the DLQ).
    pub skipped: Option<String>,
}

/// What a redrive would publish, changing nothing.
#[derive(Debug, Clone)]
pub struct RedrivePlan {
    pub dlq_topic: String,
    pub target_topic: String,
    pub items: Vec<RedriveItem>,
}

impl RedrivePlan {
    /// The records a redrive publishes.
    pub fn to_publish(&self) -> impl Iterator<Item = &Record> {
        self.items
            .iter()
            .filter(|i| i.skipped.is_none())
            .map(|i| &i.record)
    }
}

/// Read the records of `selection` from the DLQ of `kafka_config` and plan their redrive
/// to its change topic.
///
/// # Errors
/// As [`list`] and [`read`].
pub async fn plan_redrive(
    kafka_config: &KafkaConfig,
    selection: &Selection,
) -> crate::error::Result<RedrivePlan> {
    let dlq = &kafka_config.dlq_topic;
    let records = match selection {
        Selection::All => list(kafka_config, dlq, None).await?,
        Selection::Positions(positions) => {
            read(kafka_config, dlq, "--partition-offsets", positions).await?
        }
    };
    let items = records
        .into_iter()
        .map(|record| RedriveItem {
            skipped: skip_reason(&record),
            record,
        })
        .collect();
    Ok(RedrivePlan {
        dlq_topic: dlq.clone(),
        target_topic: kafka_config.changes_topic.clone(),
        items,
    })
}

/// Why a redrive leaves `record` out: a value truncated on its way into the DLQ is not
/// the event any more.
fn skip_reason(record: &Record) -> Option<String> {
    header(record, headers::TRUNCATED).map(|from| {
        format!("value truncated in the DLQ (was {from} bytes): not the event any more")
    })
}

/// The headers a redriven copy of `record` carries.
fn redrive_headers(record: &Record, dlq_topic: &str, now_ms: i64) -> OwnedHeaders {
    let mut out = OwnedHeaders::new_with_capacity(record.headers.len() + 2);
    for (key, value) in record
        .headers
        .iter()
        .filter(|(k, _)| !dropped_on_redrive(k))
    {
        out = out.insert(Header {
            key,
            value: value.as_deref(),
        });
    }
    let from = format!("{dlq_topic}/{}/{}", record.partition, record.offset);
    let at = now_ms.to_string();
    for (key, value) in [(REDRIVE_FROM, from), (REDRIVE_TIMESTAMP, at)] {
        out = out.insert(Header {
            key,
            value: Some(value.as_bytes()),
        });
    }
    out
}

/// Publish the records of `plan` to its target topic (the change topic) and wait until
/// the broker acknowledged each; returns how many were published.
///
/// # Errors
/// The first record the broker did not acknowledge (records sent before it may have been
/// published: a redrive can be repeated safely).
pub async fn execute_redrive(
    kafka_config: &KafkaConfig,
    plan: &RedrivePlan,
) -> crate::error::Result<usize> {
    let producer = kafka::producer(kafka_config)?;
    let now_ms = crate::unix_ms();
    let sends = plan.to_publish().map(|record| {
        let producer = &producer;
        async move {
            let mut out: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&plan.target_topic)
                .headers(redrive_headers(record, &plan.dlq_topic, now_ms));
            if let Some(key) = &record.key {
                out = out.key(key.as_slice());
            }
            if let Some(value) = &record.payload {
                out = out.payload(value.as_slice());
            }
            producer
                .send(out, Duration::from_secs(30))
                .await
                .map_err(|(e, _)| {
                    crate::error::err!(
                        External,
                        "redriving {}/{}/{} to {}: {e}",
                        plan.dlq_topic,
                        record.partition,
                        record.offset,
                        plan.target_topic
                    )
                })
        }
    });
    let published = futures::future::try_join_all(sends).await?;
    Ok(published.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redriven_record_keeps_its_own_headers_and_says_where_it_came_from() {
        use rdkafka::message::Headers;
        let record = Record {
            topic: "graph.changes.dlq".into(),
            partition: 2,
            offset: 9,
            key: Some(b"k".to_vec()),
            payload: Some(b"{}".to_vec()),
            headers: vec![
                ("traceparent".into(), Some(b"00-abc-def-01".to_vec())),
                (headers::MESSAGE.into(), Some(b"boom".to_vec())),
                (headers::TRUNCATED.into(), Some(b"10".to_vec())),
                (REDRIVE_FROM.into(), Some(b"old/0/0".to_vec())),
            ],
            timestamp_ms: None,
        };
        assert_eq!(
            skip_reason(&record).as_deref(),
            Some("value truncated in the DLQ (was 10 bytes): not the event any more")
        );
        let out = redrive_headers(&record, "graph.changes.dlq", 1_234);
        let got: Vec<(String, String)> = out
            .iter()
            .map(|h| {
                (
                    h.key.to_owned(),
                    String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("traceparent".to_owned(), "00-abc-def-01".to_owned()),
                (REDRIVE_FROM.to_owned(), "graph.changes.dlq/2/9".to_owned()),
                (REDRIVE_TIMESTAMP.to_owned(), "1234".to_owned()),
            ]
        );
    }
}
