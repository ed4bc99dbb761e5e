//! Looking back: an entity's history on the change topic, consumer-group offsets, replays
//! into a shadow target, and the dead-letter queue (list, show, redrive).

pub mod dlq;
pub mod history;
pub mod offsets;
pub mod replay;
