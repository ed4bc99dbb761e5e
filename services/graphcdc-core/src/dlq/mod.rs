//! Dead-letter queue: poison records keep their key, value and headers and gain the
//! Kafka Connect error headers, so the usual DLQ tooling can read them.
//!
//! A DLQ that is unavailable for a while (broker down, timeouts) is retried like the
//! sink. One that refuses records for good (authorization, an unknown or invalid topic,
//! a fatal producer) is fatal: the processor stops with the reason and a non-zero exit
//! rather than stalling every partition. A record too large for the DLQ is truncated
//! (value first) and marked with [`headers::TRUNCATED`]; it is never dropped.
//!
//! `graphcdc dlq`: reading the dead-letter queue and re-publishing ("redriving") its
//! records to the change topic once their cause is fixed.
//!
//! The DLQ is read with its own consumer (assigned partitions, nothing committed) from the
//! earliest offset to the end at the time of the call. A redrive re-publishes each chosen
//! record to the change topic with its original key, value and headers — without the
//! error headers the processor added (`__connect.errors.*`, `graphcdc.dlq.*`), which
//! describe the failure, not the event, and of an earlier redrive's marks — plus
//! [`REDRIVE_FROM`] and [`REDRIVE_TIMESTAMP`].
//! The version fence makes a redrive safe to repeat. A record whose value was truncated
//! on its way into the DLQ ([`headers::TRUNCATED`]) is never redriven: its value is no
//! longer the event.
//!
//! One role per file: [`writer`] (the processor's poison records), [`browse`] (list,
//! read, show), [`redrive`] (plan and execute), and the DLQ's own consumer (`reader`).

pub mod browse;
pub mod reader;
pub mod redrive;
pub mod writer;

pub use browse::{
    header, is_error_header, list, read, show, ListEntry, Shown, ShownValue, REDRIVE_FROM,
    REDRIVE_TIMESTAMP,
};
pub use reader::Position;
pub use redrive::{execute_redrive, plan_redrive, RedriveItem, RedrivePlan, Selection};
pub use writer::{headers, is_permanent, DeadLetterQueue, DlqError, DEFAULT_MAX_RECORD_BYTES};
