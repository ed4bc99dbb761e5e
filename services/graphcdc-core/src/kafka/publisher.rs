//! The keyed publisher: change events to the change topic and the state they leave to the
//! compacted state topic (a tombstone, with its version in a header, for deletes).

use super::client::producer;
use super::config::KafkaConfig;
use crate::codec::{Codec, Format};
use crate::event::ChangeEvent;
use rdkafka::message::{Header, OwnedHeaders, ToBytes};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::Duration;

/// Header of a state-topic tombstone holding the version of the delete (decimal text).
pub const STATE_VERSION_HEADER: &str = "graphcdc.version";

/// How long a produce may wait in the local queue when it is full.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

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
    ) -> crate::error::Result<Self> {
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
    pub async fn publish(&self, event: &ChangeEvent) -> crate::error::Result<()> {
        self.publish_all(std::slice::from_ref(event)).await
    }

    /// Publish `events` in order (per-key order is kept) to both topics and wait for
    /// every acknowledgement.
    ///
    /// # Errors
    /// When encoding fails or the broker does not acknowledge a record.
    pub async fn publish_all(&self, events: &[ChangeEvent]) -> crate::error::Result<()> {
        self.send(events, Topics::Both).await
    }

    /// Publish `events` to the change topic only (e.g. corrective events of the
    /// reconciler: the state topic already holds the truth).
    ///
    /// # Errors
    /// As [`ChangePublisher::publish_all`].
    pub async fn publish_changes(&self, events: &[ChangeEvent]) -> crate::error::Result<()> {
        self.send(events, Topics::Changes).await
    }

    /// Publish the state each event leaves (a tombstone for deletes) to the state topic
    /// only.
    ///
    /// # Errors
    /// As [`ChangePublisher::publish_all`].
    pub async fn publish_states(&self, events: &[ChangeEvent]) -> crate::error::Result<()> {
        self.send(events, Topics::State).await
    }

    async fn send(&self, events: &[ChangeEvent], topics: Topics) -> crate::error::Result<()> {
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
                    self.deliver(record).await
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
                    self.deliver(record).await
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
    pub async fn publish_raw(&self, key: &str, value: &[u8]) -> crate::error::Result<()> {
        self.deliver(
            FutureRecord::to(&self.changes_topic)
                .key(key)
                .payload(value),
        )
        .await
    }

    /// Send `record` and wait for the broker's acknowledgement.
    async fn deliver<K, P>(&self, record: FutureRecord<'_, K, P>) -> crate::error::Result<()>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let topic = record.topic;
        self.producer
            .send(record, SEND_TIMEOUT)
            .await
            .map(drop)
            .map_err(|(e, _)| {
                crate::error::Error::Kafka(e).context(format!("publishing to {topic}"))
            })
    }
}
