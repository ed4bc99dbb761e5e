//! Writing to the dead-letter queue (the processor's poison records).

use crate::error::PoisonError;
use crate::kafka::Record;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::Duration;

/// librdkafka's default `message.max.bytes`.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1_000_000;

/// Room kept for the record's framing (batch header, offsets, header lengths).
const RECORD_OVERHEAD: usize = 512;

/// The error message header is cut to this many bytes (a record must fit the DLQ).
const MAX_MESSAGE_HEADER_BYTES: usize = 4 * 1024;

/// Value sizes tried, in order, once the broker said the record is too large
/// (its `max.message.bytes` may be below the producer's limit).
const FALLBACK_VALUE_BYTES: [usize; 2] = [64 * 1024, 0];

/// Why the DLQ did not take a record.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// Broker unreachable, timeouts, a full queue: retry the batch.
    #[error("producing to DLQ {topic} failed (retrying): {error}")]
    Transient { topic: String, error: KafkaError },
    /// The DLQ refuses records for good: stop the process.
    #[error("the DLQ topic {topic} refuses records ({error}); fix its ACLs, name or size limit and restart")]
    Fatal { topic: String, error: KafkaError },
}

impl From<DlqError> for crate::error::Error {
    fn from(e: DlqError) -> Self {
        crate::error::Error::service(crate::error::ErrorKind::External, e)
    }
}

/// Whether a produce error will not pass by retrying.
pub fn is_permanent(error: &KafkaError) -> bool {
    use RDKafkaErrorCode as C;
    match error.rdkafka_error_code() {
        Some(code) => matches!(
            code,
            C::TopicAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::SaslAuthenticationFailed
                | C::Authentication
                | C::UnknownTopic
                | C::InvalidTopic
                | C::InvalidRecord
                | C::InvalidMessage
                | C::InvalidMessageSize
                | C::MessageSizeTooLarge
                | C::InvalidRequiredAcks
                | C::PolicyViolation
                | C::UnsupportedVersion
                | C::Fatal
                | C::ProducerFenced
        ),
        None => matches!(
            error,
            KafkaError::ClientConfig(..) | KafkaError::ClientCreation(_)
        ),
    }
}

fn too_large(error: &KafkaError) -> bool {
    error.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge)
}

/// Header names, as written by Kafka Connect's `errors.deadletterqueue.context.headers.enable`.
pub mod headers {
    pub const TOPIC: &str = "__connect.errors.topic";
    pub const PARTITION: &str = "__connect.errors.partition";
    pub const OFFSET: &str = "__connect.errors.offset";
    pub const CLASS_NAME: &str = "__connect.errors.exception.class.name";
    pub const MESSAGE: &str = "__connect.errors.exception.message";
    pub const STAGE: &str = "__connect.errors.stage";
    pub const CONNECTOR: &str = "__connect.errors.connector.name";
    /// Set when the record's value was cut to fit the DLQ: its original size in bytes.
    pub const TRUNCATED: &str = "graphcdc.dlq.value.truncated.from.bytes";
}

/// Produces poison records to the DLQ topic.
pub struct DeadLetterQueue {
    producer: FutureProducer,
    topic: String,
    /// Written as the connector name: the consumer group of the sink.
    group_id: String,
    /// The producer's `message.max.bytes`: larger records are truncated before sending.
    max_record_bytes: usize,
}

impl DeadLetterQueue {
    /// A DLQ writing to `topic` on behalf of consumer group `group_id`, whose producer
    /// accepts records up to `max_record_bytes`.
    pub fn new(
        producer: FutureProducer,
        topic: String,
        group_id: String,
        max_record_bytes: usize,
    ) -> Self {
        DeadLetterQueue {
            producer,
            topic,
            group_id,
            max_record_bytes,
        }
    }

    /// Send every `(record, error)` and wait until the broker acknowledged them all.
    ///
    /// # Errors
    /// The first delivery failure: transient (the caller retries the batch, nothing is
    /// committed) or fatal (the caller stops).
    pub async fn send_all(&self, poisoned: &[(&Record, PoisonError)]) -> Result<(), DlqError> {
        let sends = poisoned
            .iter()
            .map(|(record, error)| self.send(record, error));
        let results = futures::future::join_all(sends).await;
        // A fatal error wins over a transient one: retrying cannot help then.
        let mut transient = None;
        for result in results {
            match result {
                Err(fatal @ DlqError::Fatal { .. }) => return Err(fatal),
                Err(e) => transient = Some(e),
                Ok(()) => {}
            }
        }
        transient.map_or(Ok(()), Err)
    }

    /// Send one record, truncated to the producer's limit, and smaller again when the
    /// broker says it is too large.
    async fn send(&self, record: &Record, error: &PoisonError) -> Result<(), DlqError> {
        let headers = error_headers(record, error, &self.group_id);
        let fixed = record.key.as_ref().map_or(0, Vec::len) + headers_len(&headers);
        let value = record.payload.as_deref();
        let fits = self
            .max_record_bytes
            .saturating_sub(fixed + RECORD_OVERHEAD);
        let limits =
            std::iter::once(fits).chain(FALLBACK_VALUE_BYTES.into_iter().filter(|l| *l < fits));
        let mut last = None;
        for limit in limits {
            let (value, headers) = match value {
                Some(v) if v.len() > limit => {
                    (Some(&v[..limit]), truncated(headers.clone(), v.len()))
                }
                _ => (value, headers.clone()),
            };
            let mut out: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.topic).headers(headers);
            if let Some(key) = &record.key {
                out = out.key(key.as_slice());
            }
            if let Some(value) = value {
                out = out.payload(value);
            }
            match self.producer.send(out, Duration::from_secs(30)).await {
                Ok(_) => return Ok(()),
                Err((e, _)) if too_large(&e) => last = Some(e),
                Err((e, _)) => return Err(self.error(e)),
            }
        }
        Err(self.error(last.expect("at least one attempt")))
    }

    fn error(&self, error: KafkaError) -> DlqError {
        let topic = self.topic.clone();
        if is_permanent(&error) {
            DlqError::Fatal { topic, error }
        } else {
            DlqError::Transient { topic, error }
        }
    }
}

/// Bytes of header keys and values.
fn headers_len(headers: &OwnedHeaders) -> usize {
    use rdkafka::message::Headers;
    headers
        .iter()
        .map(|h| h.key.len() + h.value.map_or(0, <[u8]>::len))
        .sum()
}

/// `headers` plus [`headers::TRUNCATED`] with the value's original size.
fn truncated(headers: OwnedHeaders, original_bytes: usize) -> OwnedHeaders {
    headers.insert(Header {
        key: headers::TRUNCATED,
        value: Some(original_bytes.to_string().as_bytes()),
    })
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
    let mut message = error.message.as_str();
    if message.len() > MAX_MESSAGE_HEADER_BYTES {
        let mut end = MAX_MESSAGE_HEADER_BYTES;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message = &message[..end];
    }
    for (key, value) in [
        (headers::TOPIC, record.topic.as_str()),
        (headers::PARTITION, partition.as_str()),
        (headers::OFFSET, offset.as_str()),
        (headers::CLASS_NAME, error.kind.class_name()),
        (headers::MESSAGE, message),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dlq_errors_are_transient_or_permanent() {
        use RDKafkaErrorCode as C;
        let produce = |code| KafkaError::MessageProduction(code);
        for code in [
            C::MessageTimedOut,
            C::QueueFull,
            C::BrokerNotAvailable,
            C::LeaderNotAvailable,
            C::NotLeaderForPartition,
            C::UnknownTopicOrPartition,
            C::RequestTimedOut,
            C::NotEnoughReplicas,
            C::AllBrokersDown,
        ] {
            assert!(!is_permanent(&produce(code)), "{code:?} is transient");
        }
        for code in [
            C::TopicAuthorizationFailed,
            C::ClusterAuthorizationFailed,
            C::UnknownTopic,
            C::InvalidTopic,
            C::MessageSizeTooLarge,
            C::Fatal,
            C::PolicyViolation,
        ] {
            assert!(is_permanent(&produce(code)), "{code:?} is permanent");
        }
    }
}
