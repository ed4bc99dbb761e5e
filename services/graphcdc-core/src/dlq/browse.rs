//! Reading the dead-letter queue: list its records, read one, show it decoded.

use super::reader::{Position, Reader};
use super::writer::headers;
use crate::codec::Codec;
use crate::event::ChangeEvent;
use crate::kafka::KafkaConfig;
use crate::kafka::Record;
use serde::Serialize;
use std::collections::BTreeMap;

/// Header of a redriven record: where it came from, `dlq-topic/partition/offset`.
pub const REDRIVE_FROM: &str = "graphcdc.redrive.from";
/// Header of a redriven record: when it was redriven (Unix ms).
pub const REDRIVE_TIMESTAMP: &str = "graphcdc.redrive.timestamp";

/// Bytes of an undecodable value shown as text and as hex.
const PREVIEW_TEXT_BYTES: usize = 512;
const PREVIEW_HEX_BYTES: usize = 64;

/// The records of `topic` (the DLQ), from the earliest offset to the end at the time of
/// the call, in partition then offset order; the first `limit` when given.
///
/// # Errors
/// When the topic cannot be read.
pub async fn list(
    kafka_config: &KafkaConfig,
    topic: &str,
    limit: Option<usize>,
) -> crate::error::Result<Vec<Record>> {
    let reader = Reader::new(kafka_config, topic)?;
    let mut out = Vec::new();
    for partition in reader.partitions.clone() {
        let left = limit.map_or(usize::MAX, |l| l.saturating_sub(out.len()));
        if left == 0 {
            break;
        }
        let (low, high) = reader.watermarks(partition)?;
        out.extend(reader.read_range(partition, low, high, left)?);
    }
    Ok(out)
}

/// The records of `topic` at `positions`, in that order.
///
/// # Errors
/// When a position names a partition the topic does not have or an offset it does not
/// hold (`what` names the option), or the topic cannot be read.
pub async fn read(
    kafka_config: &KafkaConfig,
    topic: &str,
    what: &str,
    positions: &[Position],
) -> crate::error::Result<Vec<Record>> {
    let reader = Reader::new(kafka_config, topic)?;
    positions
        .iter()
        .map(|at| reader.read_one(what, *at))
        .collect()
}

/// Whether a header is one `dlq list` shows: the Connect error headers and graphcdc's
/// own (`graphcdc.dlq.*`, and `graphcdc.redrive.*` on a record that failed again after a
/// redrive).
pub fn is_error_header(key: &str) -> bool {
    key.starts_with("__connect.errors.") || key.starts_with("graphcdc.")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Headers as text (a repeated header shows its last value).
fn header_map<'a>(
    headers: impl Iterator<Item = &'a (String, Option<Vec<u8>>)>,
) -> BTreeMap<String, Option<String>> {
    headers
        .map(|(k, v)| (k.clone(), v.as_deref().map(text)))
        .collect()
}

/// The value of header `key` as text.
pub fn header(record: &Record, key: &str) -> Option<String> {
    record
        .headers
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.as_deref().map(text))
}

/// One line of `dlq list`: where the record is, and why it is there.
#[derive(Debug, Clone, Serialize)]
pub struct ListEntry {
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    pub key: Option<String>,
    pub value_bytes: Option<usize>,
    /// `__connect.errors.*` and `graphcdc.*` headers.
    pub error_headers: BTreeMap<String, Option<String>>,
}

impl ListEntry {
    pub fn of(record: &Record) -> Self {
        ListEntry {
            partition: record.partition,
            offset: record.offset,
            timestamp_ms: record.timestamp_ms,
            key: record.key.as_deref().map(text),
            value_bytes: record.payload.as_ref().map(Vec::len),
            error_headers: header_map(record.headers.iter().filter(|(k, _)| is_error_header(k))),
        }
    }

    /// `topic/partition/offset` the record failed at, from the Connect headers.
    pub fn source(&self) -> Option<String> {
        let get = |k: &str| self.error_headers.get(k).cloned().flatten();
        Some(format!(
            "{}/{}/{}",
            get(headers::TOPIC)?,
            get(headers::PARTITION)?,
            get(headers::OFFSET)?
        ))
    }

    /// `class: message` of the error, from the Connect headers.
    pub fn error(&self) -> String {
        let get = |k: &str| self.error_headers.get(k).cloned().flatten();
        match (get(headers::CLASS_NAME), get(headers::MESSAGE)) {
            (Some(class), Some(message)) => format!("{class}: {message}"),
            (Some(one), None) | (None, Some(one)) => one,
            (None, None) => "-".to_owned(),
        }
    }
}

/// A record's value as `dlq show` presents it.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "decoded", rename_all = "snake_case")]
pub enum ShownValue {
    /// No value.
    Null,
    /// Decoded with the project's codec.
    Event { event: Box<ChangeEvent> },
    /// The codec refused it: why, and the first bytes as text and as hex.
    Undecodable {
        error: String,
        utf8_lossy: String,
        hex: String,
    },
}

/// One record with every header and its decoded value (`dlq show`).
#[derive(Debug, Clone, Serialize)]
pub struct Shown {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    pub key: Option<String>,
    pub value_bytes: Option<usize>,
    pub headers: BTreeMap<String, Option<String>>,
    pub value: ShownValue,
}

/// `record` with its value decoded by `codec`, as the processor decodes it.
pub async fn show(codec: &Codec, record: &Record) -> Shown {
    let value = match &record.payload {
        None => ShownValue::Null,
        Some(bytes) => match codec.decode_change(bytes).await {
            Ok(event) => ShownValue::Event {
                event: Box::new(event),
            },
            Err(e) => ShownValue::Undecodable {
                error: e.to_string(),
                utf8_lossy: text(&bytes[..bytes.len().min(PREVIEW_TEXT_BYTES)]),
                hex: bytes[..bytes.len().min(PREVIEW_HEX_BYTES)]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            },
        },
    };
    Shown {
        topic: record.topic.clone(),
        partition: record.partition,
        offset: record.offset,
        timestamp_ms: record.timestamp_ms,
        key: record.key.as_deref().map(text),
        value_bytes: record.payload.as_ref().map(Vec::len),
        headers: header_map(record.headers.iter()),
        value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_parse_and_name_the_option() {
        assert_eq!(
            Position::parse_list("--partition-offsets", "1:7, 0:42,1:7").unwrap(),
            [
                Position {
                    partition: 0,
                    offset: 42
                },
                Position {
                    partition: 1,
                    offset: 7
                }
            ]
        );
        for bad in ["", "3", "0:-1", "a:1", "0:1:2"] {
            let err = Position::parse_list("--partition-offsets", bad).unwrap_err();
            assert!(
                err.to_string().starts_with("--partition-offsets: "),
                "{bad}: {err}"
            );
        }
    }
}
