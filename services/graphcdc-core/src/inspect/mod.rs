//! Looking back: an entity's history on the change topic, consumer-group offsets, and
//! replays into a shadow target.

pub mod history;
pub mod offsets;
pub mod replay;
