//! Clients: the base config every client starts from (bootstrap servers plus the
//! pass-through `[kafka.properties]`), defaults that properties may override, and the
//! idempotent, murmur2-partitioning producer.

use super::config::KafkaConfig;
use crate::error::Context;
use rdkafka::producer::FutureProducer;
use rdkafka::ClientConfig;
use std::time::Duration;

/// Timeout of metadata and admin requests.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

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
pub fn producer(kafka: &KafkaConfig) -> crate::error::Result<FutureProducer> {
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
