//! Offsets whose writes the sink acknowledged (visible) but has not made durable yet, and
//! the one way they become committable: a [`VectorSink::sync`] that returned after they
//! were acknowledged.
//!
//! The processor acknowledges a batch as soon as the sink applied it, and syncs the sink
//! at most every `processor.commit_interval_ms` and before the last commit of a shutdown
//! (not on revoke: see [`super::rebalance`]). Offsets are taken *before* the sync starts,
//! so every one of them belongs to a write the sync covers; writes acknowledged while it
//! runs wait for the next one. A failed sync puts them back: nothing is committed past a write that may
//! still be only in memory.

use crate::sink::VectorSink;
use rdkafka::consumer::{Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

/// Per partition, the next offset to commit once the sink is synced.
#[derive(Debug, Default)]
pub struct Unsynced {
    offsets: HashMap<(String, i32), i64>,
    /// When the oldest offset here was acknowledged.
    since: Option<Instant>,
    /// After a failed sync: not before this.
    retry_at: Option<Instant>,
}

impl Unsynced {
    /// Offsets the sink acknowledged: (topic, partition, next offset to read).
    pub fn acknowledged(&mut self, offsets: Vec<(String, i32, i64)>) {
        for (topic, partition, offset) in offsets {
            let next = self.offsets.entry((topic, partition)).or_insert(offset);
            *next = (*next).max(offset);
            self.since.get_or_insert_with(Instant::now);
        }
    }

    /// When the sink should be synced next: `interval` after the oldest acknowledged
    /// offset; `None` when there is nothing to sync.
    pub fn due(&self, interval: Duration) -> Option<Instant> {
        let due = self.since? + interval;
        Some(self.retry_at.map_or(due, |retry_at| due.max(retry_at)))
    }

    /// Take every offset, to be committed after a sync that starts now.
    pub fn take(&mut self) -> Vec<(String, i32, i64)> {
        self.since = None;
        self.retry_at = None;
        self.offsets
            .drain()
            .map(|((topic, partition), offset)| (topic, partition, offset))
            .collect()
    }

    /// Put back offsets whose sync failed; the next sync is due `retry_in` from now at
    /// the earliest.
    pub fn put_back(&mut self, offsets: Vec<(String, i32, i64)>, retry_in: Duration) {
        self.acknowledged(offsets);
        self.retry_at = Some(Instant::now() + retry_in);
    }

    /// Forget a revoked partition: its next owner reads what was not committed again.
    pub fn forget(&mut self, topic: &str, partition: i32) {
        self.offsets.remove(&(topic.to_owned(), partition));
        if self.offsets.is_empty() {
            self.since = None;
        }
    }
}

/// Store `offsets` in `consumer` for its next commit.
fn store<C: ConsumerContext, K: Consumer<C>>(consumer: &K, offsets: &[(String, i32, i64)]) {
    if offsets.is_empty() {
        return;
    }
    let mut list = TopicPartitionList::new();
    for (topic, partition, offset) in offsets {
        if let Err(e) = list.add_partition_offset(topic, *partition, Offset::Offset(*offset)) {
            tracing::warn!(error = %e, "bad offset");
        }
    }
    if let Err(e) = consumer.store_offsets(&list) {
        tracing::warn!(error = %e, "storing offsets failed (partition revoked?)");
    }
}

/// Sync `sink`, then store the offsets that were waiting for it; on failure they wait for
/// the next sync, `retry_in` from now at the earliest. Returns whether the sync succeeded.
pub async fn sync_and_store<C: ConsumerContext, K: Consumer<C>>(
    sink: &dyn VectorSink,
    unsynced: &std::sync::Mutex<Unsynced>,
    consumer: &K,
    retry_in: Duration,
) -> bool {
    let offsets = unsynced.lock().unwrap().take();
    if offsets.is_empty() {
        return true;
    }
    match sink.sync().await {
        Ok(()) => {
            store(consumer, &offsets);
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "sink sync failed: offsets stay uncommitted until a sync succeeds");
            unsynced.lock().unwrap().put_back(offsets, retry_in);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_highest_offset_per_partition_and_puts_back_what_a_failed_sync_took() {
        let mut u = Unsynced::default();
        assert!(u.due(Duration::ZERO).is_none());
        u.acknowledged(vec![("t".into(), 0, 5), ("t".into(), 1, 3)]);
        u.acknowledged(vec![("t".into(), 0, 9)]);
        assert!(u.due(Duration::ZERO).is_some());
        let mut taken = u.take();
        taken.sort();
        assert_eq!(taken, vec![("t".into(), 0, 9), ("t".into(), 1, 3)]);
        assert!(u.due(Duration::ZERO).is_none() && u.take().is_empty());
        // Acknowledged while the sync ran, then the sync failed: the highest wins.
        u.acknowledged(vec![("t".into(), 0, 12)]);
        u.put_back(taken, Duration::from_secs(60));
        let retry_at = u.due(Duration::ZERO).unwrap();
        assert!(
            retry_at > Instant::now() + Duration::from_secs(50),
            "not at once"
        );
        let mut again = u.take();
        again.sort();
        assert_eq!(again, vec![("t".into(), 0, 12), ("t".into(), 1, 3)]);
    }

    #[test]
    fn a_forgotten_partition_is_not_committed() {
        let mut u = Unsynced::default();
        u.acknowledged(vec![("t".into(), 0, 5), ("t".into(), 1, 3)]);
        u.forget("t", 0);
        assert_eq!(u.take(), vec![("t".into(), 1, 3)]);
        u.acknowledged(vec![("t".into(), 2, 1)]);
        u.forget("t", 2);
        assert!(u.due(Duration::ZERO).is_none());
    }
}
