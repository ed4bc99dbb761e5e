// Delete published entries, fenced: only while the lease still carries this relay's epoch.
// The relay runs it in the transaction that first renewed the lease under that epoch
// (relay-renew-lease.cypher, which holds the lease's write lock to commit). The lease
// check is an EXISTS filter so that the entries are found by the event_id index seek
// (with the lease matched first, ArcadeDB's planner scans the whole outbox).
MATCH (o:CdcOutbox)
WHERE o.event_id IN $ids
  AND EXISTS { MATCH (l:CdcRelayLease {name: 'relay'}) WHERE l.holder = $me AND l.epoch = $epoch }
DELETE o
RETURN count(o) AS deleted
