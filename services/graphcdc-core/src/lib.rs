//! graphcdc: keeps a Qdrant vector store in sync with a Neo4j graph through Kafka.
//!
//! - [`event`]: the one event model (change events and entity states).
//! - [`capture`]: the Neo4j outbox relay and the backfill.
//! - [`codec`]: Avro (Confluent wire format) and JSON encoding of the contract.
//! - [`config`]: configuration, validated at start.
//! - [`mapping`]: from events to version-fenced point writes.
//! - [`sink`]: the [`sink::VectorSink`] trait, Qdrant server and embedded Qdrant.
//! - [`processor`]: the consumer group member applying the change topic to a sink.
//! - [`reconcile`]: drift detection and repair against the compacted state topic.
//! - [`inspect`]: entity history and consumer-group offsets.
//! - [`kafka`]: client config, topics, the keyed change publisher.
//! - [`ops`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`stats`]: counters and health shared with the metrics endpoint.
//! - [`telemetry`]: logs, trace context in Kafka headers, OTLP export.

pub mod capture;
pub mod codec;
pub mod config;
pub mod demo;
pub mod error;
pub mod event;
pub mod inspect;
pub mod kafka;
pub mod mapping;
pub mod ops;
pub mod processor;
pub mod reconcile;
pub mod sink;
pub mod stats;
pub mod telemetry;

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
