//! Kafka plumbing shared by every service: client config, topic set-up, the keyed
//! producer of change/state records, and owned copies of consumed records.

use crate::codec::{Codec, Format};
use crate::config::KafkaConfig;
use crate::event::ChangeEvent;
use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use std::time::Duration;

/// Timeout of metadata and admin requests.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Header of a state-topic tombstone holding the version of the delete (decimal text).
pub const STATE_VERSION_HEADER: &str = "graphcdc.version";

/// How long a produce may wait in the local queue when it is full.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Base client config: bootstrap servers plus the pass-through properties.
pub fn client_config(kafka: &KafkaConfig) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &kafka.bootstrap_servers);
    for (key, value) in &kafka.properties {
        config.set(key, value.expose());
    }
    config
}

/// Set each `(key, value)` in `config` unless `[kafka.properties]` sets that key.
pub fn set_defaults(config: &mut ClientConfig, kafka: &KafkaConfig, defaults: &[(&str, &str)]) {
    for (key, value) in defaults {
        if !kafka.properties.contains_key(*key) {
            config.set(*key, *value);
        }
    }
}

/// A producer that waits for all in-sync replicas and never duplicates on retry, and
/// partitions keys like the Java client (murmur2), so keys land where other tools expect.
///
/// # Errors
/// When librdkafka rejects a configuration property.
pub fn producer(kafka: &KafkaConfig) -> anyhow::Result<FutureProducer> {
    let mut config = client_config(kafka);
    set_defaults(
        &mut config,
        kafka,
        &[
            ("acks", "all"),
            ("enable.idempotence", "true"),
            ("partitioner", "murmur2_random"),
            ("linger.ms", "5"),
            ("message.timeout.ms", "30000"),
        ],
    );
    config.create().context("creating Kafka producer")
}

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

/// Cleanup policy of a topic to create.
#[derive(Debug, Clone, Copy)]
pub enum Cleanup {
    /// History: keep by time.
    Delete,
    /// Latest value per key.
    Compact,
}

/// Create the topics that do not exist yet.
///
/// # Errors
/// When metadata cannot be fetched or the broker refuses to create a topic.
pub async fn ensure_topics(
    kafka: &KafkaConfig,
    topics: &[(&str, Cleanup)],
    partitions: i32,
) -> anyhow::Result<()> {
    let probe: BaseConsumer = client_config(kafka)
        .create()
        .context("creating metadata client")?;
    let metadata = tokio::task::block_in_place(|| probe.fetch_metadata(None, ADMIN_TIMEOUT))
        .context("fetching topic metadata")?;
    let existing: Vec<&str> = metadata.topics().iter().map(|t| t.name()).collect();
    let missing: Vec<_> = topics
        .iter()
        .filter(|(name, _)| !existing.contains(name))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = client_config(kafka)
        .create()
        .context("creating admin client")?;
    let new_topics: Vec<NewTopic> = missing
        .iter()
        .map(|(name, cleanup)| {
            let policy = match cleanup {
                Cleanup::Delete => "delete",
                Cleanup::Compact => "compact",
            };
            NewTopic::new(name, partitions, TopicReplication::Fixed(1))
                .set("cleanup.policy", policy)
        })
        .collect();
    let results = admin
        .create_topics(
            &new_topics,
            &AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT)),
        )
        .await
        .context("creating topics")?;
    for result in results {
        match result {
            Ok(_) => {}
            Err((name, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::debug!(topic = %name, "topic created concurrently");
            }
            Err((name, code)) => anyhow::bail!("creating topic {name}: {code}"),
        }
    }
    Ok(())
}

/// Which topics a publish writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Topics {
    Both,
    Changes,
    State,
}

/// Publishes change events keyed by entity key to the change topic, and their state to
/// the compacted state topic (a tombstone for deletes).
pub struct ChangePublisher {
    producer: FutureProducer,
    codec: std::sync::Arc<Codec>,
    changes_topic: String,
    state_topic: String,
    format: Format,
}

impl ChangePublisher {
    /// A publisher writing `format` to the topics of `kafka`.
    ///
    /// # Errors
    /// When the producer cannot be created.
    pub fn new(
        kafka: &KafkaConfig,
        codec: std::sync::Arc<Codec>,
        format: Format,
    ) -> anyhow::Result<Self> {
        Ok(ChangePublisher {
            producer: producer(kafka)?,
            codec,
            changes_topic: kafka.changes_topic.clone(),
            state_topic: kafka.state_topic.clone(),
            format,
        })
    }

    /// The underlying producer (for raw records, e.g. poison events in tests).
    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    /// Publish `event` to the change topic and its state to the state topic; returns once
    /// both are acknowledged.
    ///
    /// # Errors
    /// When encoding fails or the broker does not acknowledge.
    pub async fn publish(&self, event: &ChangeEvent) -> anyhow::Result<()> {
        self.publish_all(std::slice::from_ref(event)).await
    }

    /// Publish `events` in order (per-key order is kept) to both topics and wait for
    /// every acknowledgement.
    ///
    /// # Errors
    /// When encoding fails or the broker does not acknowledge a record.
    pub async fn publish_all(&self, events: &[ChangeEvent]) -> anyhow::Result<()> {
        self.send(events, Topics::Both).await
    }

    /// Publish `events` to the change topic only (e.g. corrective events of the
    /// reconciler: the state topic already holds the truth).
    ///
    /// # Errors
    /// As [`ChangePublisher::publish_all`].
    pub async fn publish_changes(&self, events: &[ChangeEvent]) -> anyhow::Result<()> {
        self.send(events, Topics::Changes).await
    }

    /// Publish the state each event leaves (a tombstone for deletes) to the state topic
    /// only.
    ///
    /// # Errors
    /// As [`ChangePublisher::publish_all`].
    pub async fn publish_states(&self, events: &[ChangeEvent]) -> anyhow::Result<()> {
        self.send(events, Topics::State).await
    }

    async fn send(&self, events: &[ChangeEvent], topics: Topics) -> anyhow::Result<()> {
        // An event without trace context continues the current span's trace (relay
        // rounds, repairs).
        let current = crate::telemetry::current_traceparent();
        let mut encoded = Vec::with_capacity(events.len());
        for event in events {
            let value = self.codec.encode_change(event, self.format).await?;
            let state = match event.to_state() {
                Some(state) => Some(self.codec.encode_state(&state, self.format).await?),
                None => None,
            };
            let traceparent = event.traceparent.as_deref().or(current.as_deref());
            encoded.push((event, value, state, traceparent));
        }
        let sends = encoded
            .iter()
            .map(|(event, value, state, traceparent)| async move {
                let change_send = async {
                    if topics == Topics::State {
                        return Ok(());
                    }
                    let mut headers = OwnedHeaders::new();
                    if let Some(traceparent) = traceparent {
                        headers = headers.insert(Header {
                            key: crate::telemetry::TRACEPARENT,
                            value: Some(traceparent.as_bytes()),
                        });
                    }
                    let record = FutureRecord::to(&self.changes_topic)
                        .key(event.key.as_bytes())
                        .payload(value)
                        .headers(headers);
                    self.producer
                        .send(record, SEND_TIMEOUT)
                        .await
                        .map(drop)
                        .map_err(|(e, _)| {
                            anyhow::anyhow!("publishing to {}: {e}", self.changes_topic)
                        })
                };
                let state_send = async {
                    if topics == Topics::Changes {
                        return Ok(());
                    }
                    let mut record: FutureRecord<'_, [u8], Vec<u8>> =
                        FutureRecord::to(&self.state_topic).key(event.key.as_bytes());
                    let version = event.version.to_string();
                    match state {
                        Some(state) => record = record.payload(state),
                        // A tombstone has no value: its version goes in a header, so a
                        // reader can tell it from an older record of the key.
                        None => {
                            record = record.headers(OwnedHeaders::new().insert(Header {
                                key: STATE_VERSION_HEADER,
                                value: Some(version.as_bytes()),
                            }))
                        }
                    }
                    self.producer
                        .send(record, SEND_TIMEOUT)
                        .await
                        .map(drop)
                        .map_err(|(e, _)| {
                            anyhow::anyhow!("publishing to {}: {e}", self.state_topic)
                        })
                };
                tokio::try_join!(change_send, state_send).map(drop)
            });
        futures::future::try_join_all(sends).await?;
        Ok(())
    }

    /// Publish raw bytes under `key` to the change topic (poison events in tests and demo).
    ///
    /// # Errors
    /// When the broker does not acknowledge.
    pub async fn publish_raw(&self, key: &str, value: &[u8]) -> anyhow::Result<()> {
        self.producer
            .send(
                FutureRecord::to(&self.changes_topic)
                    .key(key)
                    .payload(value),
                SEND_TIMEOUT,
            )
            .await
            .map_err(|(e, _)| anyhow::anyhow!("publishing to {}: {e}", self.changes_topic))?;
        Ok(())
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
) -> anyhow::Result<Option<Record>> {
    anyhow::ensure!(std::time::Instant::now() < deadline, "timed out: {task}");
    match tokio::task::block_in_place(|| consumer.poll(Duration::from_millis(200))) {
        None => Ok(None),
        Some(message) => Ok(Some(Record::from_message(
            &message.with_context(|| task.to_owned())?,
        ))),
    }
}

/// Partition ids of `topic`.
///
/// # Errors
/// When metadata cannot be fetched or the topic has no partitions.
pub fn partition_ids<C: rdkafka::consumer::ConsumerContext, K: Consumer<C>>(
    consumer: &K,
    topic: &str,
) -> anyhow::Result<Vec<i32>> {
    let metadata = consumer
        .fetch_metadata(Some(topic), ADMIN_TIMEOUT)
        .with_context(|| format!("fetching metadata of {topic}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    anyhow::ensure!(!partitions.is_empty(), "topic {topic} has no partitions");
    Ok(partitions)
}

/// Total lag of consumer group `group` on `topic` (see [`crate::inspect::offsets::show`]).
///
/// # Errors
/// When metadata, watermarks or committed offsets cannot be fetched.
pub fn group_lag(kafka: &KafkaConfig, group: &str, topic: &str) -> anyhow::Result<i64> {
    Ok(crate::inspect::offsets::show(kafka, group, topic)?
        .iter()
        .map(|p| p.lag)
        .sum())
}
