// Every pending entry of the keys read by relay-read-outbox-keys.cypher, in version order
// per key (an index seek on (key, version)). A separate statement: in one statement with
// the key query, ArcadeDB's planner uses neither index.
MATCH (p:CdcOutbox) WHERE p.key IN $keys AND p.failed IS NULL
RETURN p.event_id AS event_id, p.kind AS kind, p.key AS key, p.labels AS labels,
       p.removed_labels AS removed_labels, p.changed AS changed, p.op AS op, p.version AS version, p.commit_time_ms AS commit_time_ms,
       p.properties AS properties, p.rel_type AS rel_type, p.start_key AS start_key,
       p.end_key AS end_key, p.db AS db, p.traceparent AS traceparent, p.source AS source
ORDER BY p.key, p.version
