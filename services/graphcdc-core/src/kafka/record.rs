//! Consumed records, owned so they outlive the consumer's borrow, a poll for one, and a
//! reader of a whole topic from its beginning.

use super::client::{client_config, set_defaults};
use super::config::KafkaConfig;
use super::topics::partition_ids;
use crate::error::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::time::Duration;

/// A record as consumed, owned, so it can outlive the consumer's borrow.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Broker or producer timestamp in ms, when known.
    pub timestamp_ms: Option<i64>,
}

impl Record {
    /// An owned copy of `message`.
    pub fn from_message<M: Message>(message: &M) -> Self {
        Record {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
            headers: message
                .headers()
                .map(|headers| {
                    headers
                        .iter()
                        .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default(),
            timestamp_ms: message.timestamp().to_millis(),
        }
    }
}

/// Poll `consumer` once (up to 200 ms, on the blocking pool) for an owned record;
/// `None` when nothing arrived.
///
/// # Errors
/// "timed out: {task}" once `deadline` has passed; consumer errors.
pub fn poll_record(
    consumer: &BaseConsumer,
    deadline: std::time::Instant,
    task: &str,
) -> crate::error::Result<Option<Record>> {
    crate::error::ensure!(
        std::time::Instant::now() < deadline,
        External,
        "timed out: {task}"
    );
    match tokio::task::block_in_place(|| consumer.poll(Duration::from_millis(200))) {
        None => Ok(None),
        Some(message) => Ok(Some(Record::from_message(
            &message.with_context(|| task.to_owned())?,
        ))),
    }
}

/// A consumer of every partition of `topic` from its beginning, in `group` but never
/// committing: a reader of the whole (compacted) state topic.
///
/// # Errors
/// When the consumer cannot be created or the topic has no partitions.
pub fn read_from_beginning(
    kafka: &KafkaConfig,
    topic: &str,
    group: &str,
) -> crate::error::Result<BaseConsumer> {
    let mut config = client_config(kafka);
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false");
    // A broker answers a connection's requests in order, so each watermark query waits
    // behind a fetch parked at the end of the log for up to this long: at librdkafka's
    // 500 ms default, checking 32 partitions after catching up took 16 s.
    set_defaults(&mut config, kafka, &[("fetch.wait.max.ms", "10")]);
    let consumer: BaseConsumer = config
        .create()
        .with_context(|| format!("creating a reader of {topic}"))?;
    let mut assignment = TopicPartitionList::new();
    for p in partition_ids(&consumer, topic)? {
        assignment.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer
        .assign(&assignment)
        .with_context(|| format!("assigning the partitions of {topic}"))?;
    Ok(consumer)
}
