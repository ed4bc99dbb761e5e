//! `graphcdc audit --bump-epoch`: the way out of a restored Neo4j, automated.
//!
//! After a restore the `CdcVersion` counters went back, and new writes get versions that
//! graph.state and the sink already hold (the fence drops them). This moves every counter
//! into a new *epoch*: `epoch` is the first multiple of 2^32 above every version
//! graph.state holds, and each counter below it gets `epoch` added (in key order, a page
//! per transaction; a counter already at or above it is left alone, so an interrupted run
//! is simply run again). Then every key graph.state holds (live or deleted) gets a counter
//! of at least `epoch`, created when the restored graph has none, so a later create of a
//! key the backup did not know goes above its old versions too. Versions stay below the
//! 2^53 limit for two million restores.
//!
//! Entities whose content the restore changed are then `stale` to the audit (Neo4j's
//! version is above graph.state's, the content differs) and `--repair` publishes them;
//! entities the restore brought back are `uncaptured`, those it lost are `lost`.

use super::graph::Context;
use super::state::LogState;
use super::targets::Targets;
use crate::error::Context as _;
use crate::event::MAX_VERSION;
use neo4rs::{query, BoltType};
use serde::Serialize;
use std::collections::HashMap;

const EPOCH: &str = include_str!("../../../../deploy/neo4j/queries/audit-epoch.cypher");
const RAISE: &str = include_str!("../../../../deploy/neo4j/queries/audit-raise.cypher");

/// One epoch: 2^32 versions.
pub const EPOCH_SIZE: i64 = 1 << 32;

/// What an epoch bump did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EpochOutcome {
    /// The highest version graph.state holds.
    pub state_max: i64,
    /// The new epoch: every counter is at least this now.
    pub epoch: i64,
    /// Counters paged.
    pub counters: u64,
    /// Of those, moved into the epoch (the others were already in it).
    pub moved: u64,
    /// Keys of graph.state whose counter was made at least the epoch (created when
    /// missing).
    pub state_keys: u64,
}

/// The first multiple of 2^32 above `state_max`.
pub fn next_epoch(state_max: i64) -> i64 {
    ((state_max.max(0) >> 32) + 1) << 32
}

/// Move every counter into the epoch above `state` (read to its end by the caller).
///
/// # Errors
/// When the epoch would pass the 2^53 version limit, or Neo4j fails (run it again).
pub async fn bump(
    ctx: &Context<'_>,
    state: &LogState,
    page_size: usize,
) -> crate::error::Result<EpochOutcome> {
    let state_max = state.max_version;
    let epoch = next_epoch(state_max);
    crate::error::ensure!(
        epoch < MAX_VERSION - EPOCH_SIZE,
        "the next epoch ({epoch}) leaves no room below the 2^53 version limit"
    );
    let mut outcome = EpochOutcome {
        state_max,
        epoch,
        ..EpochOutcome::default()
    };
    let mut after = String::new();
    loop {
        let q = query(EPOCH)
            .param("after", after.as_str())
            .param("limit", page_size.max(1) as i64)
            .param("epoch", epoch);
        let mut rows = ctx
            .graph
            .execute(q)
            .await
            .context("moving version counters into the new epoch")?;
        let Some(row) = rows.next().await? else {
            break;
        };
        let counters: i64 = row.get("counters").unwrap_or(0);
        let last: Option<String> = row.get("last").unwrap_or(None);
        let (Some(last), true) = (last, counters > 0) else {
            break;
        };
        outcome.counters += counters as u64;
        outcome.moved += row.get::<i64>("moved").unwrap_or(0) as u64;
        after = last;
    }
    // graph.state's keys a page at a time (they may be on disk).
    let mut after: Option<String> = None;
    loop {
        let page = state.entries.page(after.as_deref(), 500)?;
        let rows: Vec<HashMap<String, BoltType>> = page
            .iter()
            .filter_map(|(key, entry)| {
                let kind = ctx.targets.list()[Targets::primary(entry.targets)?].kind();
                Some(HashMap::from([
                    ("key".to_owned(), BoltType::from(format!("{kind}:{key}"))),
                    ("floor".to_owned(), epoch.into()),
                    ("step".to_owned(), 0i64.into()),
                ]))
            })
            .collect();
        if !rows.is_empty() {
            outcome.state_keys += rows.len() as u64;
            ctx.graph
                .run(query(RAISE).param("rows", rows))
                .await
                .context("creating the counters of graph.state's keys in the new epoch")?;
        }
        match page.into_iter().last() {
            Some((last, _)) => after = Some(last),
            None => break,
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_epoch_is_the_next_multiple_of_2_pow_32() {
        assert_eq!(next_epoch(0), EPOCH_SIZE);
        assert_eq!(next_epoch(6), EPOCH_SIZE);
        assert_eq!(next_epoch(EPOCH_SIZE - 1), EPOCH_SIZE);
        assert_eq!(next_epoch(EPOCH_SIZE), 2 * EPOCH_SIZE);
        assert_eq!(next_epoch(EPOCH_SIZE + 17), 2 * EPOCH_SIZE);
    }
}
