// The outbox entries of re-emitted nodes (same transaction as their version bump).
WITH timestamp() AS now
UNWIND $rows AS r
CREATE (o:CdcOutbox {
  event_id: r.event_id, kind: 'node', key: r.key, labels: r.labels, op: 'upsert',
  version: r.version, commit_time_ms: now, properties: r.properties, db: r.db, created_at: now
})
RETURN count(o) AS created
