//! How state records fold into the expected state: the highest version of a key wins in
//! whatever order its records are read, a tombstone leaves a "deleted at vN" marker that
//! an older upsert read later cannot undo, and a key that left a collection leaves it
//! only when that record is not older than the point held there.

use super::store::{DeletedAt, ExpectedPoint, Held, Slot, StateStore};
use crate::event::{CaptureMode, Source};
use crate::kafka::{Record, STATE_VERSION_HEADER};
use std::collections::HashSet;
use uuid::Uuid;

/// The version a state tombstone carries in its [`STATE_VERSION_HEADER`], if any.
pub fn tombstone_version(record: &Record) -> Option<i64> {
    record
        .headers
        .iter()
        .find(|(name, _)| name == STATE_VERSION_HEADER)
        .and_then(|(_, value)| std::str::from_utf8(value.as_deref()?).ok()?.parse().ok())
}

/// Fold an upsert into `store`: it wins unless a newer version is held or the key was
/// deleted at this version or later.
///
/// # Errors
/// When the state file cannot be read or written.
pub fn fold_upsert(
    store: &mut StateStore,
    id: Uuid,
    point: ExpectedPoint,
) -> crate::error::Result<()> {
    match store.held(&id)? {
        Some(Held::Deleted { version }) if version >= point.version => Ok(()),
        Some(Held::Live { version, .. }) if version > point.version => Ok(()),
        _ => store.set(id, Slot::Live(point)),
    }
}

/// Fold a delete at `version` (`None`: unknown, taken as the version it removes), read
/// at `timestamp_ms`, into `store`: it removes the point unless a newer version is held,
/// and marks the key deleted at that version.
///
/// # Errors
/// When the state file cannot be read or written.
pub fn fold_delete(
    store: &mut StateStore,
    id: Uuid,
    version: Option<i64>,
    timestamp_ms: i64,
) -> crate::error::Result<()> {
    let at = match (store.held(&id)?, version) {
        (Some(Held::Live { version: held, .. }), Some(v)) if v < held => return Ok(()),
        (Some(Held::Live { version: held, .. }), v) => v.unwrap_or(held).max(held),
        (Some(Held::Deleted { version: held }), Some(v)) if v > held => v,
        (Some(Held::Deleted { .. }), _) | (None, None) => return Ok(()),
        (None, Some(v)) => v,
    };
    let marker = DeletedAt {
        version: at,
        timestamp_ms,
    };
    store.set(id, Slot::Deleted(marker))
}

/// Fold a decoded state record of one key at `version` into `store`: `ids` is the key's
/// point id in every collection, `writes` the points its labels map to. A key's labels
/// may change, so it is forgotten in the collections it no longer maps to unless what is
/// held there is newer. A record is the whole entity: one older than any version held
/// for the key in any collection is ignored (else, read after a newer record that left a
/// label, it would bring the point back in that label's collection). Returns whether it
/// was applied.
///
/// # Errors
/// When the state file cannot be read or written.
pub fn fold_state(
    store: &mut StateStore,
    ids: &[Uuid],
    writes: Vec<(Uuid, ExpectedPoint)>,
    version: i64,
    at_ms: i64,
) -> crate::error::Result<bool> {
    let mut held = Vec::with_capacity(ids.len());
    for id in ids {
        held.push(store.held(id)?);
    }
    if held
        .iter()
        .flatten()
        .map(|h| h.version())
        .max()
        .is_some_and(|newest| version < newest)
    {
        return Ok(false);
    }
    let mapped: HashSet<Uuid> = writes.iter().map(|(id, _)| *id).collect();
    for (id, held) in ids.iter().zip(held) {
        if !mapped.contains(id) && matches!(held, Some(Held::Live { .. })) {
            fold_delete(store, *id, Some(version), at_ms)?;
        }
    }
    for (id, point) in writes {
        fold_upsert(store, id, point)?;
    }
    Ok(true)
}

/// Source of the events the reconciler writes.
pub fn repair_source() -> Source {
    Source {
        db: "graphcdc-reconciler".into(),
        mode: CaptureMode::Repair,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(version: i64) -> ExpectedPoint {
        ExpectedPoint {
            collection: 0,
            key: "k".into(),
            version,
            hash: 0,
            partition: 0,
            offset: version,
            timestamp_ms: 0,
        }
    }

    enum Rec {
        Up(i64),
        Del(Option<i64>),
    }

    fn live_version(store: &StateStore, id: &Uuid) -> Option<i64> {
        match store.get(id).unwrap() {
            Some(Slot::Live(p)) => Some(p.version),
            _ => None,
        }
    }

    /// The version expected after reading `records` in this order (`None`: deleted).
    fn fold(records: &[Rec]) -> Option<i64> {
        let mut store = StateStore::memory(1);
        let id = Uuid::nil();
        for r in records {
            match r {
                Rec::Up(v) => fold_upsert(&mut store, id, point(*v)).unwrap(),
                Rec::Del(v) => fold_delete(&mut store, id, *v, 0).unwrap(),
            }
        }
        live_version(&store, &id)
    }

    /// A key mapped to collection 0 only at v2 (it lost the label of collection 1), its
    /// v1 record mapped to both: whatever the order, collection 1 expects nothing.
    #[test]
    fn a_lost_label_stays_lost_when_the_older_record_is_read_last() {
        let ids = [Uuid::from_u128(10), Uuid::from_u128(11)];
        let at = |c: u16, version: i64| ExpectedPoint {
            collection: c,
            ..point(version)
        };
        let v1 = || vec![(ids[0], at(0, 1)), (ids[1], at(1, 1))];
        let v2 = || vec![(ids[0], at(0, 2))];
        for (name, order) in [("in order", [1, 2]), ("newer first", [2, 1])] {
            let mut store = StateStore::memory(2);
            for version in order {
                let writes = if version == 1 { v1() } else { v2() };
                fold_state(&mut store, &ids, writes, version, 0).unwrap();
            }
            assert_eq!(live_version(&store, &ids[0]), Some(2), "{name}");
            assert_eq!(
                live_version(&store, &ids[1]),
                None,
                "{name}: the lost label's point"
            );
            assert_eq!(store.len(), 1, "{name}");
        }
    }

    #[test]
    fn the_highest_version_wins_in_any_order() {
        use Rec::*;
        assert_eq!(
            fold(&[Up(5), Up(3)]),
            Some(5),
            "an older upsert after a newer one"
        );
        assert_eq!(fold(&[Up(3), Up(5)]), Some(5));
        assert_eq!(fold(&[Up(5), Up(5)]), Some(5));
        assert_eq!(fold(&[Up(5), Del(Some(6)), Up(4)]), None, "no resurrection");
        assert_eq!(
            fold(&[Up(5), Del(None), Up(4)]),
            None,
            "a tombstone without a version deletes what it removes"
        );
        assert_eq!(fold(&[Up(5), Del(None), Up(5)]), None);
        assert_eq!(fold(&[Up(5), Del(Some(6)), Up(7)]), Some(7), "re-created");
        assert_eq!(
            fold(&[Up(7), Del(Some(6))]),
            Some(7),
            "an older delete is ignored"
        );
        assert_eq!(fold(&[Del(Some(6)), Up(4)]), None, "a delete read first");
        assert_eq!(
            fold(&[Del(None), Up(4)]),
            Some(4),
            "nothing known to hold against"
        );
    }
}
