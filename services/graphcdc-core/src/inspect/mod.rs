//! Looking back: an entity's history on the change topic, and consumer-group offsets.

pub mod history;
pub mod offsets;
