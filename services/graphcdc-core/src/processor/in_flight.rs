//! The batches being written at once (`processor.max_batches_in_flight`, default 1).
//!
//! Several batches may be in flight together only when they hold disjoint record keys:
//! the record key is the entity key, so two batches in flight never write the same
//! point and each key's events still reach the sink in offset order. The commit rule
//! does not change: a record's offset is handled only when its batch settled, and
//! [`super::offsets::OffsetTracker`] commits only the contiguous prefix, however the
//! batches finish.

use super::attempt::{BatchResult, InFlight, JoinResult};
use crate::kafka::Record;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

/// A batch task that finished (or panicked), with what settling it needs.
pub(crate) struct Finished {
    pub result: JoinResult,
    /// Index into `ProcessorContext::revoked_during_batch` when the batch was handed to
    /// its task: revocations from there on concern its records.
    pub revoked_from: usize,
}

impl Finished {
    /// Whether the batch was written (a panic or a failed attempt is not).
    pub fn succeeded(&self) -> bool {
        matches!(&self.result, Ok((_, Ok(_))))
    }
}

type Task = Pin<Box<dyn Future<Output = (Vec<Vec<u8>>, Finished)> + Send>>;

/// The batch tasks in flight and the record keys they hold.
pub(crate) struct InFlightBatches {
    max: usize,
    tasks: FuturesUnordered<Task>,
    /// Record key → how many batches in flight hold it.
    keys: HashMap<Vec<u8>, usize>,
}

impl InFlightBatches {
    pub fn new(max: usize) -> Self {
        InFlightBatches {
            max: max.max(1),
            tasks: FuturesUnordered::new(),
            keys: HashMap::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// The distinct record keys of `records` (a record without a key counts as the empty
    /// key); none with one batch at a time, where keys cannot decide anything.
    pub fn keys_of(&self, records: &[Record]) -> Vec<Vec<u8>> {
        if self.max == 1 {
            return Vec::new();
        }
        let mut keys: Vec<Vec<u8>> = records
            .iter()
            .map(|r| r.key.clone().unwrap_or_default())
            .collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// Whether a batch holding `keys` has to wait for batches in flight: too many are,
    /// or one of them holds one of its keys.
    pub fn must_wait(&self, keys: &[Vec<u8>]) -> bool {
        !self.is_empty()
            && (self.tasks.len() >= self.max || keys.iter().any(|k| self.keys.contains_key(k)))
    }

    /// Track `task`, which writes a batch holding `keys`.
    pub fn push(&mut self, task: InFlight, keys: Vec<Vec<u8>>, revoked_from: usize) {
        for key in &keys {
            *self.keys.entry(key.clone()).or_default() += 1;
        }
        self.tasks
            .push(Box::pin(task.map(move |result: Result<BatchResult, _>| {
                (
                    keys,
                    Finished {
                        result,
                        revoked_from,
                    },
                )
            })));
    }

    /// Wait for the next batch to finish; `None` when none is in flight.
    pub async fn next_finished(&mut self) -> Option<Finished> {
        let (keys, finished) = self.tasks.next().await?;
        self.release(&keys);
        Some(finished)
    }

    /// The batches that already finished, without waiting.
    pub fn take_ready(&mut self) -> Vec<Finished> {
        let mut ready = Vec::new();
        while let Some(Some((keys, finished))) = self.tasks.next().now_or_never() {
            self.release(&keys);
            ready.push(finished);
        }
        ready
    }

    fn release(&mut self, keys: &[Vec<u8>]) {
        for key in keys {
            if let Some(n) = self.keys.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    self.keys.remove(key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processor::batch::BatchOutcome;

    fn record(key: &str, offset: i64) -> Record {
        Record {
            topic: "t".into(),
            partition: 0,
            offset,
            key: Some(key.as_bytes().to_vec()),
            payload: None,
            headers: Vec::new(),
            timestamp_ms: None,
        }
    }

    fn task(gate: tokio::sync::oneshot::Receiver<()>) -> InFlight {
        tokio::spawn(async move {
            let _ = gate.await;
            (Vec::new(), Ok(BatchOutcome::default()))
        })
    }

    #[tokio::test]
    async fn a_batch_waits_for_a_shared_key_or_a_full_set() {
        let mut batches = InFlightBatches::new(2);
        let first = batches.keys_of(&[record("a", 1), record("b", 2), record("a", 3)]);
        assert_eq!(first.len(), 2, "keys are distinct");
        assert!(!batches.must_wait(&first), "nothing in flight");
        let (open_first, gate) = tokio::sync::oneshot::channel();
        batches.push(task(gate), first, 0);
        assert!(batches.must_wait(&batches.keys_of(&[record("c", 4), record("b", 5)])));
        let second = batches.keys_of(&[record("c", 4), record("d", 5)]);
        assert!(
            !batches.must_wait(&second),
            "disjoint and room for one more"
        );
        let (open_second, gate) = tokio::sync::oneshot::channel();
        batches.push(task(gate), second, 0);
        assert!(
            batches.must_wait(&batches.keys_of(&[record("e", 6)])),
            "two in flight is the limit"
        );
        open_second.send(()).unwrap();
        let done = batches.next_finished().await.expect("one finishes");
        assert!(done.succeeded());
        assert!(
            !batches.must_wait(&batches.keys_of(&[record("c", 7)])),
            "c released"
        );
        assert!(
            batches.must_wait(&batches.keys_of(&[record("a", 8)])),
            "a still held"
        );
        open_first.send(()).unwrap();
        tokio::task::yield_now().await;
        let mut rest = batches.take_ready();
        if rest.is_empty() {
            rest.extend(batches.next_finished().await);
        }
        assert_eq!(rest.len(), 1);
        assert!(batches.is_empty());
        assert!(!batches.must_wait(&batches.keys_of(&[record("a", 8)])));
    }
}
