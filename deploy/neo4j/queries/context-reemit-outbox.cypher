// The outbox entries of re-emitted nodes (same transaction as their version bump). `changed`
// is empty: no property of the node itself changed, so the entry never re-emits the nodes
// whose context lists this one (no cascade).
WITH timestamp() AS now
UNWIND $rows AS r
CREATE (o:CdcOutbox {
  event_id: r.event_id, kind: 'node', key: r.key, labels: r.labels, op: 'upsert',
  version: r.version, commit_time_ms: now, properties: r.properties, db: r.db, created_at: now,
  changed: []
})
RETURN count(o) AS created
