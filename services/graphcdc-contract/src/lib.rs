//! The graphcdc event contract, shared by every service and by the fuzz targets:
//!
//! - [`event`]: the one event model (change events and entity states).
//! - [`codec`]: Avro (Confluent wire format) and JSON encoding of the contract.
//! - [`mapping`]: from events to version-fenced point writes, and its `[[mappings]]`
//!   config.
//! - [`error`]: why an event is poison.
//! - [`settings`]: what every config section is made of (a secret, a field-naming
//!   error); the service sections live next to their code in `graphcdc-core`.

pub mod codec;
pub mod error;
pub mod event;
pub mod mapping;
pub mod settings;
