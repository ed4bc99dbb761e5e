//! Kafka plumbing shared by every service, one role per file: client config and the
//! producer ([`client`]), topic set-up ([`topics`]), owned consumed records
//! ([`record`]), the keyed change/state publisher ([`publisher`]), the Java client's
//! partitioner ([`partitioner`]), and a group's committed offsets and lag ([`offsets`]).

pub mod client;
pub mod config;
pub mod offsets;
pub mod partitioner;
pub mod publisher;
pub mod record;
pub mod topics;

pub use client::{client_config, producer, set_defaults, ADMIN_TIMEOUT};
pub use config::KafkaConfig;
pub use offsets::{group_lag, group_offsets, PartitionOffsets};
pub use publisher::{ChangePublisher, STATE_VERSION_HEADER};
pub use record::{poll_record, read_from_beginning, Record};
pub use topics::{ensure_pipeline_topics, ensure_topics, partition_ids, Cleanup};
