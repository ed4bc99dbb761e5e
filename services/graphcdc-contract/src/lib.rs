//! The graphcdc event contract, shared by every service and by the fuzz targets:
//!
//! - [`event`]: the one event model (change events and entity states).
//! - [`codec`]: Avro (Confluent wire format) and JSON encoding of the contract.
//! - [`config`]: configuration, validated at start.
//! - [`mapping`]: from events to version-fenced point writes.
//! - [`error`]: poison and sink errors.

pub mod codec;
pub mod config;
pub mod error;
pub mod event;
pub mod mapping;
