//! `--from-offset` / `--to-offset` values.

use crate::error::bail;
use std::collections::BTreeMap;
/// Offsets on the change topic, as `--from-offset` / `--to-offset` take them: one offset
/// for every partition (`120`) or a list per partition (`0:120,1:95,3:0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The same offset on every partition.
    All(i64),
    /// Offsets of the listed partitions; what an unlisted partition does is up to the
    /// bound ([`ReplayStart::Offsets`], [`ReplayEnd::Offsets`]).
    PerPartition(BTreeMap<i32, i64>),
}

impl OffsetSpec {
    /// Parse `text`, naming `flag` in every error.
    ///
    /// # Errors
    /// When `text` is neither a non-negative number nor a comma-separated list of
    /// `PARTITION:OFFSET` pairs with distinct partitions.
    pub fn parse(flag: &str, text: &str) -> crate::error::Result<Self> {
        let text = text.trim();
        if text.is_empty() {
            bail!(
                Invalid,
                "{flag}: empty; give an offset (120) or PARTITION:OFFSET pairs (0:120,1:95)"
            );
        }
        if !text.contains(':') {
            return Ok(OffsetSpec::All(parse_offset(flag, text, text)?));
        }
        let mut each = BTreeMap::new();
        for item in text.split(',') {
            let item = item.trim();
            let Some((partition, offset)) = item.split_once(':') else {
                bail!(
                    Invalid,
                    "{flag}: {item:?} in {text:?} is not PARTITION:OFFSET \
                     (give one offset for every partition, or a list like 0:120,1:95)"
                );
            };
            let partition = partition
                .trim()
                .parse::<i32>()
                .ok()
                .filter(|p| *p >= 0)
                .ok_or_else(|| {
                    crate::error::err!(
                        Invalid,
                        "{flag}: partition {:?} in {text:?} is not a partition number",
                        partition.trim()
                    )
                })?;
            let offset = parse_offset(flag, offset.trim(), text)?;
            if each.insert(partition, offset).is_some() {
                bail!(
                    Invalid,
                    "{flag}: partition {partition} is given twice in {text:?}"
                );
            }
        }
        Ok(OffsetSpec::PerPartition(each))
    }

    /// The offset given for `partition`; `None` when a list leaves it out.
    pub fn get(&self, partition: i32) -> Option<i64> {
        match self {
            OffsetSpec::All(offset) => Some(*offset),
            OffsetSpec::PerPartition(each) => each.get(&partition).copied(),
        }
    }

    /// Refuse listed partitions `topic` does not have.
    pub(crate) fn check(
        &self,
        flag: &str,
        topic: &str,
        partitions: &[i32],
    ) -> crate::error::Result<()> {
        if let OffsetSpec::PerPartition(each) = self {
            if let Some(p) = each.keys().find(|p| !partitions.contains(p)) {
                let have: Vec<String> = partitions.iter().map(i32::to_string).collect();
                bail!(
                    Invalid,
                    "{flag}: topic {topic} has no partition {p} (it has {})",
                    have.join(", ")
                );
            }
        }
        Ok(())
    }
}

pub(super) fn parse_offset(flag: &str, item: &str, whole: &str) -> crate::error::Result<i64> {
    item.parse::<i64>().ok().filter(|o| *o >= 0).ok_or_else(|| {
        crate::error::err!(
            Invalid,
            "{flag}: offset {item:?} in {whole:?} is not a non-negative number"
        )
    })
}
