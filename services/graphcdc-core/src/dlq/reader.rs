//! Reading a topic partition by partition, from one offset to another, with a consumer
//! of its own (assigned partitions, nothing committed).

use crate::error::{bail, Context};
use crate::kafka::KafkaConfig;
use crate::kafka::{self, Record};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use std::fmt;
use std::time::{Duration, Instant};

/// A record's place on a topic, written `PARTITION:OFFSET`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Position {
    pub partition: i32,
    pub offset: i64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.partition, self.offset)
    }
}

impl Position {
    /// Parse `PARTITION:OFFSET`, naming `what` (the option) in the error.
    ///
    /// # Errors
    /// When `text` is not two non-negative numbers separated by `:`.
    pub fn parse(what: &str, text: &str) -> crate::error::Result<Self> {
        let text = text.trim();
        let parsed = text.split_once(':').and_then(|(p, o)| {
            let partition = p.trim().parse::<i32>().ok().filter(|p| *p >= 0)?;
            let offset = o.trim().parse::<i64>().ok().filter(|o| *o >= 0)?;
            Some(Position { partition, offset })
        });
        parsed.ok_or_else(|| {
            crate::error::err!(
                Invalid,
                "{what}: {text:?} is not PARTITION:OFFSET (e.g. 0:42)"
            )
        })
    }

    /// Parse a comma-separated list of `PARTITION:OFFSET`, sorted, each once.
    ///
    /// # Errors
    /// When the list is empty or an item is not `PARTITION:OFFSET`.
    pub fn parse_list(what: &str, text: &str) -> crate::error::Result<Vec<Self>> {
        let mut out = text
            .split(',')
            .filter(|item| !item.trim().is_empty())
            .map(|item| Position::parse(what, item))
            .collect::<crate::error::Result<Vec<_>>>()?;
        crate::error::ensure!(
            !out.is_empty(),
            Invalid,
            "{what}: empty; give PARTITION:OFFSET pairs (0:42,1:7)"
        );
        out.sort();
        out.dedup();
        Ok(out)
    }
}

/// Reading fails when no record arrives for this long while records are due.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Reads a topic partition by partition with its own consumer (no group commits).
pub(super) struct Reader {
    consumer: BaseConsumer,
    topic: String,
    pub(super) partitions: Vec<i32>,
}

impl Reader {
    pub(super) fn new(kafka_config: &KafkaConfig, topic: &str) -> crate::error::Result<Self> {
        let mut client = kafka::client_config(kafka_config);
        client
            .set("group.id", format!("{}-dlq-reader", kafka_config.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false");
        let consumer: BaseConsumer = client.create().context("creating DLQ reader")?;
        let partitions = kafka::partition_ids(&consumer, topic)?;
        Ok(Reader {
            consumer,
            topic: topic.to_owned(),
            partitions,
        })
    }

    pub(super) fn watermarks(&self, partition: i32) -> crate::error::Result<(i64, i64)> {
        self.consumer
            .fetch_watermarks(&self.topic, partition, kafka::ADMIN_TIMEOUT)
            .with_context(|| format!("fetching watermarks of {}/{partition}", self.topic))
    }

    /// Records of `partition` in `[from, to)`, at most `max`.
    pub(super) fn read_range(
        &self,
        partition: i32,
        from: i64,
        to: i64,
        max: usize,
    ) -> crate::error::Result<Vec<Record>> {
        let mut out = Vec::new();
        if from >= to || max == 0 {
            return Ok(out);
        }
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(&self.topic, partition, Offset::Offset(from))?;
        self.consumer.assign(&assignment)?;
        let task = format!(
            "reading {}/{partition} up to offset {to}: no record for {} s",
            self.topic,
            IDLE_TIMEOUT.as_secs()
        );
        let mut deadline = Instant::now() + IDLE_TIMEOUT;
        loop {
            let position = self
                .consumer
                .position()?
                .find_partition(&self.topic, partition)
                .and_then(|e| e.offset().to_raw());
            if position.is_some_and(|p| p >= to) {
                break;
            }
            let Some(record) = kafka::poll_record(&self.consumer, deadline, &task)? else {
                continue;
            };
            deadline = Instant::now() + IDLE_TIMEOUT;
            if record.partition != partition || record.offset < from {
                continue;
            }
            let last = record.offset + 1 >= to;
            if record.offset < to {
                out.push(record);
            }
            if last || out.len() >= max {
                break;
            }
        }
        self.consumer.unassign()?;
        Ok(out)
    }

    /// The record at `at`.
    pub(super) fn read_one(&self, what: &str, at: Position) -> crate::error::Result<Record> {
        if !self.partitions.contains(&at.partition) {
            let have: Vec<String> = self.partitions.iter().map(i32::to_string).collect();
            bail!(
                Invalid,
                "{what}: topic {} has no partition {} (it has {})",
                self.topic,
                at.partition,
                have.join(", ")
            );
        }
        let (low, high) = self.watermarks(at.partition)?;
        if at.offset < low || at.offset >= high {
            bail!(
                Invalid,
                "{what}: no record at {at} on {}: partition {} holds {}",
                self.topic,
                at.partition,
                if low >= high {
                    "nothing".to_owned()
                } else {
                    format!("offsets {low} to {}", high - 1)
                }
            );
        }
        let record = self
            .read_range(at.partition, at.offset, at.offset + 1, 1)?
            .into_iter()
            .next();
        match record {
            Some(r) if r.offset == at.offset => Ok(r),
            _ => bail!(
                Invalid,
                "{what}: no record at {at} on {} (deleted, or not a data record)",
                self.topic
            ),
        }
    }
}
