//! Dead-letter queue: poison records keep their key, value and headers and gain the
//! Kafka Connect error headers, so the usual DLQ tooling can read them.

use crate::error::PoisonError;
use crate::kafka::Record;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::Duration;

/// Header names, as written by Kafka Connect's `errors.deadletterqueue.context.headers.enable`.
pub mod headers {
    pub const TOPIC: &str = "__connect.errors.topic";
    pub const PARTITION: &str = "__connect.errors.partition";
    pub const OFFSET: &str = "__connect.errors.offset";
    pub const CLASS_NAME: &str = "__connect.errors.exception.class.name";
    pub const MESSAGE: &str = "__connect.errors.exception.message";
    pub const STAGE: &str = "__connect.errors.stage";
    pub const CONNECTOR: &str = "__connect.errors.connector.name";
}

/// Produces poison records to the DLQ topic.
pub struct DeadLetterQueue {
    producer: FutureProducer,
    topic: String,
    /// Written as the connector name: the consumer group of the sink.
    group_id: String,
}

impl DeadLetterQueue {
    /// A DLQ writing to `topic` on behalf of consumer group `group_id`.
    pub fn new(producer: FutureProducer, topic: String, group_id: String) -> Self {
        DeadLetterQueue {
            producer,
            topic,
            group_id,
        }
    }

    /// Send every `(record, error)` and wait until the broker acknowledged them all.
    ///
    /// # Errors
    /// The first delivery failure: the caller retries the batch, nothing is committed.
    pub async fn send_all(&self, poisoned: &[(&Record, PoisonError)]) -> anyhow::Result<()> {
        let sends = poisoned.iter().map(|(record, error)| async move {
            let headers = error_headers(record, error, &self.group_id);
            let mut out: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.topic).headers(headers);
            if let Some(key) = &record.key {
                out = out.key(key.as_slice());
            }
            if let Some(payload) = &record.payload {
                out = out.payload(payload.as_slice());
            }
            self.producer
                .send(out, Duration::from_secs(30))
                .await
                .map_err(|(e, _)| anyhow::anyhow!("producing to DLQ {}: {e}", self.topic))
        });
        futures::future::try_join_all(sends).await?;
        Ok(())
    }
}

fn error_headers(record: &Record, error: &PoisonError, connector: &str) -> OwnedHeaders {
    let mut out = OwnedHeaders::new_with_capacity(record.headers.len() + 8);
    // The record keeps its own trace context; one without any gets the batch's.
    let has_context = record
        .headers
        .iter()
        .any(|(key, _)| key.eq_ignore_ascii_case(crate::telemetry::TRACEPARENT));
    if let Some(tp) = crate::telemetry::current_traceparent().filter(|_| !has_context) {
        out = out.insert(Header {
            key: crate::telemetry::TRACEPARENT,
            value: Some(tp.as_bytes()),
        });
    }
    for (key, value) in &record.headers {
        out = out.insert(Header {
            key,
            value: value.as_deref(),
        });
    }
    let stage = match error.kind {
        crate::error::PoisonKind::Undecodable | crate::error::PoisonKind::SchemaMismatch => {
            "VALUE_CONVERTER"
        }
        _ => "TASK_PUT",
    };
    let partition = record.partition.to_string();
    let offset = record.offset.to_string();
    for (key, value) in [
        (headers::TOPIC, record.topic.as_str()),
        (headers::PARTITION, partition.as_str()),
        (headers::OFFSET, offset.as_str()),
        (headers::CLASS_NAME, error.kind.class_name()),
        (headers::MESSAGE, error.message.as_str()),
        (headers::STAGE, stage),
        (headers::CONNECTOR, connector),
    ] {
        out = out.insert(Header {
            key,
            value: Some(value.as_bytes()),
        });
    }
    out
}
