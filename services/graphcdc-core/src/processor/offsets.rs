//! The only place that decides which offsets may be committed: per partition, the
//! offset after the highest *contiguous* handled record. A record that is not handled
//! (failed, in flight) holds back every record after it.

use std::collections::{BTreeMap, HashMap};

/// Tracks received and handled offsets per (topic, partition).
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<(String, i32), Partition>,
}

#[derive(Debug, Default)]
struct Partition {
    /// Received offsets in order → handled?
    pending: BTreeMap<i64, bool>,
    /// Next offset to commit (one past the last contiguous handled record).
    committable: Option<i64>,
}

impl OffsetTracker {
    /// Note that `offset` was received and is not handled yet.
    pub fn received(&mut self, topic: &str, partition: i32, offset: i64) {
        self.partitions
            .entry((topic.to_owned(), partition))
            .or_default()
            .pending
            .insert(offset, false);
    }

    /// Note that `offset` was handled (applied, skipped as stale, or sent to the DLQ).
    pub fn handled(&mut self, topic: &str, partition: i32, offset: i64) {
        let Some(p) = self.partitions.get_mut(&(topic.to_owned(), partition)) else {
            return;
        };
        if let Some(done) = p.pending.get_mut(&offset) {
            *done = true;
        }
        while let Some(entry) = p.pending.first_entry() {
            if !*entry.get() {
                break;
            }
            p.committable = Some(entry.key() + 1);
            entry.remove();
        }
    }

    /// Offsets that may be committed now and were not returned before: (topic,
    /// partition, next offset to read).
    pub fn take_committable(&mut self) -> Vec<(String, i32, i64)> {
        self.partitions
            .iter_mut()
            .filter_map(|((topic, partition), p)| {
                p.committable
                    .take()
                    .map(|offset| (topic.clone(), *partition, offset))
            })
            .collect()
    }

    /// Forget a partition that was revoked: its pending records belong to the next owner.
    pub fn forget(&mut self, topic: &str, partition: i32) {
        self.partitions.remove(&(topic.to_owned(), partition));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_only_the_contiguous_prefix() {
        let mut t = OffsetTracker::default();
        for offset in [10, 11, 12, 15] {
            t.received("t", 0, offset);
        }
        t.handled("t", 0, 11);
        t.handled("t", 0, 15);
        assert!(t.take_committable().is_empty(), "10 is not handled yet");
        t.handled("t", 0, 10);
        assert_eq!(t.take_committable(), vec![("t".into(), 0, 12)]);
        assert!(t.take_committable().is_empty(), "reported once");
        t.handled("t", 0, 12);
        assert_eq!(
            t.take_committable(),
            vec![("t".into(), 0, 16)],
            "gaps in offsets are fine"
        );
    }

    #[test]
    fn partitions_are_independent_and_forgettable() {
        let mut t = OffsetTracker::default();
        t.received("t", 0, 1);
        t.received("t", 1, 7);
        t.handled("t", 1, 7);
        assert_eq!(t.take_committable(), vec![("t".into(), 1, 8)]);
        t.forget("t", 0);
        t.handled("t", 0, 1);
        assert!(t.take_committable().is_empty());
    }
}
