//! graphcdc: keeps a Qdrant vector store in sync with a Neo4j graph through Kafka.
//!
//! - [`event`], [`codec`], [`mapping`], [`settings`]: the contract, from the
//!   `graphcdc-contract` crate (the one event model, Avro/JSON, point writes).
//! - [`config`]: the whole configuration, put together from each component's section.
//! - [`error`]: the library's typed errors, by kind (config, external, internal).
//! - [`capture`]: the Neo4j outbox relay and the backfill.
//! - [`sink`]: the [`sink::VectorSink`] trait, Qdrant server and embedded Qdrant.
//! - [`processor`]: the consumer group member applying the change topic to a sink.
//! - [`embed`]: vectors computed on the way for entities that carry text only.
//! - [`reconcile`]: drift detection and repair against the compacted state topic.
//! - [`audit`]: the three-way audit, Neo4j ↔ graph.state ↔ sink, and its repair.
//! - [`dlq`]: the dead-letter queue: the processor's writer, browsing and redrive.
//! - [`timetravel`]: an entity's history, replays into shadow collections with an alias
//!   swap, and consumer-group offset resets.
//! - [`kafka`]: clients, topics, records, the keyed publisher, partitioner, group offsets.
//! - [`ops`]: `/metrics`, `/healthz`, `/readyz`.
//! - [`stats`]: metrics recorded once for the exporter and the demo, bench and tests.
//! - [`progress`]: progress bars on a terminal, log lines elsewhere.
//! - [`telemetry`]: logs, trace context in Kafka headers, OTLP export.

// The contract lives in its own crate (fuzzed alone); re-exported so `crate::event`
// and `graphcdc_core::event` paths keep working.
pub use graphcdc_contract::{codec, event, mapping, settings};

pub mod audit;
pub mod capture;
pub mod config;
pub mod dlq;
pub mod embed;
pub mod error;
pub mod kafka;
pub mod ops;
pub mod processor;
pub mod progress;
pub mod reconcile;
pub mod sink;
pub mod stats;
pub mod telemetry;
pub mod timetravel;

pub use error::{Error, ErrorKind};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
