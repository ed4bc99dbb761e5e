// The oldest entries' keys, then every pending entry of those keys in version order.
// Entries the relay could not turn into events are marked `failed` and left for an operator.
MATCH (o:CdcOutbox) WHERE o.failed IS NULL
WITH o ORDER BY o.commit_time_ms ASC LIMIT $limit
WITH collect(DISTINCT o.key) AS keys
MATCH (p:CdcOutbox) WHERE p.key IN keys AND p.failed IS NULL
RETURN p.event_id AS event_id, p.kind AS kind, p.key AS key, p.labels AS labels,
       p.op AS op, p.version AS version, p.commit_time_ms AS commit_time_ms,
       p.properties AS properties, p.rel_type AS rel_type, p.start_key AS start_key,
       p.end_key AS end_key, p.db AS db, p.traceparent AS traceparent
ORDER BY p.key, p.version
