//! One shard: the lock that keeps its writes and flushes apart, its flush, its updates,
//! and what its errors mean to the processor.

use super::errors::classify;
use super::request::{cursor, path};
use crate::sink::error::SinkError;
use crate::sink::{ScanPage, SCAN_FIELDS};
use qdrant_edge::{
    EdgeShard, Filter, PointId, ScrollRequest, UpdateOperation, WithPayloadInterface, WithVector,
};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// One embedded shard, the lock that keeps its writes and flushes apart, and whether it
/// holds updates not flushed yet.
pub(super) struct Shard {
    pub(super) shard: EdgeShard,
    /// The collection directory.
    pub(super) dir: PathBuf,
    pub(super) write_lock: Mutex<()>,
    pub(super) dirty: AtomicBool,
    /// Flushes still to fail (tests inject I/O failures with it).
    #[cfg(test)]
    pub(super) failing_flushes: std::sync::atomic::AtomicUsize,
}

impl Shard {
    /// The write lock; a panic inside qdrant-edge's flush must not poison every later
    /// write.
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.write_lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Flush WAL and segments (caller holds the write lock); the shard is clean after.
    /// qdrant-edge panics on an I/O error: that is caught and reported as unavailable,
    /// and the shard stays dirty.
    pub(super) fn flush(&self) -> Result<(), SinkError> {
        let flushed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            #[cfg(test)]
            if self
                .failing_flushes
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                panic!("injected flush failure");
            }
            self.shard.flush();
        }));
        match flushed {
            Ok(()) => {
                self.dirty.store(false, Ordering::SeqCst);
                Ok(())
            }
            Err(panic) => {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(SinkError::Unavailable(format!(
                    "embedded flush failed: {why}"
                )))
            }
        }
    }

    /// One page of the points matching `filter` (all when `None`) from `offset`, with the
    /// reserved fields a scan reads, and where the next page starts.
    pub(super) fn scroll_page(
        &self,
        filter: Option<Filter>,
        offset: Option<PointId>,
        limit: usize,
    ) -> Result<ScanPage, SinkError> {
        let (records, next) = self
            .shard
            .scroll(ScrollRequest {
                offset,
                limit: Some(limit),
                filter,
                with_payload: Some(WithPayloadInterface::Fields(
                    SCAN_FIELDS.iter().map(|f| path(f)).collect(),
                )),
                with_vector: WithVector::Bool(false),
                order_by: None,
            })
            .map_err(classify)?;
        Ok(ScanPage::from_scanned(
            records
                .iter()
                .map(|r| (cursor(r.id), r.payload.as_ref().map(|p| &p.0))),
            next.map(cursor),
        ))
    }

    /// Flush when an earlier update is not durable yet.
    pub(super) fn flush_if_dirty(&self) -> Result<(), SinkError> {
        if !self.dirty.load(Ordering::SeqCst) {
            return Ok(());
        }
        let _guard = self.lock();
        if self.dirty.load(Ordering::SeqCst) {
            self.flush()?;
        }
        Ok(())
    }

    /// Apply `ops` in order and flush, so the writes survive a crash once this returns.
    pub(super) fn update_durably(&self, ops: Vec<UpdateOperation>) -> Result<(), SinkError> {
        self.update_with(true, |_| Ok(ops))
    }

    /// Apply the operations `plan` returns, planned under the write lock (so what `plan`
    /// reads cannot change before they are applied), and flush when `durably`.
    pub(super) fn update_with(
        &self,
        durably: bool,
        plan: impl FnOnce(&EdgeShard) -> Result<Vec<UpdateOperation>, SinkError>,
    ) -> Result<(), SinkError> {
        let _guard = self.lock();
        for op in plan(&self.shard)? {
            // Marked before the update: a failure after a partial apply leaves it dirty.
            self.dirty.store(true, Ordering::SeqCst);
            self.shard.update(op).map_err(classify)?;
        }
        if durably {
            self.flush()
        } else {
            Ok(())
        }
    }
}

impl Drop for Shard {
    /// A clean close: flushed, so the next load need not repair anything.
    fn drop(&mut self) {
        let _guard = self.lock();
        if !self.dirty.load(Ordering::SeqCst) || self.flush().is_ok() {
            super::recovery::closed_cleanly(&self.dir);
        }
    }
}
