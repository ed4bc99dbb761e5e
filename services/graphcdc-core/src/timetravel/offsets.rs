//! `graphcdc offsets reset`: moving a consumer group's offsets while the group is
//! stopped, like `kafka-consumer-groups --reset-offsets`: [`plan_reset`] computes the new offsets (to the earliest, the latest,
//! a time, an offset, or shifted), clamped to what the topic holds, and
//! [`execute_reset`] commits a plan.

use crate::error::Context;
use crate::kafka::KafkaConfig;
use crate::kafka::{self, PartitionOffsets};
use crate::timetravel::replay::OffsetSpec;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use std::fmt;

/// Where a reset moves each selected partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResetTarget {
    /// The earliest offset still on the topic (the low watermark).
    Earliest,
    /// The end of the partition (the high watermark): nothing left to read.
    Latest,
    /// The first record at or after this Unix time (ms); the end when there is none.
    Time(i64),
    /// One offset for every selected partition, or one per listed partition (then the
    /// list selects the partitions).
    Offsets(OffsetSpec),
    /// The committed offset moved by this many records (negative: back).
    ShiftBy(i64),
}

/// Why a planned offset is not the one the target asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ResetNote {
    /// Below the earliest offset still on the topic: raised to it (as Kafka does).
    ClampedToEarliest { requested: i64, earliest: i64 },
    /// Past the end of the partition: lowered to it (as Kafka does).
    ClampedToLatest { requested: i64, latest: i64 },
    /// No record at or after the time: the end of the partition.
    NoRecordAfterTime,
}

impl fmt::Display for ResetNote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResetNote::ClampedToEarliest {
                requested,
                earliest,
            } => write!(
                f,
                "clamped: {requested} is below the earliest offset {earliest}"
            ),
            ResetNote::ClampedToLatest { requested, latest } => {
                write!(f, "clamped: {requested} is past the end {latest}")
            }
            ResetNote::NoRecordAfterTime => write!(f, "no record at or after the time: the end"),
        }
    }
}

/// One partition of a reset plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionReset {
    pub partition: i32,
    /// The committed offset now, if the group committed one.
    pub current: Option<i64>,
    /// The offset the reset commits.
    pub new: i64,
    pub low: i64,
    pub high: i64,
    /// Lag now (from the committed offset, or the earliest one without a commit).
    pub lag_before: i64,
    /// Lag once the reset is committed.
    pub lag_after: i64,
    pub note: Option<ResetNote>,
}

/// Whether a consumer group has active members (a reset is only safe without).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Membership {
    /// No active member (or the broker does not know the group).
    Inactive,
    /// Active members, and the group's state.
    Active { members: usize, state: String },
    /// The broker did not answer DescribeGroups (tansu): why.
    Unknown(String),
}

/// The offsets a reset would commit, per selected partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetPlan {
    pub group: String,
    pub topic: String,
    /// The group's members when the plan was made.
    pub membership: Membership,
    pub partitions: Vec<PartitionReset>,
}

fn membership(consumer: &BaseConsumer, group: &str) -> Membership {
    match consumer.fetch_group_list(Some(group), kafka::ADMIN_TIMEOUT) {
        Ok(groups) => match groups.groups().iter().find(|g| g.name() == group) {
            Some(g) if !g.members().is_empty() => Membership::Active {
                members: g.members().len(),
                state: g.state().to_owned(),
            },
            _ => Membership::Inactive,
        },
        Err(e) => Membership::Unknown(e.to_string()),
    }
}

/// The new offset of `requested` within `[low, high]`, and why it moved.
fn clamp(requested: i64, low: i64, high: i64) -> (i64, Option<ResetNote>) {
    if requested < low {
        let note = ResetNote::ClampedToEarliest {
            requested,
            earliest: low,
        };
        (low, Some(note))
    } else if requested > high {
        let note = ResetNote::ClampedToLatest {
            requested,
            latest: high,
        };
        (high, Some(note))
    } else {
        (requested, None)
    }
}

/// Where `target` moves partition `p`; `at_time` is the broker's answer to a time
/// lookup (`None`: no record at or after the time).
fn partition_reset(
    p: &PartitionOffsets,
    target: &ResetTarget,
    at_time: Option<i64>,
) -> crate::error::Result<PartitionReset> {
    let (new, note) = match target {
        ResetTarget::Earliest => (p.low, None),
        ResetTarget::Latest => (p.high, None),
        ResetTarget::Time(_) => match at_time {
            Some(o) => clamp(o, p.low, p.high),
            None => (p.high, Some(ResetNote::NoRecordAfterTime)),
        },
        ResetTarget::Offsets(spec) => clamp(spec.get(p.partition).unwrap_or(p.low), p.low, p.high),
        ResetTarget::ShiftBy(by) => {
            let Some(committed) = p.committed else {
                crate::error::bail!(
                    Invalid,
                    "--shift-by: partition {} has no committed offset to shift from; \
                     give it --to-offset, or leave it out with --partitions",
                    p.partition
                );
            };
            clamp(committed.saturating_add(*by), p.low, p.high)
        }
    };
    Ok(PartitionReset {
        partition: p.partition,
        current: p.committed,
        new,
        low: p.low,
        high: p.high,
        lag_before: p.lag,
        lag_after: (p.high - new).max(0),
        note,
    })
}

/// What a reset of `group` on `topic` to `target` would commit, changing nothing. Every
/// partition is reset, or only those of `only` (`--partitions`), or those a per-partition
/// offset list names. Offsets are clamped to `[earliest, end]` of each partition, as Kafka
/// does; the plan says where.
///
/// # Errors
/// When `only` or an offset list names a partition the topic does not have, both are
/// given, `--shift-by` meets a partition without a committed offset, or the broker fails.
pub fn plan_reset(
    kafka_config: &KafkaConfig,
    group: &str,
    topic: &str,
    target: &ResetTarget,
    only: Option<&[i32]>,
) -> crate::error::Result<ResetPlan> {
    let consumer = kafka::offsets::group_client(kafka_config, group)?;
    let membership = membership(&consumer, group);
    let current = kafka::group_offsets(kafka_config, group, topic)?;
    let partitions: Vec<i32> = current.iter().map(|p| p.partition).collect();
    if let Some(only) = only {
        OffsetSpec::PerPartition(only.iter().map(|p| (*p, 0)).collect()).check(
            "--partitions",
            topic,
            &partitions,
        )?;
    }
    let listed = match target {
        ResetTarget::Offsets(spec @ OffsetSpec::PerPartition(each)) => {
            crate::error::ensure!(
                only.is_none(), Invalid,
                "--partitions: not with a per-partition --to-offset list (the list names the partitions)"
            );
            spec.check("--to-offset", topic, &partitions)?;
            Some(each.keys().copied().collect::<Vec<_>>())
        }
        _ => only.map(<[i32]>::to_vec),
    };
    let selected: Vec<&PartitionOffsets> = current
        .iter()
        .filter(|p| listed.as_ref().is_none_or(|l| l.contains(&p.partition)))
        .collect();
    let at_time = match target {
        ResetTarget::Time(ms) => {
            let mut times = TopicPartitionList::new();
            for p in &selected {
                times.add_partition_offset(topic, p.partition, Offset::Offset(*ms))?;
            }
            Some(
                consumer
                    .offsets_for_times(times, kafka::ADMIN_TIMEOUT)
                    .context("looking up offsets for the time")?,
            )
        }
        _ => None,
    };
    let mut out = Vec::with_capacity(selected.len());
    for p in selected {
        let found = at_time
            .as_ref()
            .and_then(|t| t.find_partition(topic, p.partition))
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            });
        out.push(partition_reset(p, target, found)?);
    }
    Ok(ResetPlan {
        group: group.to_owned(),
        topic: topic.to_owned(),
        membership,
        partitions: out,
    })
}

/// Commit the offsets of `plan` for its group.
///
/// # Errors
/// Refuses while the group has active members, and when the broker cannot say (no
/// DescribeGroups) unless `force`; broker errors otherwise.
pub fn execute_reset(
    kafka_config: &KafkaConfig,
    plan: &ResetPlan,
    force: bool,
) -> crate::error::Result<()> {
    let group = &plan.group;
    let consumer = kafka::offsets::group_client(kafka_config, group)?;
    match membership(&consumer, group) {
        Membership::Inactive => {}
        Membership::Active { members, state } => crate::error::bail!(Invalid,
            "consumer group {group} has {members} active member(s) (state {state}): stop them before resetting offsets"
        ),
        Membership::Unknown(e) => crate::error::ensure!(
            force, Invalid,
            "cannot tell whether consumer group {group} has active members (the broker did not answer DescribeGroups: {e}); stop them and pass --force"
        ),
    }
    let mut tpl = TopicPartitionList::new();
    for p in &plan.partitions {
        tpl.add_partition_offset(&plan.topic, p.partition, Offset::Offset(p.new))?;
    }
    consumer
        .commit(&tpl, CommitMode::Sync)
        .context("committing the reset offsets")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_target_moves_a_partition_within_what_it_holds() {
        let p = PartitionOffsets {
            partition: 1,
            committed: Some(40),
            low: 10,
            high: 100,
            lag: 60,
        };
        let new = |target: ResetTarget, at_time: Option<i64>| {
            let r = partition_reset(&p, &target, at_time).unwrap();
            assert_eq!(r.lag_before, 60);
            assert_eq!(r.lag_after, 100 - r.new);
            (r.new, r.note)
        };
        assert_eq!(new(ResetTarget::Earliest, None), (10, None));
        assert_eq!(new(ResetTarget::Latest, None), (100, None));
        assert_eq!(new(ResetTarget::Time(0), Some(55)), (55, None));
        assert_eq!(
            new(ResetTarget::Time(0), None),
            (100, Some(ResetNote::NoRecordAfterTime)),
            "no record after the time: the end, as Kafka does"
        );
        assert_eq!(new(ResetTarget::ShiftBy(-15), None), (25, None));
        assert_eq!(new(ResetTarget::ShiftBy(5), None), (45, None));
        assert_eq!(
            new(ResetTarget::ShiftBy(-35), None).1,
            Some(ResetNote::ClampedToEarliest {
                requested: 5,
                earliest: 10
            })
        );
        assert_eq!(
            new(ResetTarget::Offsets(OffsetSpec::All(70)), None),
            (70, None)
        );
        let listed = OffsetSpec::parse("--to-offset", "1:500,2:3").unwrap();
        assert_eq!(
            new(ResetTarget::Offsets(listed), None),
            (
                100,
                Some(ResetNote::ClampedToLatest {
                    requested: 500,
                    latest: 100
                })
            )
        );
        let uncommitted = PartitionOffsets {
            committed: None,
            ..p.clone()
        };
        let err = partition_reset(&uncommitted, &ResetTarget::ShiftBy(1), None).unwrap_err();
        assert!(
            err.to_string().starts_with("--shift-by: partition 1"),
            "{err}"
        );
    }

    #[test]
    fn offsets_are_clamped_to_what_the_partition_holds() {
        assert_eq!(clamp(5, 2, 9), (5, None));
        assert_eq!(clamp(2, 2, 9), (2, None));
        assert_eq!(clamp(9, 2, 9), (9, None));
        assert_eq!(
            clamp(-3, 2, 9),
            (
                2,
                Some(ResetNote::ClampedToEarliest {
                    requested: -3,
                    earliest: 2
                })
            )
        );
        let (new, note) = clamp(50, 2, 9);
        assert_eq!(new, 9);
        assert_eq!(note.unwrap().to_string(), "clamped: 50 is past the end 9");
    }
}
