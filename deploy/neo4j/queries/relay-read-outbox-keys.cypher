// The keys of the oldest pending entries. `created_at` is indexed (constraints.cypher): the
// range predicate is an index seek that yields entries oldest first and stops at the
// LIMIT, instead of scanning and sorting the whole outbox. No ORDER BY: ArcadeDB sorts the
// whole range when one is present (docs/benchmarks.md). The seek's order only decides
// which keys go first; the order within a key comes from relay-read-outbox.cypher.
// Entries the relay could not turn into events are marked `failed` and left for an operator.
MATCH (o:CdcOutbox) WHERE o.created_at >= 0 AND o.failed IS NULL
WITH o LIMIT $limit
RETURN collect(DISTINCT o.key) AS keys
