// Outbox entries written by graphcdc itself (the backfill's pages, the audit's repair, the
// relay's context re-emit), in the transaction that bumped each entity's counter: the
// relay then publishes them like the trigger's, fenced and in version order per key. Same shape as the trigger's entries
// (deploy/neo4j/README.md), plus `source` (backfill, repair; outbox for a re-emit) so
// consumers can tell them apart. `changed` is empty: these entries do not re-emit the
// nodes whose context lists theirs (no cascade).
WITH timestamp() AS now
UNWIND $rows AS r
CREATE (o:CdcOutbox {
  event_id: r.event_id, kind: r.kind, key: r.key, labels: r.labels, op: r.op,
  version: r.version, commit_time_ms: now, created_at: now, properties: r.properties,
  rel_type: r.rel_type, start_key: r.start_key, end_key: r.end_key, db: r.db,
  source: r.source, changed: []
})
RETURN count(o) AS created
