//! Time travel: an entity's history on the change topic ([`history`]), replays of a
//! stretch of it into shadow collections with an alias swap ([`replay`]), and resets of
//! a consumer group's offsets ([`offsets`]).

pub mod history;
pub mod offsets;
pub mod replay;
