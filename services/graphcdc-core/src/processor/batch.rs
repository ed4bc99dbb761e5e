//! Applying one batch of records to the sink: decode, map, collapse per point (highest
//! version wins), drop what the sink already holds at an equal or newer version, embed
//! the texts of what is left that has no vector ([`crate::embed`]), write it with the
//! version fence, and split the batch when the sink rejects it so that only the
//! offending events go to the DLQ.
//!
//! What may go to the DLQ is decided here: a sink-wide failure (unavailable,
//! misconfigured) never sends an event there; when any point of a split is refused, the
//! collection is checked against its mapping first, and a mismatch stops the stream
//! (retried, circuit open) instead of draining it into the DLQ; several points that all
//! fail inside the sink are the sink's fault, not their events'.

use crate::codec::{Codec, DecodeError};
use crate::embed::Embeddings;
use crate::error::{PoisonError, PoisonKind};
use crate::event::CaptureMode;
use crate::kafka::Record;
use crate::mapping::{Mapper, PointWrite};
use crate::sink::SinkError;
use crate::sink::{CollectionSpec, Fence, VectorSink};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tracing::Instrument;
use uuid::Uuid;

/// What applying a batch did.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// Point writes the sink acknowledged.
    pub applied: u64,
    /// Point writes dropped because an equal or newer version was already there.
    pub skipped_stale: u64,
    /// Records that map to no collection.
    pub unmapped: u64,
    /// Records to send to the DLQ: (index in the batch, why).
    pub poisoned: Vec<(usize, PoisonError)>,
    /// Acknowledged point writes per collection.
    pub applied_by_collection: Vec<(String, u64)>,
    /// Point writes the sink refused (their records went to the DLQ).
    pub sink_rejections: u64,
    /// Time from the start of the successful attempt to the last acknowledgement (ms).
    pub apply_ms: u64,
    /// Freshness of each acknowledged write: its acknowledgement time minus its source
    /// commit time (ms).
    pub freshness_ms: Vec<i64>,
}

/// Applies batches of change-topic records to one sink.
pub struct BatchApplier {
    codec: Arc<Codec>,
    mapper: Mapper,
    sink: Arc<dyn VectorSink>,
    /// Vectors for writes that carry text instead.
    embeddings: Arc<Embeddings>,
    /// What each mapped collection must look like.
    specs: HashMap<String, CollectionSpec>,
}

/// A batch decoded, mapped and collapsed to one write per point, not yet written.
pub struct PreparedBatch {
    /// (partition, offset) of the records it was prepared from, in order.
    positions: Vec<(i32, i64)>,
    by_collection: BTreeMap<String, Vec<Pending>>,
    /// The events' own `traceparent` fields, by record index.
    pub traceparents: Vec<Option<String>>,
    /// What preparing found: poison records, unmapped records, in-batch stale writes.
    outcome: BatchOutcome,
}

impl PreparedBatch {
    /// Whether it was prepared from exactly `records`.
    pub fn is_for(&self, records: &[Record]) -> bool {
        self.positions.len() == records.len()
            && self
                .positions
                .iter()
                .zip(records)
                .all(|(&(partition, offset), r)| r.partition == partition && r.offset == offset)
    }
}

/// A point write, the batch index of the record it came from, the records whose older
/// writes of the same point it replaced, and its fence (repairs may rewrite the same
/// version).
struct Pending {
    write: PointWrite,
    record: usize,
    superseded: Vec<usize>,
    fence: Fence,
}

impl BatchApplier {
    /// An applier decoding with `codec`, mapping with `mapper`, embedding with
    /// `embeddings`, writing to `sink`.
    pub fn new(
        codec: Arc<Codec>,
        mapper: Mapper,
        embeddings: Arc<Embeddings>,
        sink: Arc<dyn VectorSink>,
    ) -> Self {
        let specs = mapper
            .mappings()
            .iter()
            .map(|m| (m.collection.clone(), CollectionSpec::from(m)))
            .collect();
        BatchApplier {
            codec,
            mapper,
            sink,
            embeddings,
            specs,
        }
    }

    /// Apply `records`; the sink has acknowledged every write when this returns `Ok`.
    ///
    /// # Errors
    /// A retriable [`SinkError`] (sink or schema registry unavailable): nothing may be
    /// committed; retrying the same batch is safe (writes are version-fenced).
    pub async fn apply(&self, records: &[Record]) -> Result<BatchOutcome, SinkError> {
        let prepared = self.prepare(records).await?;
        self.write(prepared, false).await
    }

    /// Decode, map and collapse `records` without touching the sink, so that the next
    /// batch can be prepared while the sink still writes the previous one.
    ///
    /// # Errors
    /// [`SinkError::Unavailable`] when the schema registry cannot be reached.
    pub async fn prepare(&self, records: &[Record]) -> Result<PreparedBatch, SinkError> {
        let mut outcome = BatchOutcome::default();
        let mut latest: HashMap<(String, Uuid), Pending> = HashMap::new();
        let mut traceparents = vec![None; records.len()];
        for (index, record) in records.iter().enumerate() {
            let (writes, fence) = match self
                .decode_and_map(record, &mut traceparents[index])
                .await?
            {
                Ok(mapped) => mapped,
                Err(poison) => {
                    outcome.poisoned.push((index, poison));
                    continue;
                }
            };
            if writes.is_empty() {
                outcome.unmapped += 1;
            }
            for write in writes {
                let slot = (write.collection.clone(), write.id);
                match latest.get_mut(&slot) {
                    Some(kept)
                        if kept.write.version > write.version
                            || (kept.write.version == write.version && fence == Fence::Newer) =>
                    {
                        outcome.skipped_stale += 1;
                        kept.superseded.push(index);
                    }
                    Some(kept) => {
                        outcome.skipped_stale += 1;
                        let mut superseded = std::mem::take(&mut kept.superseded);
                        superseded.push(kept.record);
                        *kept = Pending {
                            write,
                            record: index,
                            superseded,
                            fence,
                        };
                    }
                    None => {
                        latest.insert(
                            slot,
                            Pending {
                                write,
                                record: index,
                                superseded: Vec::new(),
                                fence,
                            },
                        );
                    }
                }
            }
        }
        let mut by_collection: BTreeMap<String, Vec<Pending>> = BTreeMap::new();
        for ((collection, _), pending) in latest {
            by_collection.entry(collection).or_default().push(pending);
        }
        Ok(PreparedBatch {
            positions: records.iter().map(|r| (r.partition, r.offset)).collect(),
            by_collection,
            traceparents,
            outcome,
        })
    }

    /// Write a prepared batch: drop what the sink already holds at an equal or newer
    /// version, write the rest with the version fence, and split on rejection. With
    /// `isolate`, internal sink errors split the batch too, and the points that keep
    /// failing go to the DLQ.
    ///
    /// # Errors
    /// A retriable [`SinkError`]; prepare the batch again before retrying.
    pub async fn write(
        &self,
        prepared: PreparedBatch,
        isolate: bool,
    ) -> Result<BatchOutcome, SinkError> {
        let PreparedBatch {
            by_collection,
            mut outcome,
            ..
        } = prepared;
        for (collection, pending) in by_collection {
            let (ordinary, repairs): (Vec<_>, Vec<_>) =
                pending.into_iter().partition(|p| p.fence == Fence::Newer);
            for group in [ordinary, repairs] {
                self.write_collection(&collection, group, isolate, &mut outcome)
                    .await?;
            }
        }
        // One DLQ record per source record, even when several of its writes failed.
        outcome.poisoned.sort_by_key(|(index, _)| *index);
        outcome.poisoned.dedup_by_key(|(index, _)| *index);
        Ok(outcome)
    }

    /// `Ok(Ok((writes, fence)))`, `Ok(Err(poison))`, or `Err` when the registry is
    /// unavailable. Repair events (source mode `repair`) may rewrite the same version.
    /// Keeps the event's `traceparent` field in `traceparent`.
    async fn decode_and_map(
        &self,
        record: &Record,
        traceparent: &mut Option<String>,
    ) -> Result<Result<(Vec<PointWrite>, Fence), PoisonError>, SinkError> {
        let Some(payload) = &record.payload else {
            return Ok(Err(PoisonError::new(
                PoisonKind::Undecodable,
                "null value (tombstone) on the change topic",
            )));
        };
        let event = match self.codec.decode_change(payload).await {
            Ok(event) => event,
            Err(DecodeError::Poison(poison)) => return Ok(Err(poison)),
            Err(DecodeError::RegistryUnavailable(e)) => return Err(SinkError::Unavailable(e)),
        };
        traceparent.clone_from(&event.traceparent);
        let fence = match event.source.mode {
            CaptureMode::Repair => Fence::NewerOrEqual,
            _ => Fence::Newer,
        };
        Ok(self.mapper.map(&event).map(|writes| (writes, fence)))
    }

    /// After a split: whether the points the sink refused point at the sink itself rather
    /// than at their events. The collection no longer matching its mapping is
    /// [`SinkError::Misconfigured`]; several points that all failed with an internal error
    /// (none written) are one sink-wide internal error (a full disk, a broken WAL), not
    /// poison. A single point that keeps failing alone is taken as its event's fault.
    async fn sink_wide_refusal(
        &self,
        collection: &str,
        refused: &[(usize, Vec<usize>, SinkError)],
        points: usize,
    ) -> Result<(), SinkError> {
        if refused.is_empty() {
            return Ok(());
        }
        if let Some(spec) = self.specs.get(collection) {
            match crate::sink::check_collection(self.sink.as_ref(), spec).await {
                Ok(()) => {}
                Err(e) if e.is_sink_wide() => return Err(e),
                Err(e) => {
                    tracing::warn!(%collection, error = %e, "cannot check the collection's schema")
                }
            }
        }
        let all_internal = refused
            .iter()
            .all(|(_, _, e)| matches!(e, SinkError::Internal(_)));
        if points > 1 && refused.len() == points && all_internal {
            return Err(SinkError::Internal(format!(
                "all {points} points of a split failed inside the sink: {}",
                refused[0].2
            )));
        }
        Ok(())
    }

    /// Write one group of pending writes (all with the same fence) to `collection`.
    async fn write_collection(
        &self,
        collection: &str,
        mut pending: Vec<Pending>,
        isolate: bool,
        outcome: &mut BatchOutcome,
    ) -> Result<(), SinkError> {
        let Some(fence) = pending.first().map(|p| p.fence) else {
            return Ok(());
        };
        let ids: Vec<Uuid> = pending.iter().map(|p| p.write.id).collect();
        let stored = match self
            .sink
            .versions(collection, &ids)
            .instrument(tracing::info_span!("sink.versions", otel.kind = "client", %collection, points = ids.len()))
            .await
        {
            Ok(stored) => stored,
            Err(e) if e.is_retriable() => return Err(e),
            // Only an optimisation: the write is fenced by the sink itself.
            Err(e) => {
                tracing::warn!(%collection, error = %e, "version pre-read refused; writing without it");
                HashMap::new()
            }
        };
        let before = pending.len();
        // A tombstone already stored at its version is written again all the same: the
        // fence refuses the point, but its vector is stripped if an earlier attempt
        // stopped between the upsert and the strip.
        let mut rewritten = 0;
        pending.retain(|p| {
            stored.get(&p.write.id).is_none_or(|v| match fence {
                Fence::Newer if *v == p.write.version && p.write.is_tombstone() => {
                    rewritten += 1;
                    true
                }
                Fence::Newer => *v < p.write.version,
                Fence::NewerOrEqual => *v <= p.write.version,
            })
        });
        outcome.skipped_stale += (before - pending.len() + rewritten) as u64;
        if pending.is_empty() {
            return Ok(());
        }
        let (mut writes, mut origins): (Vec<PointWrite>, Vec<(usize, Vec<usize>)>) = pending
            .into_iter()
            .map(|p| (p.write, (p.record, p.superseded)))
            .unzip();
        let refused = self
            .embeddings
            .complete(self.sink.as_ref(), collection, &mut writes)
            .instrument(tracing::info_span!("embed", %collection))
            .await?;
        if !refused.is_empty() {
            // The model refused these texts: their records (and the older writes of the
            // same point folded into them) go to the DLQ, the rest is written.
            let mut refused: HashMap<usize, PoisonError> = refused.into_iter().collect();
            let mut kept = Vec::with_capacity(writes.len());
            for (i, (write, (record, superseded))) in writes
                .into_iter()
                .zip(std::mem::take(&mut origins))
                .enumerate()
            {
                match refused.remove(&i) {
                    Some(poison) => {
                        for record in std::iter::once(record).chain(superseded) {
                            outcome.poisoned.push((record, poison.clone()));
                        }
                    }
                    None => kept.push((write, (record, superseded))),
                }
            }
            (writes, origins) = kept.into_iter().unzip();
            if writes.is_empty() {
                return Ok(());
            }
        }
        let written = self
            .sink
            .write(collection, &writes, fence)
            .instrument(tracing::info_span!("sink.write", otel.kind = "client", %collection, points = writes.len()))
            .await;
        let splittable = |e: &SinkError| !e.is_retriable() || (isolate && !e.is_sink_wide());
        match written {
            Ok(()) => {
                let applied = writes.len() - rewritten;
                outcome.applied += applied as u64;
                outcome
                    .applied_by_collection
                    .push((collection.to_owned(), applied as u64));
                let now = crate::unix_ms();
                outcome
                    .freshness_ms
                    .extend(writes.iter().map(|w| now - w.commit_time_ms));
                Ok(())
            }
            Err(e) if !splittable(&e) => Err(e),
            Err(batch_error) => {
                tracing::warn!(%collection, error = %batch_error, "sink refused a batch; writing its points one by one");
                let mut refused = Vec::new();
                for (write, (record, superseded)) in writes.iter().zip(origins) {
                    match self
                        .sink
                        .write(collection, std::slice::from_ref(write), fence)
                        .await
                    {
                        Ok(()) => {
                            outcome.applied += 1;
                            outcome
                                .applied_by_collection
                                .push((collection.to_owned(), 1));
                            outcome
                                .freshness_ms
                                .push(crate::unix_ms() - write.commit_time_ms);
                        }
                        Err(e) if !splittable(&e) => return Err(e),
                        Err(e) => refused.push((record, superseded, e)),
                    }
                }
                self.sink_wide_refusal(collection, &refused, writes.len())
                    .await?;
                let refused = refused
                    .into_iter()
                    .map(|(record, superseded, e)| (record, superseded, e.to_string()));
                for (record, superseded, message) in refused {
                    outcome.sink_rejections += 1;
                    // Older writes of this point were folded into the rejected one:
                    // they go to the DLQ with it, so none is committed unapplied.
                    for record in std::iter::once(record).chain(superseded) {
                        let poison = PoisonError::new(PoisonKind::SinkRejected, message.clone());
                        outcome.poisoned.push((record, poison));
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(all(test, feature = "embedded"))]
mod tests;
